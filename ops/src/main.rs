//! `backbone`: parses the command line, runs the command, and turns its error into a report on
//! standard error and an exit code (64 for bad usage or configuration, 1 for a runtime failure).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use backbone_ops::cli::{self, Cli};
use backbone_ops::config::Env;
use backbone_ops::{EXIT_USAGE, report};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors get the STYLE exit code.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match cli::run(cli, &Env::process()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
