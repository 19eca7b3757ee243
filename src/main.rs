//! The command line. Everything here parses arguments, calls the library and
//! prints; decisions live in the library.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use image_auditor::audit::{Audit, Pending, Policy, Verdict, audit};
use image_auditor::config::{self, Config, LogFormat};
use image_auditor::event::{Action, Event, EventId, Source};
use image_auditor::findings::{SqliteStore, Store};
use image_auditor::index::{Index, ParentsToResolve};
use image_auditor::manifest::{self, ManifestSet};
use image_auditor::metrics::Metrics;
use image_auditor::pipeline::{DEFAULT_UNDECIDED_RETRY_FOR, Pipeline};
use image_auditor::reference::{Digest, Reference, RegistryPrefix};
use image_auditor::registry::{RegistryClient, RegistryConfig, RequestKind};
use image_auditor::resolve::Resolver;
use image_auditor::scan;
use image_auditor::sources::gcr;
use image_auditor::{log, service};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "image-auditor",
    version,
    about = "Checks container registry changes against promotion manifests, by digest.",
    after_help = "Exit status: 0 when everything is explained, 1 when a verdict needs a human \
                  or a manifest is invalid, 2 when the command itself failed."
)]
struct Cli {
    /// Promotion manifests: a thin-layout root (manifests/ + images/), a plain
    /// manifest file, or a directory of plain manifests.
    /// [default: manifests-fixtures/k8s.io/registry.k8s.io, or `manifests` in
    /// the serve config]
    #[arg(long, global = true, env = "IMAGE_AUDITOR_MANIFESTS")]
    manifests: Option<PathBuf>,

    /// Call a digest promoted under another image name of the same manifest
    /// `wrong_repository` instead of `promoted`.
    #[arg(long, global = true)]
    strict_repository: bool,

    /// Raise no alert for deleting content that was never promoted.
    #[arg(long, global = true)]
    allow_unpromoted_deletes: bool,

