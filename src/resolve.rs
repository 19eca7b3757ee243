//! Resolution: reading what promoted digests contain, so that the children of
//! manifest lists and attachments are explained (docs/design.md §5.2).
//!
//! The [`Resolver`] owns everything learnt so far ([`Children`]) and hands out
//! new [`Index`] values that share the promotions and carry the new children;
//! it never mutates an index a reader holds. Registry access goes through
//! [`RegistryClient`], whose cache makes a warm restart cost no requests.

use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::audit::{Audit, ListedChild, Policy, PushedList, Verdict, audit, audit_attachment};
use crate::event::Event;
use crate::index::{Children, ImageId, Index};
use crate::reference::{Digest, Repository, Tag};
use crate::registry::{
    IndexChild, Pushed, RegistryClient, RegistryError, read_pushed, resolve_children,
};

/// Lists read at once; the client's rate limits still apply on top.
const CONCURRENCY: usize = 8;

/// What one resolution did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// Promoted digests read (from the cache or a registry).
    pub digests: usize,
    /// Of those, manifest lists or indexes (nested ones included).
    pub lists: usize,
    /// (child, parent) links learnt.
    pub children: usize,
    /// Digests that could not be read, with why.
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub digest: Digest,
    pub error: String,
    pub unread: Unread,
}

/// What a failed read says about what the promoted digest lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unread {
    /// Every repository asked said it does not exist: it lists nothing the
    /// auditor could find, so a verdict may stand without it.
    Absent,
    /// No answer came (network, timeout, `429`, `5xx`, credentials): asking
    /// again may succeed.
    Unanswered,
    /// An answer came but proves nothing (a body that does not hash to the
    /// digest, over the size cap, unparseable, of an unknown type, lists
    /// nested too deep): the list may well hold the event's digest.
    Untrustworthy,
}

impl Unread {
    fn of(e: &RegistryError) -> Self {
        if e.is_transient() {
            Unread::Unanswered
        } else if e.is_not_found() {
            Unread::Absent
        } else {
            Unread::Untrustworthy
        }
    }

    /// Why nothing was learnt, for a verdict's reason.
    fn why(self) -> &'static str {
        match self {
            Unread::Absent => "not found",
            Unread::Unanswered => "no answer",
            Unread::Untrustworthy => "the registry's answer cannot be trusted",
        }
    }
}

impl Summary {
    /// The first failure a verdict cannot stand without.
    fn first_inconclusive(&self) -> Option<&Failure> {
        self.failures.iter().find(|f| f.unread != Unread::Absent)
    }
}

pub struct Resolver {
    client: RegistryClient,
    children: Mutex<Arc<Children>>,
}

impl Resolver {
    pub fn new(client: RegistryClient) -> Self {
        Self {
            client,
            children: Mutex::default(),
        }
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// `index` with every child learnt so far (e.g. after a manifest reload,
    /// so resolved children carry over instead of being fetched again).
    pub fn attach(&self, index: &Index) -> Index {
        index.with_children(self.children.lock().expect("not poisoned").clone())
    }

    /// Reads every promoted digest of the index not read yet. `progress` is
    /// called with (done, total) as digests complete.
    pub async fn resolve_all(
        &self,
        index: &Index,
        progress: impl Fn(usize, usize),
    ) -> (Index, Summary) {
        let images: Vec<ImageId> = index
            .images()
            .filter(|&i| !index.image_resolved(i))
            .collect();
        self.resolve_images(index, &images, progress).await
    }

    /// Reads the unread promoted digests of `images`, each from the source
    /// registry first and then the destinations, and returns `index` with
    /// what was learnt.
    pub async fn resolve_images(
        &self,
        index: &Index,
        images: &[ImageId],
        progress: impl Fn(usize, usize),
    ) -> (Index, Summary) {
        let mut work: Vec<(Arc<[Repository]>, Digest)> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for &image in images {
            let parents = index.parents_to_resolve(image);
            let repositories: Arc<[Repository]> = parents.repositories.into();
            for digest in parents.digests {
                match seen.entry(digest.clone()) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(work.len());
                        work.push((repositories.clone(), digest));
                    }
                    // Promoted by several images: read once, but from any of
                    // their repositories (one image's may not have it yet).
                    // Only shared digests pay for a merged list.
                    std::collections::hash_map::Entry::Occupied(o) => {
                        let candidates = &mut work[*o.get()].0;
                        let extra: Vec<&Repository> = repositories
                            .iter()
                            .filter(|r| !candidates.contains(r))
                            .collect();
                        if !extra.is_empty() {
                            *candidates = candidates.iter().chain(extra).cloned().collect();
                        }
                    }
                }
            }
        }
        let total = work.len();
        let mut results = stream::iter(work)
            .map(|(repositories, digest)| async move {
                let result = resolve_children(&self.client, &repositories, &digest).await;
                (digest, result)
            })
            .buffer_unordered(CONCURRENCY);

