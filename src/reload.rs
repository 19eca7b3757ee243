//! Keeps the live index in step with its manifest origin: polls (or is
//! asked: `POST /-/reload`, SIGHUP, refresh before reject), builds the new
//! index off the hot path and swaps it in atomically. Readers never wait.
//!
//! A project that breaks keeps its last good version, so a bad merge never
//! blinds the auditor to that project; the breakage is reported once, as a
//! `malformed` finding from the source `manifests`.
//!
//! The exceptions files are read here too, at every poll, because they are
//! part of the manifest origin and follow the same last-good rule; that
//! keeps one reload lock for both and takes the file over 500 lines.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::VerdictKind;
use crate::config::ReloadConfig;
use crate::event::{EndpointName, EventId, Malformed, Source};
use crate::exceptions::{self, Date, Exception, Exceptions, ExceptionsConfig};
use crate::findings::{Decision, Recorded, Store, now_ms, record_queued};
use crate::index::Index;
use crate::manifest::origin::{ManifestOrigin, OriginError, Version};
use crate::manifest::walk::{Budget, Limit};
use crate::manifest::{self, LoadError, Manifest, ManifestSet, Severity};
use crate::metrics::Metrics;

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// A new index was swapped in.
    pub changed: bool,
    pub generation: u64,
    pub commit: Option<String>,
    /// Projects with errors that stay at their last good version.
    pub kept: Vec<String>,
    /// Projects with errors and no good version to keep: left out.
    pub excluded: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("manifest origin: {0}")]
    Source(#[from] OriginError),
    #[error("loading manifests: {0}")]
    Load(#[from] LoadError),
    #[error("reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// The budget bound the manifest tree went over, when that is why.
    pub fn over_budget(&self) -> Option<Limit> {
        match self {
            ReloadError::Source(OriginError::OverBudget(over))
            | ReloadError::Load(LoadError::OverBudget(over)) => Some(over.which),
            _ => None,
        }
    }
}

struct State {
    version: Option<Version>,
    /// The last valid version of every project, by name.
    last_good: HashMap<String, Manifest>,
    /// Breakages already reported (project and problem text), so a project
    /// that stays broken over many commits is reported once.
    reported: HashSet<String>,
    /// When the source was last synced (by any caller).
    last_sync: Option<Instant>,
    /// Each exceptions file, in the order they are consulted.
    exception_files: Vec<ExceptionsFile>,
}

/// One exceptions file as last read.
#[derive(Default)]
struct ExceptionsFile {
    source: Option<exceptions::Source>,
    /// What the last read found.
    seen: Option<Seen>,
    /// Its last valid version (empty if it never loaded or is gone).
    last_good: Vec<Exception>,
}

/// What one read of an exceptions file found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// This text (its digest), valid or not.
    Text(crate::reference::Digest),
    Missing,
    /// These problems.
    Unreadable(Vec<String>),
}

pub struct Reloader {
    source: ManifestOrigin,
    index: Arc<ArcSwap<Index>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Serialises reloads: concurrent callers wait for the one in flight.
    state: tokio::sync::Mutex<State>,
    refresh_min_interval: Duration,
    budget: Budget,
    /// A reload running longer than this makes [`Reloader::stuck`] say so.
    stuck_after: Duration,
    /// When the reload in progress started; `None` between reloads.
    running_since: std::sync::Mutex<Option<Instant>>,
    /// Reloads run for [`Reloader::request`] so far, and the last one's
    /// result (under the lock), so that requests queued behind a run
    /// share the next one instead of each running their own.
    requested_runs: AtomicU64,
    requested: tokio::sync::Mutex<Option<Result<Outcome, Arc<ReloadError>>>>,
    /// The exceptions in force, read again at every reload.
    exceptions: Arc<ArcSwap<Exceptions>>,
    exceptions_config: ExceptionsConfig,
}

