//! `manifests validate`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn validate(
    dir: &Path,
    exceptions: &super::ExceptionsSetup,
) -> anyhow::Result<ExitCode> {
    let set = super::load(dir)?;
    let mut out = std::io::stdout().lock();
    for problem in &set.problems {
        writeln!(out, "{problem}")?;
    }
    let mut entries = 0;
    let mut files = 0;
    let mut exception_errors = 0;
    for source in exceptions.sources(dir) {
        if source.in_tree && !source.path.exists() {
            continue;
        }
        files += 1;
        match source.read(exceptions.limits()) {
            Ok(e) => entries += e.len(),
            Err(problems) => {
                exception_errors += problems.len();
                for problem in &problems {
                    writeln!(out, "{problem}")?;
                }
            }
        }
    }
    if files > 0 {
        writeln!(
            out,
            "exceptions: {entries} entries in {files} file(s){}",
            if exception_errors > 0 {
                " (a file with an error is not used at all)"
            } else {
                ""
            }
        )?;
    }
    let errors = set.errors().count() + exception_errors;
    let warnings = set.problems.len() + exception_errors - errors;
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
