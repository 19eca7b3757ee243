//! `manifests validate`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let set = super::load(dir)?;
    let mut out = std::io::stdout().lock();
    for problem in &set.problems {
        writeln!(out, "{problem}")?;
    }
    let errors = set.errors().count();
    let warnings = set.problems.len() - errors;
    writeln!(
        out,
        "{} projects valid, {} excluded; {errors} errors, {warnings} warnings",
        set.manifests.len(),
        set.excluded.len()
    )?;
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