impl Reloader {
    /// Syncs and loads the set for the first time. A set that cannot be
    /// loaded at all is an error (startup refuses to run blind).
    pub async fn start(
        source: ManifestOrigin,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        config: &ReloadConfig,
        exceptions_config: &ExceptionsConfig,
    ) -> Result<Arc<Reloader>, ReloadError> {
        let budget = config.limits;
        let version = source.sync(&budget).await?;
        let set = load(&source, &version, &budget).await?;
        let mut state = State {
            version: Some(version),
            last_good: HashMap::new(),
            reported: HashSet::new(),
            last_sync: Some(Instant::now()),
            exception_files: Vec::new(),
        };
        let (set, outcome_lists) = keep_last_good(set, &mut state.last_good);
        let index = build(set.clone(), 1).await?;
        let reloader = Arc::new(Reloader {
            source,
            index: Arc::new(ArcSwap::from_pointee(index)),
            store,
            metrics,
            state: tokio::sync::Mutex::new(state),
            refresh_min_interval: config.refresh_min_interval,
            budget,
            stuck_after: config.stuck_after,
            running_since: std::sync::Mutex::new(None),
            requested_runs: AtomicU64::new(0),
            requested: tokio::sync::Mutex::new(None),
            exceptions: Arc::new(ArcSwap::from_pointee(Exceptions::default())),
            exceptions_config: exceptions_config.clone(),
        });
        reloader.observe(&set, &outcome_lists);
        {
            let mut state = reloader.state.lock().await;
            reloader.refresh_exceptions(&mut state).await;
        }
        Ok(reloader)
    }

    /// The exceptions in force, shared with the pipeline.
    pub fn exceptions(&self) -> Arc<ArcSwap<Exceptions>> {
        self.exceptions.clone()
    }

    /// The live index, shared with the pipeline and the HTTP routes.
    pub fn index(&self) -> Arc<ArcSwap<Index>> {
        self.index.clone()
    }

    /// Syncs the source and, when it changed (or `force`), swaps in a new
    /// index. On failure the live index stays.
    pub async fn reload(&self, force: bool) -> Result<Outcome, ReloadError> {
        let mut state = self.state.lock().await;
        self.reload_locked(&mut state, force).await
    }

    /// Why the service should not be called ready because of reloading: a
    /// reload running for longer than `reload.stuck_after` (a hung git
    /// command, a filesystem that stopped answering) means new promotions
    /// are not seen and refresh-before-reject callers wait behind it.
    pub fn stuck(&self) -> Option<String> {
        let since = (*self.running_since.lock().expect("never poisoned"))?;
        let running = since.elapsed();
        (running > self.stuck_after).then(|| {
            format!(
                "a manifest reload has been running for {} s (reload.stuck_after is {} s)",
                running.as_secs(),
                self.stuck_after.as_secs()
            )
        })
    }

    /// A forced reload asked for from outside (`POST /-/reload`, SIGHUP).
    /// Requests made while one runs share the next run: however many
    /// arrive, at most one more reload follows the one in progress, and
    /// each request still sees a reload that started after it was made.
    pub async fn request(&self) -> Result<Outcome, Arc<ReloadError>> {
        let runs_before = self.requested_runs.load(Ordering::Acquire);
        let mut last = self.requested.lock().await;
        if self.requested_runs.load(Ordering::Acquire) > runs_before
            && let Some(shared) = &*last
        {
            return shared.clone();
        }
        self.requested_runs.fetch_add(1, Ordering::AcqRel);
        let result = self.reload(true).await.map_err(Arc::new);
        *last = Some(result.clone());
        result
    }

    async fn reload_locked(&self, state: &mut State, force: bool) -> Result<Outcome, ReloadError> {
        let result = {
            let _running = Running::start(&self.running_since);
            self.try_reload(state, force).await
        };
        if let Err(e) = &result {
            if let Some(limit) = e.over_budget() {
                self.metrics.rejected(limit.reason());
            }
            if let ReloadError::Source(OriginError::TooLarge { .. }) = e {
                self.metrics.rejected("manifest_fetch_too_large");
            }
            self.metrics.manifest_load_failures.inc();
            tracing::error!(error = %e, "manifest reload failed; the live index stays");
            self.report(state, "(manifest set)", &e.to_string()).await;
        }
        // Whatever became of the manifests: the local file may have
        // changed, and an entry may have expired since the last poll.
        self.refresh_exceptions(state).await;
        result
    }