        let mut summary = Summary::default();
        let mut learnt: Vec<(Digest, Vec<(Digest, Digest)>)> = Vec::new();
        while let Some((digest, result)) = results.next().await {
            summary.digests += 1;
            progress(summary.digests, total);
            match result {
                Ok(links) => learnt.push((
                    digest,
                    links.into_iter().map(|l| (l.parent, l.child)).collect(),
                )),
                Err(e) => summary.failures.push(failure(digest, &e)),
            }
        }
        drop(results);

        let mut guard = self.children.lock().expect("not poisoned");
        let children = Arc::make_mut(&mut guard);
        for (digest, links) in learnt {
            // Every list under `digest`, itself included, is recorded with its
            // own entries so nested children reach the promoted parent.
            let mut lists: Vec<&Digest> = links.iter().map(|(parent, _)| parent).collect();
            lists.sort();
            lists.dedup();
            summary.lists += lists.len();
            summary.children += links.len();
            if !lists.contains(&&digest) {
                children.record(&digest, []);
            }
            for list in lists {
                let entries = links
                    .iter()
                    .filter(|(p, _)| p == list)
                    .map(|(_, c)| c.clone());
                children.record(list, entries);
            }
        }
        let index = index.with_children(guard.clone());
        (index, summary)
    }

    /// Audits `event`, resolving whatever the verdict depends on first (the
    /// digest a tag-only event's tag points to, promoted lists, the pushed
    /// manifest), and returns a final verdict (no `pending`) and the index it
    /// was decided on. A registry that cannot be reached, or whose answer
    /// cannot be trusted, makes the verdict `undecided`: neither says what a
    /// tag or a list holds.
    pub async fn settle(&self, index: &Index, event: &Event, policy: &Policy) -> (Index, Audit) {
        let index = self.attach(index);
        let result = audit(&index, event, policy);
        match (&result.pending, &event.tag) {
            (Some(p), Some(tag)) if p.tag_target => {
                self.settle_tag(index, event, tag, policy).await
            }
            _ => self.settle_reads(index, event, policy, result).await,
        }
    }

    /// The event names only a tag that R promises: the digest the tag points
    /// to now is read and judged as if the event had named it (the event
    /// keeps its identity; the reason says which digest was read). The
    /// registry is asked every time: a tag can move, so it is never cached.
    async fn settle_tag(
        &self,
        index: Index,
        event: &Event,
        tag: &Tag,
        policy: &Policy,
    ) -> (Index, Audit) {
        let digest = match self.client.resolve_tag(&event.repository, tag).await {
            Ok(digest) => digest,
            // Not even "not found" decides: the tag may have been removed
            // since (its delete is an event of its own) or not be visible
            // yet, and what was pushed under it is unknown either way.
            Err(e) => {
                return (
                    index,
                    undecided(format!(
                        "cannot read which digest tag {tag} of {} points to ({}): {e}",
                        event.repository,
                        Unread::of(&e).why()
                    )),
                );
            }
        };
        let pinned = Event {
            digest: Some(digest.clone()),
            ..event.clone()
        };
        let result = audit(&index, &pinned, policy);
        let (index, mut result) = self.settle_reads(index, &pinned, policy, result).await;
        result.verdict.reason = format!(
            "tag {tag} points to {digest} (read from the registry): {}",
            result.verdict.reason
        );
        (index, result)
    }

    /// Reads what `result` is pending on (the promoted lists at R, the
    /// pushed manifest) and audits `event` again.
    async fn settle_reads(
        &self,
        mut index: Index,
        event: &Event,
        policy: &Policy,
        mut result: Audit,
    ) -> (Index, Audit) {
        let Some(pending) = result.pending.clone() else {
            return (index, result);
        };
        let mut unread = Vec::new();
        if !pending.parents.is_empty() {
            let (resolved, summary) = self
                .resolve_images(&index, &pending.parents, |_, _| {})
                .await;
            index = resolved;
            // Only "absent everywhere" is an answer about what a list holds;
            // anything else could hide the parent of the event's digest.
            if let Some(f) = summary.first_inconclusive() {
                return (
                    index,
                    undecided(format!(
                        "cannot read promoted manifest {} ({}): {}",
                        f.digest,
                        f.unread.why(),
                        f.error
                    )),
                );
            }
            unread = summary.failures;
            result = audit(&index, event, policy);
        }
        if let (Some(p), Some(digest)) = (&result.pending, &event.digest)
            && p.event_manifest
        {
            match read_pushed(&self.client, &event.repository, digest).await {
                Ok(Pushed::Attachment { subject }) => {
                    result = audit_attachment(&index, event, &subject, policy);
                }
                Ok(Pushed::Image) => {}
                // Still unexplained, but its platform images (pushed just
                // before it, each a finding) are now known to be part of
                // this one push: the alert says so once.
                Ok(Pushed::List { children }) => {
                    result.verdict.pushed_list = Some(pushed_list(children));
                }
                // Gone already: the verdict stands on what the manifests say.
                Err(e) if e.is_not_found() => {}
                // Whether it is an attachment cannot be told from an answer
                // that never came or cannot be trusted.
                Err(e) => {
                    return (
                        index,
                        undecided(format!("cannot read the pushed manifest: {e}")),
                    );
                }
            }
        }
        // Only a violation needs the caveat: a positive verdict stands anyway.
        if !unread.is_empty() && result.verdict.kind.alerts() {
            result.verdict.reason.push_str(&format!(
                " ({} promoted digests were found in no repository asked: {})",
                unread.len(),
                unread[0].error
            ));
        }
        result.pending = None;
        (index, result)
    }
}

