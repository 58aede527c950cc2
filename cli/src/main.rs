//! `s3-compactor`: the command line of the compactor, on the embedded backend.
//!
//! Thin by design: flags become a `Config`, the backend is opened, and one engine call does
//! the work; this file maps results to tables, JSON and exit codes.

mod args;
mod commands;
mod demo;
mod output;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use args::{Cli, LogFormat};

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// The input is wrong (flags, config, events, unknown keys): exit 2.
    BadInput(anyhow::Error),
    /// The system failed (I/O, store, manifest): exit 1.
    Failure(anyhow::Error),
    /// Verification found a mismatch: exit 3.
    Unverified(String),
}

impl From<compactor::engine::EngineError> for CliError {
    fn from(error: compactor::engine::EngineError) -> Self {
        if let compactor::engine::EngineError::Mismatch(message) = error {
            CliError::Unverified(message)
        } else if error.is_bad_input() {
            CliError::BadInput(error.into())
        } else {
            CliError::Failure(error.into())
        }
    }
}

impl From<compactor::config::ConfigError> for CliError {
    fn from(error: compactor::config::ConfigError) -> Self {
        CliError::BadInput(error.into())
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.compact().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global.log_level, cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BadInput(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
        Err(CliError::Failure(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
        Err(CliError::Unverified(message)) => {
            eprintln!("verification failed: {message}");
            ExitCode::from(3)
        }
    }
}