    /// Reads the exceptions files again (a file whose text is unchanged is
    /// not parsed again), keeps the last good version of a file with an
    /// error and reports its problems once, swaps the new set in, and
    /// reports each expired entry once.
    async fn refresh_exceptions(&self, state: &mut State) {
        let today = Date::today();
        let limits = self.exceptions_config.limits(today);
        let sources =
            exceptions::Source::all(&self.source.root(), self.exceptions_config.file.as_deref());
        let files = std::mem::take(&mut state.exception_files);
        let refreshed =
            tokio::task::spawn_blocking(move || refresh_files(files, &sources, limits)).await;
        let (files, changed, problems) = match refreshed {
            Ok(refreshed) => refreshed,
            Err(e) => {
                tracing::error!(error = %e, "reading the exceptions files failed; the last ones stay");
                return;
            }
        };
        state.exception_files = files;
        for problem in &problems {
            self.metrics.exceptions_load_failures.inc();
            tracing::error!(file = %problem.file.display(), line = problem.line, "{}", problem.message);
            self.record_once(
                state,
                format!("(exceptions)\n{problem}"),
                "exceptions",
                VerdictKind::Malformed,
                format!(
                    "exceptions file: {problem}; the file's last good version stays in use \
                     (none if it never loaded)"
                ),
            )
            .await;
        }
        if changed {
            let entries: Vec<Exception> = state
                .exception_files
                .iter()
                .flat_map(|f| f.last_good.iter().cloned())
                .collect();
            tracing::info!(entries = entries.len(), "exceptions loaded");
            self.exceptions.store(Arc::new(Exceptions::new(entries)));
        }
        let live = self.exceptions.load_full();
        self.metrics.exceptions_entries.set(live.len() as i64);
        let expired: Vec<&Exception> = live.expired(today).collect();
        self.metrics.exceptions_expired.set(expired.len() as i64);
        for e in expired {
            let reason = format!(
                "exception {} (owner {}: {}) expired on {}: it no longer excepts anything; \
                 renew it (a later `expires`) or remove it",
                e.location(),
                e.owner,
                crate::event::excerpt(&e.reason),
                e.expires
            );
            // Keyed by what the entry accepts and until when: moving it
            // reports nothing new, renewing it and letting it lapse again does.
            self.record_once(
                state,
                format!("(expired)\n{}", e.key()),
                "exception-expired",
                VerdictKind::ExceptionExpired,
                reason,
            )
            .await;
        }
    }

    async fn try_reload(&self, state: &mut State, force: bool) -> Result<Outcome, ReloadError> {
        let version = self.source.sync(&self.budget).await?;
        state.last_sync = Some(Instant::now());
        let live = self.index.load_full();
        if !force && state.version.as_ref() == Some(&version) {
            return Ok(Outcome {
                changed: false,
                generation: live.generation(),
                commit: live.commit().map(str::to_owned),
                kept: Vec::new(),
                excluded: Vec::new(),
            });
        }
        let set = load(&self.source, &version, &self.budget).await?;
        let (set, lists) = keep_last_good(set, &mut state.last_good);
        let built = build(set.clone(), live.generation() + 1).await?;
        // Children are facts about digests, valid whatever the manifests
        // say now: carry them over instead of reading them again.
        let index = built.with_children(self.index.load().children().clone());
        let generation = index.generation();
        let commit = index.commit().map(str::to_owned);
        self.index.store(Arc::new(index));
        state.version = Some(version);
        self.observe(&set, &lists);
        for problem in set.errors() {
            if let Some(project) = &problem.project {
                self.report(state, project, &problem.to_string()).await;
            }
        }
        tracing::info!(generation, commit, kept = ?lists.0, excluded = ?lists.1, "manifests reloaded");
        Ok(Outcome {
            changed: true,
            generation,
            commit,
            kept: lists.0,
            excluded: lists.1,
        })
    }

