//! The inventory sweep (`scan`): what registries hold, compared with what
//! the manifests promise, for the events that were missed.
//!
//! For each target registry prefix, the repositories to visit are those the
//! manifests name under it (plus, optionally, what `/v2/_catalog` lists
//! under its path). In each repository:
//!
//! - every tag, resolved to its digest, is an `Insert` observation audited
//!   by the normal verdicts (id `scan:<repository>:<tag>@<digest>`, stable,
//!   so a second sweep is a duplicate);
//! - every promise of the repository that the listing does not show (a tag
//!   not listed; an untagged promoted digest that a `HEAD` by digest does
//!   not find) is an `Absent` observation, which the audit calls `missing`.
//!
//! Observations go through the one [`Pipeline`]; the sweep never decides.
//! Which repositories to visit and what is absent are pure functions here;
//! the I/O is in [`Sweep::run`]. A registry error makes the repository
//! undecided for this sweep (no observation of absence is made from an
//! incomplete listing); it is visited again by the next sweep.
//!
//! A checkpoint lists the repositories the current sweep completed, so an
//! interrupted sweep resumes where it stopped; a completed sweep removes
//! it. It is a file in the state directory, or, on a store shared by
//! replicas, a row of the store, so any replica resumes it
//! ([`checkpoint`]). One sweep runs at a time among every process on the
//! store: a sweep holds the store lock [`SWEEP_LOCK`] while it runs.
//!
//! Over 500 lines: the pure planning (what to visit, what is absent) and its
//! table tests sit beside the sweep loop they feed; the checkpoint is in
//! `scan/checkpoint.rs`.

mod checkpoint;

pub use checkpoint::CheckpointAt;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::audit::VerdictKind;
use crate::event::{Action, EndpointName, Event, EventId, Source};
use crate::findings::{StoreError, StoreLock, off_thread};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};
use crate::registry::{DEFAULT_PAGE_SIZE, RegistryClient};
use crate::sources::{Delivery, Disposition};

/// The checkpoint's file name in the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// The store lock a sweep holds while it runs, and the name of its
/// checkpoint in the store.
pub const SWEEP_LOCK: &str = "scan";

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Also visit every repository `/v2/_catalog` lists under each target.
    pub catalog: bool,
    /// Ignore a checkpoint and start a new sweep.
    pub restart: bool,
    /// Where the checkpoint lives.
    pub checkpoint: CheckpointAt,
    /// Entries per page of `_catalog` and `tags/list`.
    pub page_size: usize,
    /// Stop after visiting this many repositories in this run (the sweep
    /// stays incomplete and resumes next run): a budget per run, and how
    /// tests interrupt a sweep.
    pub max_repositories: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            catalog: false,
            restart: false,
            checkpoint: CheckpointAt::Nowhere,
            page_size: DEFAULT_PAGE_SIZE,
            max_repositories: None,
        }
    }
}

/// One new finding a sweep made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ScanFinding {
    pub verdict: VerdictKind,
    pub repository: String,
    pub digest: Option<String>,
    pub tag: Option<String>,
}

/// What one run of a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub sweep_id: String,
    /// This run continued a sweep a checkpoint recorded.
    pub resumed: bool,
    /// Every repository of the sweep was visited (the checkpoint is gone).
    pub complete: bool,
    /// Repositories visited in this run.
    pub repositories: usize,
    /// Repositories skipped because an earlier run of this sweep completed them.
    pub skipped: usize,
    /// Repositories where a registry error (or an undecided verdict) left
    /// something unknown: visited again by the next sweep.
    pub undecided_repositories: Vec<String>,
    /// Tags listed in the visited repositories.
    pub tags: usize,
    /// Manifest requests made (`HEAD`/`GET` by tag, `HEAD` by digest), not
    /// counting retries.
    pub manifest_requests: usize,
    /// Listing pages fetched (`_catalog`, `tags/list`).
    pub list_requests: usize,
    /// Decisions by verdict, duplicates included.
    pub verdicts: BTreeMap<String, usize>,
    /// Observations whose id was already recorded (an earlier sweep).
    pub duplicates: usize,
    /// New findings (alerting verdicts not recorded before), excepted ones
    /// not included.
    pub findings: Vec<ScanFinding>,
    /// New findings an exceptions entry covered: recorded, not alerted.
    pub excepted: usize,
    /// Absent observations (promises not found), duplicates included.
    pub missing: usize,
    /// Registry and store errors, each naming the repository or URL.
    pub errors: Vec<String>,
}

