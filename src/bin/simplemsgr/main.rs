//! The `simplemsgr` command-line tool.
#![allow(clippy::disallowed_methods)]

fn main() {
    eprintln!("simplemsgr: not yet wired up");
    std::process::exit(2);
}