    /// Before a negative verdict becomes a finding: if the set comes from
    /// git and nobody synced since the event was received, sync now (at
    /// most once per `refresh_min_interval`; concurrent callers share one
    /// sync). True when a newer index is live than the caller's.
    pub async fn refresh_before_reject(&self, received: Instant, generation: u64) -> bool {
        if !self.source.is_git() {
            return false;
        }
        let mut state = self.state.lock().await;
        let synced_since = state.last_sync.is_some_and(|t| t >= received);
        let too_soon = state
            .last_sync
            .is_some_and(|t| t.elapsed() < self.refresh_min_interval);
        if !synced_since && !too_soon {
            // Errors are logged and reported by reload; the verdict then
            // stands on the live index.
            let _ = self.reload_locked(&mut state, false).await;
        }
        self.index.load().generation() != generation
    }

    /// Polls the source every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            // Failures are logged, counted and reported inside.
            let _ = self.reload(false).await;
        }
    }

    fn observe(&self, set: &ManifestSet, lists: &(Vec<String>, Vec<String>)) {
        let index = self.index.load();
        self.metrics.observe_index(&index);
        self.metrics
            .index_last_load_seconds
            .set(now_ms() as f64 / 1000.0);
        self.metrics
            .manifest_load_failures
            .inc_by((lists.0.len() + lists.1.len()) as u64);
        for problem in &set.problems {
            if problem.severity == Severity::Error {
                tracing::error!(file = %problem.file.display(), line = problem.line,
                    project = problem.project, "{}", problem.message);
            } else {
                tracing::warn!(file = %problem.file.display(), line = problem.line,
                    project = problem.project, "{}", problem.message);
            }
        }
    }

    /// Records one finding for a breakage not reported yet.
    async fn report(&self, state: &mut State, project: &str, text: &str) {
        let reason = format!(
            "project {project}: {text}; {}",
            if project.starts_with('(') {
                "the previous index stays in use"
            } else {
                "its last good version stays in use (or it is left out if it never loaded)"
            }
        );
        self.record_once(
            state,
            format!("{project}\n{text}"),
            &format!("manifests:{project}"),
            VerdictKind::Malformed,
            reason,
        )
        .await;
    }

    /// Records, from the source `manifests`, a finding with `verdict` and
    /// `reason` once per `key` in this process (and once ever: its event id
    /// derives from the key, so the store answers a repeat as a duplicate).
    async fn record_once(
        &self,
        state: &mut State,
        key: String,
        id_prefix: &str,
        verdict: VerdictKind,
        reason: String,
    ) {
        if !state.reported.insert(key.clone()) {
            return;
        }
        let id = crate::reference::Digest::sha256_of(key.as_bytes()).to_string();
        let index = self.index.load();
        let malformed = Malformed::new(
            EventId(format!("{id_prefix}:{}", &id["sha256:".len()..][..16])),
            Source::Manifests,
            reason,
        );
        let mut decision = Decision::of_malformed(
            &malformed,
            &EndpointName::only(),
            now_ms(),
            index.commit().map(str::to_owned),
            index.generation(),
        );
        decision.verdict = verdict;
        match record_queued(&*self.store, decision).await {
            Ok(recorded) => {
                if matches!(recorded, Recorded::New { .. }) && verdict != VerdictKind::Malformed {
                    self.metrics
                        .recorded(Source::Manifests.as_str(), "unknown", verdict.as_str());
                }
            }
            Err(e) => {
                // Not reported after all: try again at the next reload.
                state.reported.remove(&key);
                tracing::error!(error = %e, key, "cannot record the manifest finding");
            }
        }
    }
}