/// Why a sweep could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("checkpoint {path}: {source}")]
    Checkpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scan checkpoint in the findings store: {0}")]
    CheckpointStore(StoreError),
    /// Another process on the store is sweeping: this sweep did not start.
    #[error("another sweep is running on this findings store; this one did not start")]
    Busy,
    #[error("taking the sweep lock: {0}")]
    Lock(StoreError),
}

/// The checkpoint of an incomplete sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub sweep_id: String,
    /// The targets and mode it sweeps: a checkpoint of other targets is
    /// not resumed.
    pub targets: Vec<String>,
    pub catalog: bool,
    /// Repositories completed, in visiting order.
    pub completed: Vec<String>,
}

// ------------------------------------------------------------ pure logic

/// Every destination prefix of every loaded manifest, sorted.
pub fn default_targets(index: &Index) -> Vec<RegistryPrefix> {
    let mut seen = BTreeSet::new();
    for image in index.images() {
        let manifest = index.manifest(index.image_manifest(image));
        seen.extend(manifest.destinations.iter().cloned());
    }
    seen.into_iter().collect()
}

/// The repositories the manifests name under `prefix`: `prefix/<image>` for
/// each image of each manifest with that destination. Sorted.
pub fn named_repositories(index: &Index, prefix: &RegistryPrefix) -> Vec<Repository> {
    let mut out = BTreeSet::new();
    for image in index.images() {
        let manifest = index.manifest(index.image_manifest(image));
        if manifest.destinations.contains(prefix)
            && let Ok(repo) = Repository::join(prefix, index.image_name(image))
        {
            out.insert(repo);
        }
    }
    out.into_iter().collect()
}

/// The catalog entries (repository paths of `prefix`'s host) under
/// `prefix`'s path, as repositories. Split at `/` only: a prefix `a/b`
/// does not take `a/bc`.
pub fn catalog_repositories(prefix: &RegistryPrefix, names: &[String]) -> Vec<Repository> {
    let host = prefix.host();
    let path = prefix.as_str()[host.len()..].trim_start_matches('/');
    names
        .iter()
        .filter(|name| {
            path.is_empty()
                || name
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
        })
        .filter_map(|name| format!("{host}/{name}").parse().ok())
        .collect()
}

/// One promise at a repository: a directly promoted digest and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    pub digest: Digest,
    pub tags: Vec<Tag>,
}

/// What the manifests promise at `repository`: the direct promotions of
/// every image that claims it (children are present whenever their parent
/// is, and are not listed by tag).
pub fn promises_at(index: &Index, repository: &Repository) -> Vec<Promise> {
    let claims = index.claims(repository);
    let mut out: Vec<Promise> = Vec::new();
    for &image in &claims.images {
        for p in index.image_promotions(image) {
            let digest = index.promotion_digest(p).clone();
            let tags: Vec<Tag> = index
                .promotion_tags(p)
                .filter_map(|t| t.parse().ok())
                .collect();
            match out.iter_mut().find(|q| q.digest == digest) {
                Some(q) => {
                    for t in tags {
                        if !q.tags.contains(&t) {
                            q.tags.push(t);
                        }
                    }
                }
                None => out.push(Promise { digest, tags }),
            }
        }
    }
    out
}

/// What a repository's listing shows as absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Absences {
    /// Promised tags not listed at all, with the digest promised to them.
    /// (A tag listed for another digest is `tag_moved` from its own
    /// observation, not absent.)
    pub tags: Vec<(Tag, Digest)>,
    /// Untagged promoted digests no listed tag points to: check each with a
    /// `HEAD` by digest.
    pub check_by_digest: Vec<Digest>,
}

