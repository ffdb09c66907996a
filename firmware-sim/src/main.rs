//! `estate-sim`: command-line front end of the simulator. Parses arguments and calls the
//! library; see the crate docs of `estate_sim` for what each part does.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Runs one subcommand; on failure prints the error with its causes (`{:#}`: `error:
/// what: why: ...`) on stderr and exits 1.
#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour only on a terminal: not in a log file, a pipe or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
