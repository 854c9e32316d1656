//! STUB: the `ceph` subcommand belongs to the v1 engineer; this file is replaced at merge.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `simplemsgr ceph`.
#[derive(Debug, Args)]
pub struct CephArgs {
    /// Subcommand words, passed through.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// Not built yet: says so and exits 2.
pub fn run(args: CephArgs) -> ExitCode {
    let _ = args;
    eprintln!("simplemsgr ceph: not built yet");
    ExitCode::from(2)
}
