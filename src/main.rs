//! The `quire` binary: parse the command line and hand off to `quire::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    quire::cli::main(quire::cli::Cli::parse())
}