/// Compares `promises` with what the listing `observed` (tag → digest).
pub fn absences(promises: &[Promise], observed: &BTreeMap<Tag, Digest>) -> Absences {
    let present: HashSet<&Digest> = observed.values().collect();
    let mut out = Absences::default();
    for promise in promises {
        if promise.tags.is_empty() {
            if !present.contains(&promise.digest) {
                out.check_by_digest.push(promise.digest.clone());
            }
            continue;
        }
        for tag in &promise.tags {
            if !observed.contains_key(tag) {
                out.tags.push((tag.clone(), promise.digest.clone()));
            }
        }
    }
    out
}

/// The stable id of an observation: the same content seen by another sweep
/// is a duplicate.
pub fn observation_id(
    action: Action,
    repository: &Repository,
    tag: Option<&Tag>,
    digest: &Digest,
) -> EventId {
    let kind = match action {
        Action::Absent => "scan-absent",
        Action::Insert | Action::Delete => "scan",
    };
    EventId(match tag {
        Some(tag) => format!("{kind}:{repository}:{tag}@{digest}"),
        None => format!("{kind}:{repository}@{digest}"),
    })
}

/// Whether the sweep lock is still held: on PostgreSQL it goes with its
/// connection, and a sweep that lost it stops (another may have started).
async fn still_held(lock: &Arc<StoreLock>) -> bool {
    let lock = lock.clone();
    let held = tokio::task::spawn_blocking(move || lock.is_held())
        .await
        .unwrap_or(false);
    if !held {
        tracing::warn!("lost the sweep lock (store connection gone); stopping this sweep");
    }
    held
}

fn new_sweep_id() -> String {
    format!("{}-{}", crate::findings::now_ms(), std::process::id())
}

// ------------------------------------------------------------ the sweep

/// The sweep and what it needs: the pipeline to decide and record, the
/// live index, and the registry client (its budgets rate-limit the sweep).
pub struct Sweep<'a> {
    pub pipeline: &'a Pipeline,
    pub index: &'a Arc<ArcSwap<Index>>,
    pub client: &'a RegistryClient,
    /// `scan_*` metrics, when the caller exports them.
    pub metrics: Option<&'a Metrics>,
}

/// Runs one sweep (or continues one) over `targets`; empty targets mean
/// every destination prefix of the index. What `serve` calls periodically.
pub async fn sweep(
    pipeline: &Pipeline,
    index: &Arc<ArcSwap<Index>>,
    client: &RegistryClient,
    targets: &[RegistryPrefix],
    options: &Options,
    metrics: Option<&Metrics>,
) -> Result<Summary, ScanError> {
    Sweep {
        pipeline,
        index,
        client,
        metrics,
    }
    .run(targets, options, |_, _| {})
    .await
}

/// What one repository's visit found, before counting.
#[derive(Default)]
struct Visit {
    undecided: bool,
}

