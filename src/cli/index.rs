//! `index stats`, `index resolve` and `lookup`: the digest index.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use image_auditor::reference::Digest;
use image_auditor::registry::RequestKind;

use super::{RegistrySetup, current_thread, load_index};

pub(super) fn stats(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let index = load_index(dir)?;
    let elapsed = start.elapsed();
    let stats = index.stats();
    let (rss, peak) = memory_kib();
    if json {
        let mut value = serde_json::to_value(&stats)?;
        value["load_ms"] = (elapsed.as_secs_f64() * 1000.0).into();
        value["rss_kib"] = rss.into();
        value["peak_rss_kib"] = peak.into();
        println!("{value}");
    } else {
        println!("projects:          {}", stats.projects);
        println!("excluded projects: {}", stats.excluded_projects);
        println!("images:            {}", stats.images);
        println!("digests:           {}", stats.digests);
        println!("promotions:        {}", stats.promotions);
        println!("tags:              {}", stats.tags);
        println!("destinations:      {}", stats.destinations);
        println!(
            "load time:         {:.1} ms",
            elapsed.as_secs_f64() * 1000.0
        );
        println!(
            "memory:            {} KiB resident, {} KiB peak",
            rss.map_or("?".into(), |v| v.to_string()),
            peak.map_or("?".into(), |v| v.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Resident and peak resident memory of this process, from /proc.
fn memory_kib() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub(super) fn lookup(dir: &Path, digest: &str, json: bool) -> anyhow::Result<ExitCode> {
    let digest: Digest = digest.parse()?;
    let index = load_index(dir)?;
    let placements = index.placement_reports(&digest);
    if json {
        let value = serde_json::json!({
            "digest": digest.to_string(),
            "promoted": !placements.is_empty(),
            "placements": placements,
        });
        println!("{value}");
    } else if placements.is_empty() {
        println!("{digest} is not promoted by any manifest");
    }
    for p in placements.iter().filter(|_| !json) {
        println!(
            "{}:{}: project {}, image {}, tags [{}]",
            p.file,
            p.line,
            p.project,
            p.image,
            p.tags.join(", ")
        );
        for repository in &p.repositories {
            println!("  {repository}");
        }
    }
    Ok(if placements.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn resolve(
    dir: &Path,
    registry: &RegistrySetup,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = current_thread()?;
    let resolver = registry.resolver(&runtime)?;
    let index = load_index(dir)?;
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} digests read {elapsed}")
            .expect("valid template"),
    );
    let (index, summary) = runtime.block_on(resolver.resolve_all(&index, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }));
    bar.finish_and_clear();
    let stats = resolver.client().stats();
    let requests = stats.total(RequestKind::Manifest);
    if json {
        let value = serde_json::json!({
            "summary": summary,
            "manifest_requests": requests,
            "token_requests": stats.total(RequestKind::Token),
            "cache_hits": stats.cache_hits,
            "resolved_digests": index.stats().resolved_digests,
            "elapsed_ms": start.elapsed().as_secs_f64() * 1000.0,
        });
        println!("{value}");
    } else {
        for f in &summary.failures {
            eprintln!("cannot read {}: {}", f.digest, f.error);
        }
        println!(
            "read {} promoted digests in {:.1} s: {} lists, {} children, {} failures; \
             {requests} manifest requests, {} cache hits",
            summary.digests,
            start.elapsed().as_secs_f64(),
            summary.lists,
            summary.children,
            summary.failures.len(),
            stats.cache_hits
        );
    }
    Ok(if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
