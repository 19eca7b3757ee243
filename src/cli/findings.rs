//! `findings`: list and triage findings on the configured store, without
//! the service (the store is the one `serve` uses, so a change made here is
//! seen there, and a resolution is sent by the running service's sinks).

use std::process::ExitCode;

use image_auditor::audit::VerdictKind;
use image_auditor::findings::{
    self, Finding, FindingId, FindingQuery, StoreError, TriageAction, TriageChange, TriageState,
};
use serde_json::json;

use super::TriageArgs;
use super::store::StoreArgs;

/// Filters of `findings list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// open, acknowledged or resolved.
    #[arg(long)]
    pub state: Option<TriageState>,
    #[arg(long)]
    pub verdict: Option<VerdictKind>,
    /// A whole repository, host included.
    #[arg(long)]
    pub repository: Option<String>,
    /// At most this many, newest first (at most 1000).
    #[arg(long, default_value_t = FindingQuery::DEFAULT_LIMIT)]
    pub limit: usize,
}

pub(super) fn list(store: &StoreArgs, args: &ListArgs, json: bool) -> anyhow::Result<ExitCode> {
    let query = FindingQuery {
        state: args.state,
        verdict: args.verdict,
        repository: args.repository.as_deref().map(str::parse).transpose()?,
        limit: Some(args.limit),
        ..FindingQuery::default()
    };
    let found = findings::open(&store.location()?)?.findings(&query)?;
    for f in &found {
        if json {
            println!("{}", serde_json::to_string(f)?);
        } else {
            println!("{}", line(f));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `id<TAB>state<TAB>verdict<TAB>repository@digest:tag<TAB>by<TAB>note`.
fn line(f: &Finding) -> String {
    let mut what = f
        .repository
        .as_ref()
        .map_or_else(|| format!("event {}", f.key.event_id), ToString::to_string);
    if let Some(tag) = &f.tag {
        what.push_str(&format!(":{}", tag.as_str()));
    }
    if let Some(digest) = &f.digest {
        what.push_str(&format!("@{digest}"));
    }
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        f.id,
        f.triage.state,
        f.verdict.as_str(),
        what,
        f.triage.by.as_deref().unwrap_or("-"),
        f.triage.note.as_deref().unwrap_or("").replace('\n', " ")
    )
}

/// Applies `action` to finding `id` as `args` say (who, why, which store);
/// exit 1 when the finding does not exist or its state does not allow it.
pub(super) fn triage(args: &TriageArgs, id: i64, action: TriageAction) -> anyhow::Result<ExitCode> {
    let change = TriageChange::new(action, &args.by, &args.note)?;
    let json = args.json;
    let store = findings::open(&args.store.location()?)?;
    match store.triage(FindingId(id), &change, findings::now_ms()) {
        Ok(triaged) => {
            if json {
                println!(
                    "{}",
                    json!({ "finding": triaged.finding, "changed": triaged.changed })
                );
            } else {
                println!(
                    "{}{}",
                    line(&triaged.finding),
                    if triaged.changed { "" } else { "\t(unchanged)" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (StoreError::NoSuchFinding { .. } | StoreError::Triage { .. })) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