impl Sweep<'_> {
    /// Runs the sweep; `progress` is called with (repositories done, total).
    pub async fn run(
        &self,
        targets: &[RegistryPrefix],
        options: &Options,
        progress: impl Fn(usize, usize),
    ) -> Result<Summary, ScanError> {
        let index = self.index.load_full();
        let targets: Vec<RegistryPrefix> = if targets.is_empty() {
            default_targets(&index)
        } else {
            targets.to_vec()
        };
        let target_names: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let mut summary = Summary::default();
        let store = self.pipeline.store();
        let lock = match off_thread(store, |s| s.try_lock(SWEEP_LOCK)).await {
            Ok(Some(lock)) => Arc::new(lock),
            Ok(None) => return Err(ScanError::Busy),
            Err(e) => return Err(ScanError::Lock(e)),
        };
        let at = &options.checkpoint;

        let mut checkpoint = match at.read(store).await? {
            Some(c) if !options.restart => {
                Some(c).filter(|c| c.targets == target_names && c.catalog == options.catalog)
            }
            _ => None,
        };
        summary.resumed = checkpoint.is_some();
        let checkpoint = checkpoint.get_or_insert_with(|| Checkpoint {
            sweep_id: new_sweep_id(),
            targets: target_names.clone(),
            catalog: options.catalog,
            completed: Vec::new(),
        });
        summary.sweep_id = checkpoint.sweep_id.clone();

        // The plan: every repository once, whichever targets name it.
        let mut plan: Vec<Repository> = Vec::new();
        let mut planned = HashSet::new();
        let mut catalogs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &targets {
            let mut repositories = named_repositories(&index, prefix);
            if options.catalog {
                let host = prefix.host().to_owned();
                if !catalogs.contains_key(&host) {
                    match self.client.catalog(&host, options.page_size).await {
                        Ok(listing) => {
                            summary.list_requests += listing.pages;
                            catalogs.insert(host.clone(), listing.items);
                        }
                        Err(e) => {
                            summary.errors.push(e.to_string());
                            catalogs.insert(host.clone(), Vec::new());
                        }
                    }
                }
                repositories.extend(catalog_repositories(prefix, &catalogs[&host]));
            }
            for r in repositories {
                if planned.insert(r.clone()) {
                    plan.push(r);
                }
            }
        }

        let completed: HashSet<String> = checkpoint.completed.iter().cloned().collect();
        let total = plan.len();
        let mut done = 0;
        let mut interrupted = false;
        for repository in &plan {
            if completed.contains(repository.as_str()) {
                summary.skipped += 1;
                done += 1;
                progress(done, total);
                continue;
            }
            if options
                .max_repositories
                .is_some_and(|max| summary.repositories >= max)
                || !still_held(&lock).await
            {
                interrupted = true;
                break;
            }
            let visit = self.visit(repository, options, &mut summary).await;
            summary.repositories += 1;
            if let Some(m) = self.metrics {
                m.scan_repositories.inc();
            }
            if visit.undecided {
                summary.undecided_repositories.push(repository.to_string());
            } else {
                checkpoint.completed.push(repository.to_string());
                at.write(store, checkpoint).await?;
            }
            done += 1;
            progress(done, total);
        }

        summary.complete = !interrupted;
        if interrupted {
            at.write(store, checkpoint).await?;
        } else {
            at.remove(store).await?;
        }
        drop(lock);
        if let Some(m) = self.metrics {
            m.scan_findings.inc_by(summary.findings.len() as u64);
            if summary.complete {
                m.scan_last_completed_seconds
                    .set(crate::findings::now_ms() as f64 / 1000.0);
            }
        }
        summary.findings.sort();
        Ok(summary)
    }

    async fn visit(
        &self,
        repository: &Repository,
        options: &Options,
        summary: &mut Summary,
    ) -> Visit {
        let mut visit = Visit::default();
        let tags = match self.client.tags(repository, options.page_size).await {
            Ok(listing) => {
                summary.list_requests += listing.pages;
                listing.items
            }
            // The registry does not know the repository: nothing is there.
            Err(e) if e.is_not_found() => {
                summary.list_requests += 1;
                Vec::new()
            }
            Err(e) => {
                summary.list_requests += 1;
                summary.errors.push(e.to_string());
                visit.undecided = true;
                return visit;
            }
        };
        summary.tags += tags.len();

        let mut observed = BTreeMap::new();
        for tag in tags {
            summary.manifest_requests += 1;
            match self.client.resolve_tag(repository, &tag).await {
                Ok(digest) => {
                    observed.insert(tag, digest);
                }
                // Deleted between the listing and now.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    summary.errors.push(e.to_string());
                    visit.undecided = true;
                }
            }
        }

        for (tag, digest) in &observed {
            let ok = self
                .observe(Action::Insert, repository, Some(tag), digest, summary)
                .await;
            visit.undecided |= !ok;
        }

        // Absence can only be concluded from a complete listing.
        if visit.undecided {
            return visit;
        }
        let promises = promises_at(&self.index.load(), repository);
        let absent = absences(&promises, &observed);
        for (tag, digest) in &absent.tags {
            let ok = self
                .observe(Action::Absent, repository, Some(tag), digest, summary)
                .await;
            visit.undecided |= !ok;
        }
        for digest in &absent.check_by_digest {
            summary.manifest_requests += 1;
            match self.client.manifest_exists(repository, digest).await {
                Ok(true) => {}
                Ok(false) => {
                    let ok = self
                        .observe(Action::Absent, repository, None, digest, summary)
                        .await;
                    visit.undecided |= !ok;
                }
                Err(e) => {
                    summary.errors.push(e.to_string());
                    visit.undecided = true;
                }
            }
        }
        visit
    }

    /// Hands one observation to the pipeline and counts the answer; false
    /// when nothing final was recorded (undecided, or the store failed).
    async fn observe(
        &self,
        action: Action,
        repository: &Repository,
        tag: Option<&Tag>,
        digest: &Digest,
        summary: &mut Summary,
    ) -> bool {
        let id = observation_id(action, repository, tag, digest);
        let event = Event {
            id: id.clone(),
            source: Source::Scan,
            action,
            repository: repository.clone(),
            digest: Some(digest.clone()),
            tag: tag.cloned(),
        };
        let handled = self
            .pipeline
            .handle(Delivery {
                source: Source::Scan,
                // Observation ids name the repository: one scope is enough.
                endpoint: EndpointName::only(),
                id: id.clone(),
                decoded: Ok(event),
            })
            .await;
        if action == Action::Absent {
            summary.missing += 1;
        }
        if let Some(verdict) = handled.verdict {
            *summary
                .verdicts
                .entry(verdict.as_str().to_owned())
                .or_default() += 1;
            if handled.excepted {
                summary.excepted += 1;
            } else if !handled.duplicate
                && verdict.alerts()
                && handled.disposition == Disposition::Ack
            {
                summary.findings.push(ScanFinding {
                    verdict,
                    repository: repository.to_string(),
                    digest: Some(digest.to_string()),
                    tag: tag.map(ToString::to_string),
                });
            }
        }
        if handled.duplicate {
            summary.duplicates += 1;
        }
        match handled.disposition {
            Disposition::Ack => true,
            Disposition::Retry => {
                if handled.verdict.is_none() {
                    summary
                        .errors
                        .push(format!("{id}: the decision could not be recorded"));
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::fixtures::{d, t};

    #[test]
    fn catalog_entries_are_taken_under_the_prefix_path_only() {
        let names: Vec<String> = ["prod/a", "prod/b/c", "prodx/a", "prod", "other/prod/a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let prefix: RegistryPrefix = "r.example:5000/prod".parse().unwrap();
        let got: Vec<String> = catalog_repositories(&prefix, &names)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, ["r.example:5000/prod/a", "r.example:5000/prod/b/c"]);
        let root: RegistryPrefix = "r.example:5000".parse().unwrap();
        assert_eq!(catalog_repositories(&root, &names).len(), names.len());
    }

    #[test]
    fn absences_report_unlisted_tags_and_unseen_untagged_digests() {
        let promises = vec![
            Promise {
                digest: d(1),
                tags: vec![t("v1"), t("latest")],
            },
            Promise {
                digest: d(2),
                tags: vec![],
            },
            Promise {
                digest: d(3),
                tags: vec![],
            },
            Promise {
                digest: d(4),
                tags: vec![t("v4")],
            },
        ];
        let observed = BTreeMap::from([
            (t("v1"), d(1)),
            // Moved: tag_moved from its own observation, not absent.
            (t("v4"), d(9)),
            // An untagged promise seen under some tag is present.
            (t("other"), d(3)),
        ]);
        let got = absences(&promises, &observed);
        assert_eq!(got.tags, vec![(t("latest"), d(1))]);
        assert_eq!(got.check_by_digest, vec![d(2)]);
        assert_eq!(absences(&promises, &observed), got, "pure");
        assert_eq!(absences(&[], &observed), Absences::default());
    }

    #[test]
    fn observation_ids_are_stable_and_distinct() {
        let repo: Repository = "r.example/prod/a".parse().unwrap();
        let a = observation_id(Action::Insert, &repo, Some(&t("v1")), &d(1));
        assert_eq!(
            a,
            observation_id(Action::Insert, &repo, Some(&t("v1")), &d(1))
        );
        assert_eq!(a.0, format!("scan:r.example/prod/a:v1@{}", d(1)));
        assert_ne!(
            a,
            observation_id(Action::Absent, &repo, Some(&t("v1")), &d(1))
        );
        assert_ne!(
            observation_id(Action::Absent, &repo, None, &d(1)),
            observation_id(Action::Absent, &repo, Some(&t("v1")), &d(1))
        );
    }
}