    /// Registry access settings (YAML): credentials, plain-HTTP hosts, rate
    /// limits, timeouts, cache directory. See README "Registry access".
    #[arg(long, global = true, env = "IMAGE_AUDITOR_REGISTRY_CONFIG")]
    registry_config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: HTTP API, Pub/Sub push endpoint, Pub/Sub pull when
    /// configured. Stops cleanly on SIGTERM or SIGINT.
    Serve {
        /// YAML configuration (README "Configuration"); the embedded
        /// defaults serve the shipped fixtures on 127.0.0.1:8080.
        #[arg(long, env = "IMAGE_AUDITOR_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate promotion manifests and print every problem.
    Manifests {
        #[command(subcommand)]
        command: ManifestsCommand,
    },
    /// Inspect the digest index.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Show where a digest is promoted.
    Lookup {
        /// `sha256:` followed by 64 lower-case hex digits.
        digest: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the verdict for pushing each reference (host/path:tag,
    /// host/path@digest or host/path:tag@digest).
    Check {
        #[arg(required = true)]
        references: Vec<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Read promoted manifest lists and pushed manifests from the
        /// registries when a verdict depends on them, so every verdict is final.
        #[arg(long)]
        resolve: bool,
    },
    /// Sweep registries: audit every tag of every repository the manifests
    /// name under each prefix, and report promised content that is not
    /// there (`missing`). Decisions go to the findings store; exit 1 when a
    /// new finding was made. Resumes an interrupted sweep (README "Scanning").
    Scan {
        /// Registry prefixes (`host[/path]`) to sweep [default: every
        /// destination prefix of the manifests].
        prefixes: Vec<String>,
        /// Also visit every repository `/v2/_catalog` lists under each prefix.
        #[arg(long)]
        catalog: bool,
        /// Ignore the checkpoint of an interrupted sweep and start anew.
        #[arg(long)]
        restart: bool,
        /// The summary as one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Where the sweep's checkpoint is kept [default: <data-dir>/scan].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The service's data directory: findings are recorded in
        /// <data-dir>/findings.sqlite, the store `serve` alerts from.
        #[arg(long, default_value = "data", env = "IMAGE_AUDITOR_DATA_DIR")]
        data_dir: PathBuf,
        /// Entries per page of `_catalog` and `tags/list`.
        #[arg(long, default_value_t = image_auditor::registry::DEFAULT_PAGE_SIZE, hide = true,
              value_parser = clap::value_parser!(usize))]
        page_size: usize,
        /// Stop after visiting this many repositories (the sweep resumes on
        /// the next run).
        #[arg(long)]
        max_repositories: Option<usize>,
    },
    /// Audit newline-delimited GCR notification payloads from a file (`-` for
    /// standard input), one verdict per line.
    Replay {
        file: PathBuf,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Read promoted manifest lists and pushed manifests from the
        /// registries when a verdict depends on them, so every verdict is final.
        #[arg(long)]
        resolve: bool,
    },
}

#[derive(Subcommand)]
enum ManifestsCommand {
    /// Load and validate; exit 1 if any project has an error.
    Validate {
        /// Defaults to --manifests.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Sizes of the index, load time and memory.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Read every promoted digest from the registries (source first, then
    /// destinations) to learn the children of manifest lists; fills the cache.
    Resolve {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve { config } = &cli.command {
        return serve(config.as_deref(), cli.manifests.as_deref());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMAGE_AUDITOR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let policy = Policy {
        strict_repository: cli.strict_repository,
        allow_unpromoted_deletes: cli.allow_unpromoted_deletes,
    };
    let registry = RegistrySetup {
        config: cli.registry_config.clone(),
    };
    let manifests = cli
        .manifests
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_MANIFESTS));
    match cli.command {
        Command::Serve { .. } => unreachable!("handled in main"),
        Command::Manifests {
            command: ManifestsCommand::Validate { dir },
        } => validate(dir.as_deref().unwrap_or(&manifests)),
        Command::Index {
            command: IndexCommand::Stats { json },
        } => stats(&manifests, json),
        Command::Index {
            command: IndexCommand::Resolve { json },
        } => resolve_index(&manifests, &registry, json),
        Command::Lookup { digest, json } => lookup(&manifests, &digest, json),
        Command::Check {
            references,
            json,
            resolve,
        } => {
            let resolver = resolve.then(|| registry.resolver()).transpose()?;
            check(&manifests, &policy, resolver, &references, json)
        }
        Command::Scan {
            prefixes,
            catalog,
            restart,
            json,
            state_dir,
            data_dir,
            page_size,
            max_repositories,
        } => {
            let options = scan::Options {
                catalog,
                restart,
                state_dir: Some(state_dir.unwrap_or_else(|| data_dir.join("scan"))),
                page_size: page_size.max(1),
                max_repositories,
            };
            scan_registries(
                &manifests, &policy, &registry, &data_dir, &prefixes, &options, json,
            )
        }
        Command::Replay {
            file,
            json,
            resolve,
        } => {
            let resolver = resolve.then(|| registry.resolver()).transpose()?;
            replay(&manifests, &policy, resolver, &file, json)
        }
    }
}

fn serve(config_path: Option<&Path>, manifests: Option<&Path>) -> ExitCode {
    let mut config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(manifests) = manifests {
        config.manifests = manifests.to_path_buf();
    }
    let filter = tracing_subscriber::EnvFilter::new(&config.log.filter);
    match config.log.format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .event_format(log::CloudJson(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            ))
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        service::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "service failed");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// SIGTERM (Kubernetes, Cloud Run) or SIGINT (a terminal) starts a clean stop.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
}

fn load(dir: &Path) -> anyhow::Result<ManifestSet> {
    Ok(manifest::load(dir)?)
}

/// Loads and indexes, warning on stderr about projects left out.
fn load_index(dir: &Path) -> anyhow::Result<Index> {
    let set = load(dir)?;
    for problem in set.errors() {
        eprintln!("{problem} (project left out)");
    }
    Ok(Index::build(&set, 1))
}

fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let set = load(dir)?;
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

fn stats(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
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

/// Where a digest is promoted: one image of one manifest.
#[derive(serde::Serialize)]
struct Placement {
    file: String,
    line: u32,
    project: String,
    image: String,
    tags: Vec<String>,
    /// Every repository the image is promoted to.
    destinations: Vec<String>,
}

fn lookup(dir: &Path, digest: &str, json: bool) -> anyhow::Result<ExitCode> {
    let digest: Digest = digest.parse()?;
    let index = load_index(dir)?;
    let placements: Vec<Placement> = index
        .placements(&digest)
        .iter()
        .map(|p| {
            let image = index.promotion_image(p.promotion);
            let manifest = index.manifest(index.image_manifest(image));
            let name = index.image_name(image);
            Placement {
                file: manifest.images_file.display().to_string(),
                line: index.promotion_line(p.promotion),
                project: manifest.project.to_string(),
                image: name.to_string(),
                tags: index
                    .promotion_tags(p.promotion)
                    .map(|t| (**t).to_owned())
                    .collect(),
                destinations: manifest
                    .destinations
                    .iter()
                    .map(|dest| format!("{dest}/{name}"))
                    .collect(),
            }
        })
        .collect();
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
        for dest in &p.destinations {
            println!("  {dest}");
        }
    }
    Ok(if placements.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn check(
    dir: &Path,
    policy: &Policy,
    resolver: Option<Resolving>,
    references: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Parse every argument before loading anything: a typo should fail fast.
    let events = references
        .iter()
        .map(|text| {
            let r: Reference = text.parse()?;
            if r.digest.is_none() && r.tag.is_none() {
                anyhow::bail!("{text:?} names neither a tag nor a digest");
            }
            Ok(Event {
                id: EventId(text.clone()),
                source: Source::Cli,
                action: Action::Insert,
                repository: r.repository,
                digest: r.digest,
                tag: r.tag,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut judge = Judge {
        index: load_index(dir)?,
        resolver,
    };
    let mut out = std::io::stdout().lock();
    let mut violations = 0;
    for event in &events {
        let result = judge.audit(event, policy);
        violations += usize::from(result.verdict.kind.alerts());
        print_verdict(
            &mut out,
            &judge.index,
            &event.id,
            &result.verdict,
            result.pending.as_ref(),
            json,
        )?;
    }
    Ok(exit_for(violations))
}

fn replay(
    dir: &Path,
    policy: &Policy,
    resolver: Option<Resolving>,
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
    let mut judge = Judge {
        index: load_index(dir)?,
        resolver,
    };
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

/// A resolver and the runtime its registry requests run on.
type Resolving = (Resolver, tokio::runtime::Runtime);

/// Where registry access settings come from.
struct RegistrySetup {
    config: Option<PathBuf>,
}

/// The cache the CLI uses when the registry config names none, so that a
/// second run costs no registry requests.
const DEFAULT_CACHE_DIR: &str = "data/registry-cache";

impl RegistrySetup {
    fn config(&self) -> anyhow::Result<RegistryConfig> {
        let mut config = match &self.config {
            None => RegistryConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                serde_saphyr::from_str::<Option<RegistryConfig>>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    .unwrap_or_default()
            }
        };
        config
            .cache_dir
            .get_or_insert_with(|| DEFAULT_CACHE_DIR.into());
        Ok(config)
    }

    fn resolver(&self) -> anyhow::Result<Resolving> {
        let config = self.config()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = {
            let _entered = runtime.enter();
            RegistryClient::new(config)?
        };
        Ok((Resolver::new(client), runtime))
    }
}

/// Audits events one at a time against an index that grows as the resolver
/// learns children.
struct Judge {
    index: Index,
    resolver: Option<Resolving>,
}

impl Judge {
    fn audit(&mut self, event: &Event, policy: &Policy) -> Audit {
        match &self.resolver {
            None => audit(&self.index, event, policy),
            Some((resolver, runtime)) => {
                let (index, result) = runtime.block_on(resolver.settle(&self.index, event, policy));
                self.index = index;
                result
            }
        }
    }
}

fn resolve_index(dir: &Path, registry: &RegistrySetup, json: bool) -> anyhow::Result<ExitCode> {
    let (resolver, runtime) = registry.resolver()?;
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

fn scan_registries(
    dir: &Path,
    policy: &Policy,
    registry: &RegistrySetup,
    data_dir: &Path,
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
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
    let db = data_dir.join("findings.sqlite");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db)
            .map_err(|e| anyhow::anyhow!("opening findings store {}: {e}", db.display()))?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = {
        let _entered = runtime.enter();
        RegistryClient::new(config)?
    };
    let metrics = Arc::new(Metrics::new(Some(client.clone())));
    let index = Arc::new(ArcSwap::from_pointee(index));
    let pipeline = Pipeline::new(
        index.clone(),
        Some(Arc::new(Resolver::new(client.clone()))),
        store,
        policy.clone(),
        metrics.clone(),
        DEFAULT_UNDECIDED_RETRY_FOR,
    );
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} repositories {elapsed}")
            .expect("valid template"),
    );
    let sweep = scan::Sweep {
        pipeline: &pipeline,
        index: &index,
        client: &client,
        metrics: Some(&metrics),
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

fn exit_for(violations: usize) -> ExitCode {
    if violations > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_verdict(
    out: &mut impl Write,
    index: &Index,
    id: &EventId,
    verdict: &Verdict,
    pending: Option<&Pending>,
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
        let line = serde_json::json!({
            "event": id,
            "verdict": verdict.kind,
            "reason": verdict.reason,
            "evidence": verdict.evidence,
            "pending": pending,
        });
        return writeln!(out, "{line}");
    }
    write!(out, "{}\t{id}\t{}", verdict.kind, verdict.reason)?;
    if let Some(pending) = pending {
        // Without registry access nothing can be read here, so say how far
        // the verdict is from final instead of hiding it.
        write!(out, " (provisional: {})", pending.describe(index))?;
    }
    writeln!(out)
}
