//! Opening a backend: the embedded one (a local directory and SQLite) or AWS (S3 and DynamoDB),
//! from the global flags.

use std::path::Path;
use std::sync::Arc;

#[cfg(not(feature = "aws"))]
use anyhow::anyhow;
use anyhow::Context;
use compactor::adapters::local_dir::LocalDir;
use compactor::adapters::sqlite::SqliteManifest;
use compactor::clock::SystemClock;
use compactor::config::Config;
use compactor::engine::Compactor;

use crate::args::{Backend, GlobalArgs};
use crate::{CliError, CliResult};

/// Opens the embedded backend under `data_dir` for `config`, creating what is missing.
pub async fn open_embedded(data_dir: &Path, config: Config) -> CliResult<Compactor> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| {
            format!("cannot create the data directory {}: check the path and its permissions", data_dir.display())
        })
        .map_err(CliError::Failure)?;
    let store = LocalDir::open(data_dir.join("buckets"))
        .with_context(|| format!("cannot open the buckets under {}", data_dir.display()))
        .map_err(CliError::Failure)?;
    let manifest = SqliteManifest::open(data_dir.join("manifest.sqlite"))
        .with_context(|| format!("cannot open the manifest in {}", data_dir.display()))
        .map_err(CliError::Failure)?;
    Ok(Compactor::new(config, Arc::new(store), Arc::new(manifest), Arc::new(SystemClock)))
}

pub async fn engine(global: &GlobalArgs) -> CliResult<Compactor> {
    let config = global.config.raw().validate()?;
    match global.backend {
        Backend::Embedded => {
            if config.record_ttl.is_some() {
                tracing::warn!(
                    "--record-ttl (COMPACTOR_RECORD_TTL) is ignored by the embedded backend: SQLite keeps every record"
                );
            }
            open_embedded(&global.data_dir, config).await
        }
        Backend::Aws => open_aws(global, config).await,
    }
}

/// The engine for the commands that only read the backend (`audit`, `verify`, `restore`,
/// `plan`): a mistyped `--data-dir` must say that nothing is there, not create the directory
/// and report an empty backend. (An existing directory without a manifest yet is an empty
/// backend: those commands say so.)
pub async fn existing_engine(global: &GlobalArgs) -> CliResult<Compactor> {
    if global.backend == Backend::Embedded && !global.data_dir.is_dir() {
        return Err(CliError::BadInput(anyhow::anyhow!(
            "no embedded backend at {}: the directory does not exist; check --data-dir (COMPACTOR_DATA_DIR), or make \
             one with `init` or `ingest`",
            global.data_dir.display()
        )));
    }
    engine(global).await
}

#[cfg(feature = "aws")]
pub fn aws_settings(global: &GlobalArgs) -> CliResult<compactor::aws::AwsSettings> {
    let mut settings = compactor::aws::AwsSettings::from_lookup(|name| match name {
        "COMPACTOR_TABLE" => global.table.clone(),
        "COMPACTOR_S3_PATH_STYLE" => Some(global.path_style.to_string()),
        other => std::env::var(other).ok(),
    })?;
    settings.s3_endpoint = global.s3_endpoint.clone();
    settings.dynamodb_endpoint = global.dynamodb_endpoint.clone();
    Ok(settings)
}

#[cfg(feature = "aws")]
pub async fn open_aws(global: &GlobalArgs, config: Config) -> CliResult<Compactor> {
    let settings = aws_settings(global)?;
    Ok(compactor::aws::build_aws_compactor(config, &settings).await)
}

#[cfg(not(feature = "aws"))]
pub async fn open_aws(_global: &GlobalArgs, _config: Config) -> CliResult<Compactor> {
    Err(CliError::BadInput(anyhow!(
        "this build of s3-compactor has no AWS backend: build it with `cargo install --path cli --features aws`"
    )))
}
