//! `fetch_manifest`: the cache first, then the registry, with concurrent
//! fetches of one digest coalesced into a single one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::client::{Inner, RegistryClient};
use super::error::RegistryError;
use super::media::{self, ManifestKind};
use super::stats::Counter;
use crate::reference::{Digest, Repository};

/// A manifest whose bytes hash to `digest`, with its parsed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub digest: Digest,
    /// The body's `mediaType`, or the OCI type its shape implies.
    pub media_type: String,
    pub kind: ManifestKind,
    /// The exact bytes, for anyone who needs more than `kind`.
    pub bytes: Bytes,
    /// Whether the bytes came from the on-disk cache rather than a request.
    pub from_cache: bool,
}

impl FetchedManifest {
    /// The manifest this one is attached to (OCI 1.1 `subject`), if any.
    pub fn subject(&self) -> Option<&Digest> {
        match &self.kind {
            ManifestKind::Image { subject } => subject.as_ref(),
            ManifestKind::Index { .. } => None,
        }
    }
}

type FetchResult = Result<FetchedManifest, RegistryError>;

/// Fetches in progress, by digest. Content is the same whichever repository
/// serves it, so one fetch per digest is enough; only a failure is specific
/// to the repository that was asked.
#[derive(Default)]
pub(crate) struct Flights(Mutex<HashMap<Digest, Arc<OnceCell<FetchResult>>>>);

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Arc<OnceCell<FetchResult>>>> {
        // The map only holds handles; it stays consistent after a panic.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RegistryClient {
    /// The manifest `digest`, from the cache if a verified copy is there,
    /// otherwise from `repository`. Concurrent calls for the same digest send
    /// at most one request.
    pub async fn fetch_manifest(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<FetchedManifest, RegistryError> {
        let inner = &self.inner;
        let (flight, joined) = {
            let mut flights = inner.flights.lock();
            match flights.get(digest) {
                // A finished flight still in the map belongs to a caller that
                // was cancelled before removing it; its result may be stale.
                Some(f) if !f.initialized() => (f.clone(), true),
                _ => {
                    let f = Arc::new(OnceCell::new());
                    flights.insert(digest.clone(), f.clone());
                    (f, false)
                }
            }
        };
        if joined {
            inner.stats.bump(Counter::Coalesced);
        }
        // If the caller that started the flight is cancelled, the next waiter
        // runs the fetch itself: OnceCell hands initialisation over.
        let result = flight
            .get_or_init(|| inner.fetch_uncoalesced(repository, digest))
            .await
            .clone();
        {
            let mut flights = inner.flights.lock();
            if flights.get(digest).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(digest);
            }
        }
        match result {
            Err(e) if e.host() != repository.host() || e.repository() != repository.path() => {
                // Another repository's failure says nothing about this one.
                inner.fetch_uncoalesced(repository, digest).await
            }
            result => result,
        }
    }
}

impl Inner {
    async fn fetch_uncoalesced(&self, repository: &Repository, digest: &Digest) -> FetchResult {
        if let Some(cache) = &self.cache {
            let (cache, stats, d) = (cache.clone(), self.stats.clone(), digest.clone());
            // A failed blocking task counts as a miss: the registry still has
            // the manifest.
            let cached = tokio::task::spawn_blocking(move || cache.get(&d, &stats))
                .await
                .ok()
                .flatten();
            if let Some(bytes) = cached {
                return parse(repository, digest, bytes, true);
            }
        }
        let bytes = self.get_manifest(repository, digest).await?;
        if let Some(cache) = &self.cache {
            let (cache, stats, d, b) = (
                cache.clone(),
                self.stats.clone(),
                digest.clone(),
                bytes.clone(),
            );
            match tokio::task::spawn_blocking(move || cache.put(&d, &b, &stats)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(%digest, error = %e, "could not store manifest in the cache")
                }
                Err(e) => tracing::warn!(%digest, error = %e, "cache write task failed"),
            }
        }
        parse(repository, digest, bytes, false)
    }
}

fn parse(repository: &Repository, digest: &Digest, bytes: Bytes, from_cache: bool) -> FetchResult {
    let (media_type, kind) =
        media::parse(&bytes).map_err(|kind| RegistryError::new(repository, digest, kind))?;
    Ok(FetchedManifest {
        digest: digest.clone(),
        media_type,
        kind,
        bytes,
        from_cache,
    })
}
