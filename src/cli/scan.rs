//! `scan`: sweeps registries through the same pipeline `serve` runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use image_auditor::audit::Policy;
use image_auditor::config::Config;
use image_auditor::exceptions::{Date, baseline};
use image_auditor::findings::{SqliteStore, Store, StoreLocation};
use image_auditor::index::Index;
use image_auditor::pipeline::DEFAULT_UNDECIDED_RETRY_FOR;
use image_auditor::reference::{RegistryPrefix, Repository};
use image_auditor::registry::RegistryConfig;
use image_auditor::scan;
use image_auditor::wiring::Wiring;

use super::{ExceptionsSetup, current_thread, exit_for, load_index};

/// The manifests `scan --config` audits against: `--manifests` when given,
/// else the configuration's directory. A configuration that follows a git
/// branch needs a checkout named: a one-shot sweep does not sync one, and
/// falling back to the fixtures would call every image unpromoted.
pub(super) fn manifests_of(config: &Config, flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match (flag, &config.manifests_git) {
        (Some(dir), _) => Ok(dir),
        (None, Some(git)) => anyhow::bail!(
            "the configuration takes its manifests from git ({} branch {}): pass --manifests \
             with a checkout of it",
            git.shown_url(),
            git.branch
        ),
        (None, None) => Ok(config.manifests.clone()),
    }
}

/// `scan --baseline`: where to write the entries, and what they say.
pub(super) struct Baseline {
    pub file: PathBuf,
    pub owner: String,
    pub reason: String,
    /// YYYY-MM-DD; default: today + the most allowed ahead.
    pub expires: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn scan(
    dir: &Path,
    policy: &Policy,
    registry: RegistryConfig,
    exceptions: &ExceptionsSetup,
    store: &StoreLocation,
    prefixes: &[String],
    options: &scan::Options,
    baseline: Option<&Baseline>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Parse the arguments before loading or connecting to anything.
    let targets = prefixes
        .iter()
        .map(|p| {
            p.parse::<RegistryPrefix>()
                .map_err(|e| anyhow::anyhow!("{p:?} is not a registry prefix: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let expires = match baseline {
        None => None,
        Some(b) => Some(baseline_expires(b, exceptions)?),
    };
    if let Some(b) = baseline
        && b.file.exists()
    {
        anyhow::bail!(
            "{} already exists: a baseline never overwrites a file that may have been reviewed",
            b.file.display()
        );
    }
    let exceptions_in_force = exceptions.load(dir)?;
    let index = load_index(dir)?;
    let config = registry;
    let runtime = current_thread()?;
    let wiring = {
        let _entered = runtime.enter();
        if baseline.is_some() {
            // Decided in memory: a baseline sweep records and alerts nothing.
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
            Wiring::with_store(store, Some(config))?
        } else {
            Wiring::open(store, Some(config))?
        }
    };
    let Some(client) = &wiring.client else {
        unreachable!("opened with a registry configuration")
    };
    let index = Arc::new(ArcSwap::from_pointee(index));
    let pipeline = wiring
        .pipeline(index.clone(), policy.clone(), DEFAULT_UNDECIDED_RETRY_FOR)
        .with_exceptions(Arc::new(ArcSwap::from_pointee(exceptions_in_force)));
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} repositories {elapsed}")
            .expect("valid template"),
    );
    let sweep = scan::Sweep {
        pipeline: &pipeline,
        index: &index,
        client,
        metrics: Some(&wiring.metrics),
    };
    let summary = runtime.block_on(sweep.run(&targets, options, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }))?;
    bar.finish_and_clear();
    if let (Some(b), Some(expires)) = (baseline, expires) {
        return write_baseline(b, expires, &index.load(), &targets, &summary, json);
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let mut out = std::io::stdout().lock();
        for f in &summary.findings {
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                f.verdict,
                f.repository,
                f.tag.as_deref().unwrap_or("-"),
                f.digest.as_deref().unwrap_or("-")
            )?;
        }
        for e in &summary.errors {
            eprintln!("error: {e}");
        }
        let verdicts: Vec<String> = summary
            .verdicts
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        writeln!(
            out,
            "sweep {} {}: {} repositories visited ({} done earlier, {} undecided), {} tags, \
             {} manifest requests, {} list requests; verdicts: {}; {} new findings, {} excepted, \
             {} missing, {} errors",
            summary.sweep_id,
            if summary.complete {
                "complete"
            } else {
                "interrupted (resume with the same command)"
            },
            summary.repositories,
            summary.skipped,
            summary.undecided_repositories.len(),
            summary.tags,
            summary.manifest_requests,
            summary.list_requests,
            if verdicts.is_empty() {
                "none".to_owned()
            } else {
                verdicts.join(", ")
            },
            summary.findings.len(),
            summary.excepted,
            summary.missing,
            summary.errors.len()
        )?;
    }
    Ok(exit_for(summary.findings.len()))
}

