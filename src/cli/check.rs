//! `check`: the verdict for pushing each reference, and the printing of
//! verdicts `replay` shares.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use image_auditor::audit::{Audit, Pending, Policy, Verdict};
use image_auditor::event::{Event, EventId};
use image_auditor::exceptions::{Date, Exceptions, Shown, Subject};
use image_auditor::index::{Index, ParentsToResolve};
use image_auditor::resolve::{Resolver, audit_or_settle};
use tokio::runtime::Runtime;

use super::{RegistrySetup, current_thread, exit_for, load_index};

pub(super) fn check(
    dir: &Path,
    policy: &Policy,
    registry: &RegistrySetup,
    exceptions: &super::ExceptionsSetup,
    resolve: bool,
    references: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Parse every argument before loading anything: a typo should fail fast.
    let events = references
        .iter()
        .map(|text| Event::hypothetical_push(text))
        .collect::<Result<Vec<_>, _>>()?;
    let exceptions = exceptions.load(dir)?;
    let mut judge = Judge::new(dir, registry, resolve)?;
    let mut out = std::io::stdout().lock();
    let mut violations = 0;
    for event in &events {
        let result = judge.audit(event, policy);
        let shown = exception_for(&exceptions, event, &result.verdict);
        let excepted = shown.as_ref().is_some_and(|s| s.state == "applies");
        violations += usize::from(result.verdict.kind.alerts() && !excepted);
        print_checked(
            &mut out,
            &judge.index,
            &event.id,
            &result.verdict,
            result.pending.as_ref(),
            shown.as_ref(),
            json,
        )?;
    }
    Ok(exit_for(violations))
}

/// The exception that covers `event`'s verdict, or would if it had not
/// expired.
fn exception_for(exceptions: &Exceptions, event: &Event, verdict: &Verdict) -> Option<Shown> {
    let subject = Subject {
        repository: &event.repository,
        digest: event.digest.as_ref(),
        tag: event.tag.as_ref(),
        verdict: verdict.kind,
    };
    Shown::of(exceptions.lookup(&subject, Date::today()))
}

/// Audits events one at a time against an index that grows as the resolver
/// learns children.
pub(super) struct Judge {
    pub index: Index,
    pub resolver: Option<Resolver>,
    /// Where the resolver's registry requests run.
    pub runtime: Runtime,
}

impl Judge {
    /// The index of `dir`, and a resolver when `resolve` asks for one.
    pub fn new(dir: &Path, registry: &RegistrySetup, resolve: bool) -> anyhow::Result<Judge> {
        let runtime = current_thread()?;
        let resolver = resolve.then(|| registry.resolver(&runtime)).transpose()?;
        Ok(Judge {
            index: load_index(dir)?,
            resolver,
            runtime,
        })
    }

    pub fn audit(&mut self, event: &Event, policy: &Policy) -> Audit {
        let (resolved, result) = self.runtime.block_on(audit_or_settle(
            self.resolver.as_ref(),
            &self.index,
            event,
            policy,
        ));
        if let Some(resolved) = resolved {
            self.index = resolved;
        }
        result
    }
}

pub(super) fn print_verdict(
    out: &mut impl Write,
    index: &Index,
    id: &EventId,
    verdict: &Verdict,
    pending: Option<&Pending>,
    json: bool,
) -> std::io::Result<()> {
    print_checked(out, index, id, verdict, pending, None, json)
}

/// [`print_verdict`] with the exception that applies (or has expired).
fn print_checked(
    out: &mut impl Write,
    index: &Index,
    id: &EventId,
    verdict: &Verdict,
    pending: Option<&Pending>,
    exception: Option<&Shown>,
    json: bool,
) -> std::io::Result<()> {
    let parents: Vec<ParentsToResolve> = pending
        .map(|p| {
            p.parents
                .iter()
                .map(|&i| index.parents_to_resolve(i))
                .collect()
        })
        .unwrap_or_default();
    if json {
        let pending = pending.map(|p| {
            serde_json::json!({
                "parents": parents,
                "event_manifest": p.event_manifest,
                "tag_target": p.tag_target,
            })
        });
        let mut line = serde_json::json!({
            "event": id,
            "verdict": verdict.kind,
            "reason": verdict.reason,
            "evidence": verdict.evidence,
            "pending": pending,
        });
        if let Some(exception) = exception {
            line["exception"] = serde_json::json!(exception);
        }
        return writeln!(out, "{line}");
    }
    write!(out, "{}\t{id}\t{}", verdict.kind, verdict.reason)?;
    if let Some(exception) = exception {
        write!(out, " [{exception}]")?;
    }
    if let Some(pending) = pending {
        // Without registry access nothing can be read here, so say how far
        // the verdict is from final instead of hiding it.
        write!(out, " (provisional: {})", pending.describe(index))?;
    }
    writeln!(out)
}
