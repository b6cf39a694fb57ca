//! `backbone`: parses the command line, runs the command, and turns its error into a report on
//! standard error and an exit code (64 for bad usage or configuration, 1 for a runtime failure).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use backbone_ops::cli::{self, Cli};
use backbone_ops::config::Env;
use backbone_ops::{EXIT_USAGE, report};
use clap::Parser;

/// The process's allocator. Every exchange through a gateway allocates on each hop (headers,
/// descriptors, bodies, records, TLS and HTTP/2 frames) across several threads; mimalloc
/// (`MiMalloc` is a safe wrapper) spends less of the CPU on it than the system allocator, see
/// BENCHMARKS.md, "Exchanges through two gateways".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors get the STYLE exit code.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
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
