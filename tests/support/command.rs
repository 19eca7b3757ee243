//! Running the programs the harness needs (a leaf: the benchmarks include
//! it beside the servers' harnesses).

use std::process::{Command, Output};

/// Runs `cmd`, which must succeed; a failure shows the command, its exit
/// status and everything it printed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