/// Reads every exceptions source (blocking): each file's new state, whether
/// the entries changed, and the problems of files that changed into
/// something invalid (a file seen as before is neither parsed nor reported
/// again).
fn refresh_files(
    mut old: Vec<ExceptionsFile>,
    sources: &[exceptions::Source],
    limits: exceptions::Limits,
) -> (Vec<ExceptionsFile>, bool, Vec<crate::manifest::Problem>) {
    let mut changed = old.len() != sources.len();
    let mut problems = Vec::new();
    let mut files = Vec::with_capacity(sources.len());
    for source in sources {
        let mut file = match old.iter().position(|f| f.source.as_ref() == Some(source)) {
            Some(i) => old.swap_remove(i),
            None => {
                changed = true;
                ExceptionsFile {
                    source: Some(source.clone()),
                    ..ExceptionsFile::default()
                }
            }
        };
        let read = exceptions::read_text(&source.path, source.in_tree);
        let seen = match &read {
            Ok(Some(text)) => Seen::Text(crate::reference::Digest::sha256_of(text.as_bytes())),
            Ok(None) => Seen::Missing,
            Err(p) => Seen::Unreadable(p.iter().map(ToString::to_string).collect()),
        };
        if file.seen.as_ref() == Some(&seen) {
            files.push(file);
            continue;
        }
        file.seen = Some(seen);
        match read {
            Ok(Some(text)) => match exceptions::parse(&source.path.as_path().into(), &text, limits)
            {
                Ok(entries) => {
                    changed |= entries != file.last_good;
                    file.last_good = entries;
                }
                Err(mut p) => problems.append(&mut p),
            },
            // Removed from the tree: so are its entries.
            Ok(None) if source.in_tree => {
                changed |= !file.last_good.is_empty();
                file.last_good.clear();
            }
            Ok(None) => problems.extend(source.read(limits).err().unwrap_or_default()),
            Err(mut p) => problems.append(&mut p),
        }
        files.push(file);
    }
    (files, changed, problems)
}

/// Marks a reload as running for as long as it lives: a caller that gives
/// up (an HTTP request timing out) drops the reload, and must not leave it
/// marked running forever.
struct Running<'a>(&'a std::sync::Mutex<Option<Instant>>);

impl<'a> Running<'a> {
    fn start(since: &'a std::sync::Mutex<Option<Instant>>) -> Self {
        *since.lock().expect("never poisoned") = Some(Instant::now());
        Running(since)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.lock().expect("never poisoned") = None;
    }
}

async fn load(
    source: &ManifestOrigin,
    version: &Version,
    budget: &Budget,
) -> Result<ManifestSet, ReloadError> {
    let root = source.root();
    let commit = version.commit().map(str::to_owned);
    let budget = *budget;
    tokio::task::spawn_blocking(move || {
        manifest::load_within(&root, &budget).map(|mut set| {
            set.commit = commit;
            set
        })
    })
    .await
    .map_err(|e| ReloadError::Task(e.to_string()))?
    .map_err(ReloadError::from)
}

async fn build(set: ManifestSet, generation: u64) -> Result<Index, ReloadError> {
    tokio::task::spawn_blocking(move || Index::build(&set, generation))
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))
}

/// Puts the last good version of every excluded project back into `set`,
/// and remembers the valid ones. Returns the set and (kept, excluded).
fn keep_last_good(
    mut set: ManifestSet,
    last_good: &mut HashMap<String, Manifest>,
) -> (ManifestSet, (Vec<String>, Vec<String>)) {
    for manifest in &set.manifests {
        last_good.insert(manifest.project.clone(), manifest.clone());
    }
    let mut kept = Vec::new();
    let mut excluded = Vec::new();
    let mut still_excluded = Vec::new();
    for x in std::mem::take(&mut set.excluded) {
        match last_good.get(&x.project) {
            Some(good) => {
                kept.push(x.project.clone());
                set.manifests.push(good.clone());
            }
            None => {
                excluded.push(x.project.clone());
                still_excluded.push(x);
            }
        }
    }
    set.excluded = still_excluded;
    (set, (kept, excluded))
}