fn failure(digest: Digest, e: &RegistryError) -> Failure {
    Failure {
        digest,
        error: e.to_string(),
        unread: Unread::of(e),
    }
}

fn pushed_list(children: Vec<IndexChild>) -> PushedList {
    PushedList {
        children: children
            .into_iter()
            .map(|c| ListedChild {
                digest: c.digest,
                platform: c.platform.map(|p| p.to_string()),
            })
            .collect(),
    }
}

fn undecided(reason: String) -> Audit {
    Audit {
        verdict: Verdict::undecided(reason),
        pending: None,
    }
}

/// The verdict on `index`: settled through the registries when a resolver
/// exists, the audit alone otherwise. Every caller that judges one event (the
/// CLI, `POST /v1/check`, the pipeline) decides the same way through here.
/// The index comes back with the children learnt, when a resolver ran.
pub async fn audit_or_settle(
    resolver: Option<&Resolver>,
    index: &Index,
    event: &Event,
    policy: &Policy,
) -> (Option<Index>, Audit) {
    match resolver {
        Some(resolver) => {
            let (resolved, result) = resolver.settle(index, event, policy).await;
            (Some(resolved), result)
        }
        None => (None, audit(index, event, policy)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ErrorKind;

    #[test]
    fn only_absence_everywhere_is_an_answer_about_a_list() {
        let repo: Repository = "registry.example/prod/app".parse().unwrap();
        let digest = Digest::sha256_of(b"list");
        let of = |kind| Unread::of(&RegistryError::new(&repo, &digest, kind));
        assert_eq!(of(ErrorKind::NotFound), Unread::Absent);
        for kind in [
            ErrorKind::Network("connection refused".into()),
            ErrorKind::Timeout,
            ErrorKind::Server { status: 503 },
        ] {
            assert_eq!(of(kind), Unread::Unanswered);
        }
        for kind in [
            ErrorKind::DigestMismatch {
                actual: Digest::sha256_of(b"tampered"),
            },
            ErrorKind::HeaderDigestMismatch {
                header: "sha256:0".into(),
            },
            ErrorKind::TooLarge { limit: 1 },
            ErrorKind::Unparseable("{".into()),
            ErrorKind::UnsupportedMediaType("text/plain".into()),
            ErrorKind::TooDeep(crate::registry::MAX_NESTING),
            ErrorKind::UnexpectedStatus { status: 400 },
        ] {
            assert_eq!(of(kind), Unread::Untrustworthy);
        }
    }
}
