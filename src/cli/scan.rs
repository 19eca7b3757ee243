//! `scan`: sweeps registries through the same pipeline `serve` runs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use image_auditor::audit::Policy;
use image_auditor::findings::StoreLocation;
use image_auditor::pipeline::DEFAULT_UNDECIDED_RETRY_FOR;
use image_auditor::reference::RegistryPrefix;
use image_auditor::scan;
use image_auditor::wiring::Wiring;

use super::{RegistrySetup, current_thread, exit_for, load_index};

pub(super) fn scan(
    dir: &Path,
    policy: &Policy,
    registry: &RegistrySetup,
    store: &StoreLocation,
    prefixes: &[String],
    options: &scan::Options,
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
    let index = load_index(dir)?;
    let config = registry.config()?;
    let runtime = current_thread()?;
    let wiring = {
        let _entered = runtime.enter();
        Wiring::open(store, Some(config))?
    };
    let Some(client) = &wiring.client else {
        unreachable!("opened with a registry configuration")
    };
    let index = Arc::new(ArcSwap::from_pointee(index));
    let pipeline = wiring.pipeline(index.clone(), policy.clone(), DEFAULT_UNDECIDED_RETRY_FOR);
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
             {} manifest requests, {} list requests; verdicts: {}; {} new findings, {} missing, \
             {} errors",
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
            summary.missing,
            summary.errors.len()
        )?;
    }
    Ok(exit_for(summary.findings.len()))
}
