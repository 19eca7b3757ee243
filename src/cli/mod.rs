//! The command line: clap definitions here, one module per command group.
//! Everything in `cli` parses arguments, calls the library and prints;
//! decisions and wiring live in the library.
//!
//! Over 500 lines: the clap definitions of every command are one declaration
//! (that is how `--help` stays complete); the commands themselves live in
//! the modules below.

mod check;
mod findings;
mod index;
mod manifests;
mod replay;
mod scan;
mod serve;
mod store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use image_auditor::audit::Policy;
use image_auditor::config;
use image_auditor::findings::TriageAction;
use image_auditor::index::Index;
use image_auditor::manifest::{self, ManifestSet};
use image_auditor::registry::{RegistryClient, RegistryConfig};
use image_auditor::resolve::Resolver;

#[derive(Parser)]
#[command(
    name = "image-auditor",
    version,
    about = "Checks container registry changes against promotion manifests, by digest.",
    after_help = "Exit status: 0 when everything is explained, 1 when a verdict needs a human \
                  or a manifest is invalid, 2 when the command itself failed."
)]
pub struct Cli {
    /// Promotion manifests: a thin-layout root (manifests/ + images/), a plain
    /// manifest file, or a directory of plain manifests.
    /// [default: manifests-fixtures/k8s.io/registry.k8s.io, or `manifests` in
    /// the serve config]
    #[arg(long, global = true, env = "IMAGE_AUDITOR_MANIFESTS")]
    pub manifests: Option<PathBuf>,

    /// Call a digest promoted under another image name of the same manifest
    /// `wrong_repository` instead of `promoted`.
    #[arg(long, global = true)]
    pub strict_repository: bool,

    /// Raise no alert for deleting content that was never promoted.
    #[arg(long, global = true)]
    pub allow_unpromoted_deletes: bool,

    /// Registry access settings (YAML): credentials, plain-HTTP hosts, rate
    /// limits, timeouts, cache directory. See README "Registry access".
    #[arg(long, global = true, env = "IMAGE_AUDITOR_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,

    /// A local exceptions file (README "Exceptions"), read in addition to
    /// `exceptions.yaml` at the manifest root.
    #[arg(long, global = true, env = "IMAGE_AUDITOR_EXCEPTIONS")]
    pub exceptions: Option<PathBuf>,

