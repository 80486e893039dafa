//! The `cutover-auditor` binary: a thin command-line shell over the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "cutover-auditor {}: no command yet",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(64)
}
