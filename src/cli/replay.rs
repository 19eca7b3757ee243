//! `replay`: audits a file of GCR notification payloads, one verdict a line.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use image_auditor::audit::{Audit, Policy, Verdict};
use image_auditor::event::EventId;
use image_auditor::sources::gcr;

use super::check::{Judge, print_verdict};
use super::{RegistrySetup, exit_for};

pub(super) fn replay(
    dir: &Path,
    policy: &Policy,
    registry: &RegistrySetup,
    resolve: bool,
    file: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut judge = Judge::new(dir, registry, resolve)?;
    let mut out = std::io::stdout().lock();
    let mut violations = 0;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let id = EventId(format!("{}:{}", file.display(), n + 1));
        let (verdict, pending) = match gcr::parse(&id, line.as_bytes()) {
            Ok(event) => {
                let Audit { verdict, pending } = judge.audit(&event, policy);
                (verdict, pending)
            }
            Err(malformed) => (Verdict::malformed(&malformed), None),
        };
        violations += usize::from(verdict.kind.alerts());
        print_verdict(
            &mut out,
            &judge.index,
            &id,
            &verdict,
            pending.as_ref(),
            json,
        )?;
    }
    Ok(exit_for(violations))
}