fn baseline_expires(b: &Baseline, exceptions: &ExceptionsSetup) -> anyhow::Result<Date> {
    let limits = exceptions.limits();
    match &b.expires {
        None => Ok(limits.today.plus_days(limits.max_ahead_days)),
        Some(text) => {
            let date: Date = text
                .parse()
                .map_err(|e| anyhow::anyhow!("--baseline-expires: {e}"))?;
            if date.days_after(limits.today) > limits.max_ahead_days {
                anyhow::bail!(
                    "--baseline-expires {date} is more than {} days ahead \
                     (--exceptions-max-ahead)",
                    limits.max_ahead_days
                );
            }
            Ok(date)
        }
    }
}

/// Writes the sweep's findings as exceptions entries to the baseline file
/// (new, written whole then renamed into place), and says what it wrote.
fn write_baseline(
    b: &Baseline,
    expires: Date,
    index: &Index,
    targets: &[RegistryPrefix],
    summary: &scan::Summary,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let found: Vec<baseline::Found> = summary
        .findings
        .iter()
        .filter_map(|f| {
            Some(baseline::Found {
                repository: f.repository.parse().ok()?,
                digest: f.digest.as_deref().and_then(|d| d.parse().ok()),
                tag: f.tag.as_deref().and_then(|t| t.parse().ok()),
                verdict: f.verdict,
            })
        })
        .collect();
    // The destination prefix that claims a repository names it as the
    // manifests do; a repository only the catalog listed is named under the
    // target it was found below.
    let split = |repo: &Repository| -> Option<(RegistryPrefix, String)> {
        let image = index.image_path(repo).map(str::to_owned).or_else(|| {
            targets
                .iter()
                .filter_map(|t| {
                    repo.splits()
                        .find(|(p, _)| *p == t.as_str())
                        .map(|(_, name)| name.to_owned())
                })
                .min_by_key(String::len)
        })?;
        let prefix = repo.as_str().strip_suffix(&image)?.strip_suffix('/')?;
        Some((prefix.parse().ok()?, image))
    };
    let drafts = baseline::drafts(&found, split);
    let header = format!(
        "Baseline written by `image-auditor scan --baseline` (sweep {}, {}{}):\n\
         {} findings as {} entries. Review every entry, then commit this file as\n\
         exceptions.yaml at the manifest root (or set exceptions.file).",
        summary.sweep_id,
        Date::today(),
        if summary.complete {
            ""
        } else {
            ", INCOMPLETE sweep"
        },
        found.len(),
        drafts.len()
    );
    let text = baseline::to_yaml(&drafts, &b.reason, &b.owner, expires, &header);
    let tmp = b.file.with_extension("yaml.tmp");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, &b.file))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", b.file.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "baseline": b.file.display().to_string(),
                "entries": drafts.len(),
                "summary": summary,
            })
        );
    } else {
        for e in &summary.errors {
            eprintln!("error: {e}");
        }
        println!(
            "baseline: {} findings written as {} exceptions entries to {} (expires {expires}); \
             nothing was recorded or alerted; sweep {}",
            found.len(),
            drafts.len(),
            b.file.display(),
            if summary.complete {
                "complete"
            } else {
                "incomplete (run it again: a baseline does not resume)"
            }
        );
    }
    // Undecided repositories were not baselined: run it again.
    Ok(
        if summary.complete && summary.undecided_repositories.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
