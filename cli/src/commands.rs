//! One function per subcommand: parse what the flags say, call the engine, print the result.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use compactor::domain::partition::PartitionKey;
use compactor::domain::records::PartitionState;
use compactor::engine::audit::AuditSummary;
use compactor::engine::seal::{OutputProgress, SealOptions};
use compactor::engine::{Compactor, IngestReport};
use compactor::event::decode_json;
use indicatif::ProgressBar;

use crate::args::{
    AuditArgs, Backend, Cli, Command, GlobalArgs, IngestArgs, PlanArgs, RestoreArgs, SealArgs, VerifyArgs,
};
use crate::backend::{engine, existing_engine, open_embedded};
use crate::output::{
    check_verified, human_bytes, nothing_to_seal, print_audit_summary, print_ingest_report, print_json,
    print_partitions, print_plan, print_seal_report, print_verify_report, short_sha256, thousands, Table,
};
use crate::{CliError, CliResult};

pub async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Init => init(&cli.global).await,
        Command::Demo(args) => crate::demo::run(&cli.global, args).await,
        Command::Ingest(args) => ingest(&cli.global, args).await,
        Command::Seal(args) => seal(&cli.global, args).await,
        Command::Audit(args) => audit(&cli.global, args).await,
        Command::Verify(args) => verify(&cli.global, args).await,
        Command::Restore(args) => restore(&cli.global, args).await,
        Command::Plan(args) => plan(&cli.global, args).await,
    }
}

async fn init(global: &GlobalArgs) -> CliResult {
    match global.backend {
        Backend::Embedded => {
            let config = global.config.raw().validate()?;
            let compactor = open_embedded(&global.data_dir, config).await?;
            let buckets = global.data_dir.join("buckets");
            for bucket in [&compactor.config().source_bucket, &compactor.config().dest_bucket] {
                std::fs::create_dir_all(buckets.join(bucket))
                    .with_context(|| format!("cannot create bucket directory {bucket}"))
                    .map_err(CliError::Failure)?;
            }
            println!("embedded backend ready in {}", global.data_dir.display());
            Ok(())
        }
        Backend::Aws => init_aws(global).await,
    }
}

#[cfg(feature = "aws")]
async fn init_aws(global: &GlobalArgs) -> CliResult {
    let settings = crate::backend::aws_settings(global)?;
    let layout = compactor::domain::layout::Layout::parse(global.config.layout.as_deref().unwrap_or("%Y/%m/%d"), None)
        .map_err(|error| CliError::BadInput(error.into()))?;
    let client = compactor::adapters::dynamodb::client_for(settings.dynamodb_endpoint.as_deref()).await;
    let manifest = compactor::adapters::dynamodb::DynamoDbManifest::new(client, settings.table.clone(), layout);
    manifest.create_table().await.map_err(|error| CliError::Failure(error.into()))?;
    println!("DynamoDB table {} is ready", settings.table);
    Ok(())
}

#[cfg(not(feature = "aws"))]
async fn init_aws(global: &GlobalArgs) -> CliResult {
    crate::backend::open_aws(global, global.config.raw().validate()?).await.map(|_| ())
}

fn partition_keys(compactor: &Compactor, paths: &[String]) -> Option<Vec<PartitionKey>> {
    if paths.is_empty() {
        return None;
    }
    let bucket = &compactor.config().source_bucket;
    Some(
        paths
            .iter()
            .map(|path| {
                let path = path.trim_start_matches('/');
                let path = if path.ends_with('/') { path.to_string() } else { format!("{path}/") };
                PartitionKey::new(bucket.clone(), path)
            })
            .collect(),
    )
}

async fn ingest(global: &GlobalArgs, args: IngestArgs) -> CliResult {
    let compactor = engine(global).await?;
    let report = match &args.scan {
        Some(prefix) => {
            let spinner = ProgressBar::new_spinner();
            spinner.set_message("scanning");
            let report = compactor
                .scan(prefix, |so_far| spinner.set_message(format!("scanned {} objects", thousands(so_far.events))))
                .await?;
            spinner.finish_and_clear();
            report
        }
        None => {
            let mut report = IngestReport::default();
            let sources: Vec<std::path::PathBuf> =
                if args.files.is_empty() { vec![std::path::PathBuf::from("-")] } else { args.files.clone() };
            for source in sources {
                let text = read_input(&source)?;
                // Every document is checked before any is recorded: a bad file records nothing.
                let decoded = json_documents(&text)
                    .into_iter()
                    .enumerate()
                    .map(|(index, document)| {
                        decode_json(document).map_err(|error| {
                            CliError::BadInput(anyhow!("{} (document {}): {error}", source.display(), index + 1))
                        })
                    })
                    .collect::<CliResult<Vec<_>>>()?;
                for batch in decoded.chunks(1000) {
                    report.merge(&compactor.ingest_all_decoded(batch).await?);
                }
            }
            report
        }
    };
    report.log();
    if global.json {
        return print_json(&report);
    }
    print_ingest_report(&report);
    Ok(())
}

