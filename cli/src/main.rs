//! `s3-compactor`: the command line of the compactor, on the embedded backend (a local
//! directory and SQLite) or, in builds with the `aws` feature, on S3 and DynamoDB.
//!
//! Thin by design: flags become a `Config`, the backend is opened, and one engine call does
//! the work; this file maps results to exit codes.

mod args;
mod backend;
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
    /// Names what the user typed: the flag when it was given on the command line (every
    /// setting's flag is its variable without `COMPACTOR_`, in kebab case), else the variable.
    fn from(error: compactor::config::ConfigError) -> Self {
        let flag = flag_of(error.name());
        let flag_given = std::env::args()
            .skip(1)
            .any(|argument| argument == flag || argument.strip_prefix(&flag).is_some_and(|rest| rest.starts_with('=')));
        if flag_given {
            CliError::BadInput(anyhow::anyhow!(error.message_naming(&flag)))
        } else {
            CliError::BadInput(error.into())
        }
    }
}

/// The flag of a setting's variable: `COMPACTOR_PART_BYTES` → `--part-bytes`.
fn flag_of(variable: &str) -> String {
    format!("--{}", variable.trim_start_matches("COMPACTOR_").to_ascii_lowercase().replace('_', "-"))
}

pub type CliResult<T = ()> = Result<T, CliError>;

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("warn"));
    // Colours only for a person at a terminal: piped into a file or a log collector, escape
    // codes are noise. `NO_COLOR` (no-color.org), set to anything but empty, turns them off.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.compact().init(),
    }
}

/// A CLI piped into `head`, `jq` or `less` stops quietly when the reader goes away, as ripgrep
/// does. Rust ignores SIGPIPE, so a write to the closed pipe fails, and `println!` panics on a
/// failed write: this hook turns that one panic into a quiet exit 0 instead of a backtrace.
/// Every other panic goes to the default hook.
fn exit_quietly_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        let broken_pipe = message
            .is_some_and(|message| message.starts_with("failed printing to stdout") && message.contains("Broken pipe"));
        if broken_pipe {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

fn main() -> ExitCode {
    compactor::allocator::return_freed_parts_to_the_system();
    exit_quietly_on_broken_pipe();
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