    /// How far ahead an exception's `expires` may be (as `exceptions.max_ahead`).
    #[arg(long, global = true, default_value = "180days")]
    pub exceptions_max_ahead: humantime::Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Where the sweep's checkpoint is kept [default: <data-dir>/scan;
        /// with --config naming a PostgreSQL store, the store itself].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The service's data directory: findings are recorded in
        /// <data-dir>/findings.sqlite, the store `serve` alerts from.
        #[arg(long, default_value = config::DEFAULT_DATA_DIR, env = "IMAGE_AUDITOR_DATA_DIR")]
        data_dir: PathBuf,
        /// The `serve` configuration: sweep as that service would — its
        /// manifests directory, registry settings and cache, exceptions —
        /// and record in the store it names; --manifests,
        /// --registry-config and --exceptions still win, --data-dir is
        /// not used.
        #[arg(long, env = "IMAGE_AUDITOR_CONFIG")]
        config: Option<PathBuf>,
        /// Entries per page of `_catalog` and `tags/list`.
        #[arg(long, default_value_t = image_auditor::registry::DEFAULT_PAGE_SIZE, hide = true,
              value_parser = clap::value_parser!(usize))]
        page_size: usize,
        /// Stop after visiting this many repositories (the sweep resumes on
        /// the next run).
        #[arg(long)]
        max_repositories: Option<usize>,
        /// Adopting the auditor: write every finding of this sweep to FILE
        /// as exceptions entries for review, instead of recording or
        /// alerting anything (README "Adopting the auditor"). Not resumable.
        #[arg(long, value_name = "FILE", requires = "baseline_owner")]
        baseline: Option<PathBuf>,
        /// The `owner` of every baseline entry (a person or team).
        #[arg(long, value_name = "OWNER", requires = "baseline")]
        baseline_owner: Option<String>,
        /// The `reason` of every baseline entry.
        #[arg(
            long,
            value_name = "TEXT",
            requires = "baseline",
            default_value = "present before the auditor was adopted (baseline sweep)"
        )]
        baseline_reason: String,
        /// The `expires` of every baseline entry (YYYY-MM-DD) [default:
        /// today + --exceptions-max-ahead].
        #[arg(long, value_name = "DATE", requires = "baseline")]
        baseline_expires: Option<String>,
    },
    /// List findings and triage them (acknowledge, resolve) on the
    /// configured store.
    Findings {
        #[command(subcommand)]
        command: FindingsCommand,
    },
    /// The findings store's schema: its version and pending migrations.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
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
pub enum ManifestsCommand {
    /// Load and validate, the exceptions files included; exit 1 if any
    /// project or exceptions file has an error.
    Validate {
        /// Defaults to --manifests.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum FindingsCommand {
    /// Findings, newest first: id, state, verdict, what, who triaged, note.
    List {
        #[command(flatten)]
        store: store::StoreArgs,
        #[command(flatten)]
        filters: findings::ListArgs,
        /// One JSON object per line (as `GET /v1/findings` shows them).
        #[arg(long)]
        json: bool,
    },
    /// Mark a finding acknowledged (seen, being handled).
    Acknowledge {
        id: i64,
        #[command(flatten)]
        triage: TriageArgs,
    },
    /// Mark a finding resolved; the running service resolves its alert at
    /// every sink it reached.
    Resolve {
        id: i64,
        #[command(flatten)]
        triage: TriageArgs,
    },
}

#[derive(clap::Args)]
pub struct TriageArgs {
    #[command(flatten)]
    store: store::StoreArgs,
    /// Who is triaging: recorded with the change.
    #[arg(long = "as", value_name = "NAME")]
    by: String,
    /// Why, for whoever looks next.
    #[arg(long, default_value = "")]
    note: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Print the backend, the schema version found and the one this build
    /// knows, and the migrations pending; exit 1 unless up to date.
    Status {
        #[command(flatten)]
        store: store::StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Apply the pending migrations (as `serve` does when it starts; safe
    /// beside running replicas) and print what was applied.
    Migrate {
        #[command(flatten)]
        store: store::StoreArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum IndexCommand {
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve { config } = &cli.command {
        return serve::serve(config.as_deref(), cli.manifests.as_deref());
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
    let manifests_flag = cli.manifests.clone();
    let manifests = cli
        .manifests
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_MANIFESTS));
    let exceptions = ExceptionsSetup {
        file: cli.exceptions.clone(),
        max_ahead: cli.exceptions_max_ahead.into(),
    };
    match cli.command {
        Command::Serve { .. } => unreachable!("handled in main"),
        Command::Manifests {
            command: ManifestsCommand::Validate { dir },
        } => manifests::validate(dir.as_deref().unwrap_or(&manifests), &exceptions),
        Command::Index {
            command: IndexCommand::Stats { json },
        } => index::stats(&manifests, json),
        Command::Index {
            command: IndexCommand::Resolve { json },
        } => index::resolve(&manifests, &registry, json),
        Command::Lookup { digest, json } => index::lookup(&manifests, &digest, json),
        Command::Check {
            references,
            json,
            resolve,
        } => check::check(
            &manifests,
            &policy,
            &registry,
            &exceptions,
            resolve,
            &references,
            json,
        ),
        Command::Scan {
            prefixes,
            catalog,
            restart,
            json,
            state_dir,
            data_dir,
            config,
            page_size,
            max_repositories,
            baseline,
            baseline_owner,
            baseline_reason,
            baseline_expires,
        } => {
            let settings = store::Settings::load(config.as_deref(), data_dir)?;
            let (store, data_dir) = (settings.store_location(), settings.data_dir().to_owned());
            // With --config the sweep audits as that `serve` would: its
            // manifests, registry settings, cache and exceptions, unless a
            // flag names them.
            let (manifests, registry_config, exceptions) = match settings {
                store::Settings::DataDir(_) => {
                    (manifests, registry.config_under(&data_dir)?, exceptions)
                }
                store::Settings::Serve(config) => (
                    scan::manifests_of(&config, manifests_flag)?,
                    match registry.config {
                        Some(_) => registry.config_under(&data_dir)?,
                        None => config.registry,
                    },
                    ExceptionsSetup {
                        file: cli.exceptions.or(config.exceptions.file),
                        max_ahead: config.exceptions.max_ahead,
                    },
                ),
            };
            let checkpoint = match state_dir {
                // A baseline records nothing, so it has nothing to resume.
                _ if baseline.is_some() => image_auditor::scan::CheckpointAt::Nowhere,
                Some(dir) => image_auditor::scan::CheckpointAt::Dir(dir),
                None => image_auditor::scan::CheckpointAt::for_store(store.backend(), &data_dir),
            };
            let baseline = match (baseline, baseline_owner) {
                (Some(file), Some(owner)) => Some(scan::Baseline {
                    file,
                    owner,
                    reason: baseline_reason,
                    expires: baseline_expires,
                }),
                _ => None,
            };
            let options = image_auditor::scan::Options {
                catalog,
                restart,
                checkpoint,
                page_size: page_size.max(1),
                max_repositories,
            };
            scan::scan(
                &manifests,
                &policy,
                registry_config,
                &exceptions,
                &store,
                &prefixes,
                &options,
                baseline.as_ref(),
                json,
            )
        }
        Command::Findings { command } => match command {
            FindingsCommand::List {
                store,
                filters,
                json,
            } => findings::list(&store, &filters, json),
            FindingsCommand::Acknowledge { id, triage } => {
                findings::triage(&triage, id, TriageAction::Acknowledge)
            }
            FindingsCommand::Resolve { id, triage } => {
                findings::triage(&triage, id, TriageAction::Resolve)
            }
        },
        Command::Store {
            command: StoreCommand::Status { store, json },
        } => store::status(&store, json),
        Command::Store {
            command: StoreCommand::Migrate { store, json },
        } => store::migrate(&store, json),
        Command::Replay {
            file,
            json,
            resolve,
        } => replay::replay(&manifests, &policy, &registry, resolve, &file, json),
    }
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

/// Where one-shot commands read exceptions from, and how far ahead they may run.
struct ExceptionsSetup {
    file: Option<PathBuf>,
    max_ahead: std::time::Duration,
}

impl ExceptionsSetup {
    fn limits(&self) -> image_auditor::exceptions::Limits {
        image_auditor::exceptions::ExceptionsConfig {
            file: self.file.clone(),
            max_ahead: self.max_ahead,
        }
        .limits(image_auditor::exceptions::Date::today())
    }

    fn sources(&self, manifests: &Path) -> Vec<image_auditor::exceptions::Source> {
        image_auditor::exceptions::Source::all(manifests, self.file.as_deref())
    }

    /// Every entry of `exceptions.yaml` at the manifest root and of
    /// `--exceptions`; an error (after printing every problem) when a file
    /// is invalid: a one-shot command has no last good version to fall
    /// back on.
    fn load(&self, manifests: &Path) -> anyhow::Result<image_auditor::exceptions::Exceptions> {
        image_auditor::exceptions::load_all(&self.sources(manifests), self.limits()).map_err(
            |problems| {
                for problem in &problems {
                    eprintln!("{problem}");
                }
                anyhow::anyhow!(
                    "the exceptions are invalid ({} problems); fix them or leave the file out",
                    problems.len()
                )
            },
        )
    }
}

fn exit_for(violations: usize) -> ExitCode {
    if violations > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The runtime a one-shot command runs its registry requests on.
fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Where registry access settings come from.
struct RegistrySetup {
    config: Option<PathBuf>,
}

impl RegistrySetup {
    /// The `--registry-config` file, or the defaults; cached under the
    /// default data directory unless the file names a cache.
    fn config(&self) -> anyhow::Result<RegistryConfig> {
        self.config_under(Path::new(config::DEFAULT_DATA_DIR))
    }

    /// As [`Self::config`], cached under `data_dir`.
    fn config_under(&self, data_dir: &Path) -> anyhow::Result<RegistryConfig> {
        let mut config = match &self.config {
            None => RegistryConfig::default(),
            Some(path) => RegistryConfig::load(path)?,
        };
        config.cache_under(data_dir);
        Ok(config)
    }

    /// A resolver whose client runs on `runtime`.
    fn resolver(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Resolver> {
        let config = self.config()?;
        let _entered = runtime.enter();
        Ok(Resolver::new(RegistryClient::new(config)?))
    }
}