fn read_input(path: &Path) -> CliResult<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read events from stdin")
            .map_err(CliError::BadInput)?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read events from {}: check the path", path.display()))
        .map_err(CliError::BadInput)
}

/// One JSON document, or JSON lines.
fn json_documents(text: &str) -> Vec<&str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok() {
        return vec![trimmed];
    }
    trimmed.lines().map(str::trim).filter(|line| !line.is_empty()).collect()
}

async fn seal(global: &GlobalArgs, args: SealArgs) -> CliResult {
    let compactor = engine(global).await?;
    let bar = ProgressBar::new_spinner();
    let progress_bar = bar.clone();
    let options = SealOptions {
        partitions: partition_keys(&compactor, &args.partitions),
        max_partitions: args.max_partitions,
        progress: Some(Arc::new(move |progress: &OutputProgress| {
            progress_bar.inc(progress.objects);
            progress_bar.set_message(format!("sealed {} objects", thousands(progress_bar.position())));
        })),
        ..Default::default()
    };
    let report = compactor.seal_closed(&options).await?;
    bar.finish_and_clear();
    if global.json {
        print_json(&report)?;
    } else {
        print_seal_report(&report);
    }
    if report.partitions_failed > 0 {
        return Err(CliError::Failure(anyhow!(
            "{} partitions failed (see above); the next seal retries them (one whose sources still await \
             expiry stays locked until its lease expires, --lease, then finishes them)",
            report.partitions_failed
        )));
    }
    Ok(())
}

async fn audit(global: &GlobalArgs, args: AuditArgs) -> CliResult {
    let compactor = existing_engine(global).await?;
    let config = compactor.config().clone();
    if let Some(key) = &args.object {
        let audit = compactor.audit_object(&config.source_bucket, key).await?;
        if global.json {
            return print_json(&audit);
        }
        let object = &audit.object;
        println!("object      s3://{}/{}", object.bucket, object.key);
        println!("state       {}", object.state);
        println!("partition   {}", object.partition_path);
        println!("size        {} bytes", object.size);
        println!("etag        {}", object.etag.as_deref().unwrap_or("-"));
        println!("sequencer   {}", object.sequencer);
        if let Some(note) = &object.note {
            println!("note        {note}");
        }
        if let Some(placement) = &object.placement {
            println!("output      s3://{}/{}", config.dest_bucket, placement.output_key);
            if placement.output_key.to_ascii_lowercase().ends_with(compactor::domain::format::ROWS_PARQUET_EXTENSION) {
                // A rewritten Parquet source shares row groups with others: it is rows, not bytes.
                println!("rows        {} rows from row {} of the output", placement.length, placement.offset);
                println!("digest      {} (sha256 of its decoded values)", placement.sha256);
            } else {
                println!(
                    "byte range  {}..{} (Range: bytes={}-{})",
                    placement.offset,
                    placement.offset + placement.length,
                    placement.offset,
                    (placement.offset + placement.length).saturating_sub(1)
                );
                println!("sha256      {}", placement.sha256);
            }
            if placement.separator_bytes > 0 {
                println!("separator   {} byte(s) inserted after it (not part of its range)", placement.separator_bytes);
            }
            if let Some(output) = &audit.output {
                println!("output is   {} (generation {})", output.state, output.generation);
            }
        }
        println!(
            "expiry      {}",
            object.expiry_marked_at.map(|at| format!("marked at {at}")).unwrap_or_else(|| "not marked".into())
        );
        return Ok(());
    }
    if let Some(key) = &args.output {
        let audit = compactor.audit_output(&config.dest_bucket, key).await?;
        if global.json {
            return print_json(&audit);
        }
        let output = &audit.output;
        println!("output      s3://{}/{}", output.bucket, output.key);
        println!("state       {} (generation {}, part {})", output.state, output.generation, output.part_number);
        println!("partition   {}", output.partition);
        println!("size        {}", output.size.map(|size| format!("{size} bytes")).unwrap_or_else(|| "-".into()));
        println!("sha256      {}", output.sha256.as_deref().unwrap_or("-"));
        println!("objects     {}", output.object_count);
        // A rewritten Parquet output's placements are rows (first row, row count, digest).
        let rows = output.key.to_ascii_lowercase().ends_with(compactor::domain::format::ROWS_PARQUET_EXTENSION);
        let headers = if rows { ["first row", "rows", "digest", "key"] } else { ["offset", "length", "sha256", "key"] };
        let mut table = Table::new(&headers);
        for source in &audit.sources {
            if let Some(placement) = &source.placement {
                table.row(vec![
                    placement.offset.to_string(),
                    placement.length.to_string(),
                    short_sha256(&placement.sha256, 16).to_string(),
                    source.key.clone(),
                ]);
            }
        }
        print!("{}", table.render());
        return Ok(());
    }
    let mut partitions = compactor.audit_partitions().await?;
    if let Some(path) = &args.partition {
        let keys = partition_keys(&compactor, std::slice::from_ref(path)).expect("one path given");
        partitions.retain(|record| record.key == keys[0]);
        let Some(record) = partitions.first() else {
            return Err(CliError::BadInput(anyhow!(
                "partition {} is not in the manifest: run `audit` to list partitions",
                keys[0]
            )));
        };
        let outputs = compactor.audit_partition_outputs(&record.key, None).await?;
        if global.json {
            return print_json(&serde_json::json!({ "partition": record, "outputs": outputs }));
        }
        println!("partition   {}", record.key);
        println!("state       {} (generation {})", record.state, record.generation);
        println!("period      {} .. {}", record.period_start, record.period_end);
        println!("closes at   {}", record.closes_at);
        println!("pending     {} objects, {}", thousands(record.pending_objects), human_bytes(record.pending_bytes));
        println!(
            "compacted   {} objects, {}",
            thousands(record.compacted_objects),
            human_bytes(record.compacted_bytes)
        );
        let mut table = Table::new(&["gen", "part", "state", "objects", "size", "sha256", "key"]);
        for output in outputs {
            table.row(vec![
                output.generation.to_string(),
                output.part_number.to_string(),
                output.state.to_string(),
                thousands(output.object_count),
                output.size.map(human_bytes).unwrap_or_else(|| "-".into()),
                output.sha256.as_deref().map(|sha| short_sha256(sha, 16).to_string()).unwrap_or_else(|| "-".into()),
                output.key,
            ]);
        }
        print!("{}", table.render());
        return Ok(());
    }
    if let Some(state) = &args.state {
        let state: PartitionState = state.parse().map_err(|error: String| CliError::BadInput(anyhow!(error)))?;
        partitions.retain(|record| record.state == state);
    }
    let summary = AuditSummary::of(&partitions);
    if global.json {
        return print_json(&serde_json::json!({ "summary": summary, "partitions": partitions }));
    }
    print_partitions(&partitions);
    print_audit_summary(&summary);
    Ok(())
}

async fn verify(global: &GlobalArgs, args: VerifyArgs) -> CliResult {
    let compactor = existing_engine(global).await?;
    let partitions = partition_keys(&compactor, &args.partitions);
    let bar = ProgressBar::new_spinner();
    let report = compactor
        .verify(partitions, args.against_sources, |so_far| {
            bar.set_message(format!("verified {} outputs", thousands(so_far.outputs_checked)))
        })
        .await?;
    bar.finish_and_clear();
    if global.json {
        print_json(&report)?;
    } else {
        print_verify_report(&report);
    }
    check_verified(&report)
}

async fn restore(global: &GlobalArgs, args: RestoreArgs) -> CliResult {
    let compactor = existing_engine(global).await?;
    let (object, bytes) = if args.as_source {
        compactor.restore_as_source(&args.object).await?
    } else {
        compactor.restore_bytes(&args.object).await?
    };
    if args.out == Path::new("-") {
        std::io::stdout().write_all(&bytes).context("cannot write to stdout").map_err(CliError::Failure)?;
    } else {
        std::fs::write(&args.out, &bytes)
            .with_context(|| format!("cannot write {}", args.out.display()))
            .map_err(CliError::Failure)?;
        if global.json {
            return print_json(&serde_json::json!({ "object": object.key, "bytes": bytes.len(), "out": args.out }));
        }
        eprintln!("restored {} ({} bytes, sha256 checked) to {}", object.key, bytes.len(), args.out.display());
    }
    Ok(())
}

async fn plan(global: &GlobalArgs, args: PlanArgs) -> CliResult {
    let compactor = existing_engine(global).await?;
    let report = compactor.plan(partition_keys(&compactor, &args.partitions)).await?;
    if global.json {
        return print_json(&report);
    }
    if report.partitions.is_empty() {
        // An empty table and a $0 cost say nothing: say why there is nothing, as `audit` would.
        let partitions = compactor.audit_partitions().await?;
        println!("{}", nothing_to_seal(&partitions));
        return Ok(());
    }
    print_plan(&report);
    Ok(())
}
