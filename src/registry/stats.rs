//! Request and cache counters. Plain atomics, so tests can assert exact
//! request counts and the metrics exporter can read them without locks on the
//! request path beyond one map lookup per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// `GET /v2/<name>/manifests/<digest>`, and `HEAD`/`GET` of a manifest
    /// by tag or digest for the inventory sweep.
    Manifest,
    /// One page of `/v2/_catalog` or `/v2/<name>/tags/list`.
    List,
    /// A bearer-token request to a token service (`realm`), or a Google
    /// access-token request to the metadata server.
    Token,
}

/// How one HTTP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// 200 with a body that verified.
    Ok,
    NotFound,
    /// 401 or 403 (including the challenge that starts a token exchange).
    Unauthorized,
    RateLimited,
    ServerError,
    OtherStatus,
    Timeout,
    NetworkError,
    TooLarge,
    /// 200, but the body or its `Docker-Content-Digest` did not match.
    DigestMismatch,
    /// Not sent: the host is marked down by its circuit breaker.
    CircuitOpen,
}

impl Outcome {
    const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::Unauthorized,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::OtherStatus,
        Outcome::Timeout,
        Outcome::NetworkError,
        Outcome::TooLarge,
        Outcome::DigestMismatch,
        Outcome::CircuitOpen,
    ];

    /// A stable label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Unauthorized => "unauthorized",
            Outcome::RateLimited => "rate_limited",
            Outcome::ServerError => "server_error",
            Outcome::OtherStatus => "other_status",
            Outcome::Timeout => "timeout",
            Outcome::NetworkError => "network_error",
            Outcome::TooLarge => "too_large",
            Outcome::DigestMismatch => "digest_mismatch",
            Outcome::CircuitOpen => "circuit_open",
        }
    }
}

const KINDS: [RequestKind; 3] = [RequestKind::Manifest, RequestKind::List, RequestKind::Token];

#[derive(Default)]
struct HostCounters([[AtomicU64; Outcome::ALL.len()]; KINDS.len()]);

/// What the client counts besides requests; [`StatsSnapshot`] has a field
/// for each, which says what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    Retry,
    Coalesced,
    CacheHit,
    CacheMiss,
    CacheCorruption,
    CacheWrite,
    CacheEviction,
}

impl Counter {
    /// How many there are: the last variant's index, plus one.
    const COUNT: usize = Counter::CacheEviction as usize + 1;
}

#[derive(Default)]
pub(crate) struct Stats {
    hosts: RwLock<HashMap<String, Arc<HostCounters>>>,
    counters: [AtomicU64; Counter::COUNT],
}

impl Stats {
    pub(crate) fn request(&self, host: &str, kind: RequestKind, outcome: Outcome) {
        let counters = self.host(host);
        counters.0[kind as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn host(&self, host: &str) -> Arc<HostCounters> {
        // A poisoned lock only means another thread panicked while inserting;
        // the map itself is still a valid map of counters.
        if let Some(c) = self
            .hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return c.clone();
        }
        self.hosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_owned())
            .or_default()
            .clone()
    }

    /// Adds one to `counter`.
    pub(crate) fn bump(&self, counter: Counter) {
        self.add(counter, 1);
    }

    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut requests = BTreeMap::new();
        for (host, counters) in self.hosts.read().unwrap_or_else(|e| e.into_inner()).iter() {
            for kind in KINDS {
                for outcome in Outcome::ALL {
                    let n = counters.0[kind as usize][outcome as usize].load(Ordering::Relaxed);
                    if n > 0 {
                        requests.insert((host.clone(), kind, outcome), n);
                    }
                }
            }
        }
        let get = |c: Counter| self.counters[c as usize].load(Ordering::Relaxed);
        StatsSnapshot {
            requests,
            retries: get(Counter::Retry),
            coalesced: get(Counter::Coalesced),
            cache_hits: get(Counter::CacheHit),
            cache_misses: get(Counter::CacheMiss),
            cache_corruptions: get(Counter::CacheCorruption),
            cache_writes: get(Counter::CacheWrite),
            cache_evictions: get(Counter::CacheEviction),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// HTTP requests by (host, kind, outcome); zero counts are left out.
    pub requests: BTreeMap<(String, RequestKind, Outcome), u64>,
    /// Requests sent again after a transient failure.
    pub retries: u64,
    /// Fetches that waited for an identical fetch already in flight instead
    /// of sending their own request.
    pub coalesced: u64,
    pub cache_hits: u64,
    /// Lookups that found nothing usable (absent or corrupt).
    pub cache_misses: u64,
    /// Cache files whose content no longer matched their digest; each was
    /// deleted and also counted as a miss.
    pub cache_corruptions: u64,
    pub cache_writes: u64,
    pub cache_evictions: u64,
}

impl StatsSnapshot {
    /// Requests of `kind` to `host`, whatever their outcome.
    pub fn requests_to(&self, host: &str, kind: RequestKind) -> u64 {
        self.requests
            .iter()
            .filter(|((h, k, _), _)| h == host && *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests of `kind` to `host` that ended with `outcome`.
    pub fn count(&self, host: &str, kind: RequestKind, outcome: Outcome) -> u64 {
        self.requests
            .get(&(host.to_owned(), kind, outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that went out on the network, to any host and of any kind:
    /// every counted request except those an open circuit breaker refused.
    pub fn requests_sent(&self) -> u64 {
        self.requests
            .iter()
            .filter(|((_, _, o), _)| *o != Outcome::CircuitOpen)
            .map(|(_, n)| n)
            .sum()
    }

    /// All requests of `kind` to any host, refused ones included.
    pub fn total(&self, kind: RequestKind) -> u64 {
        self.requests
            .iter()
            .filter(|((_, k, _), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_host_kind_and_outcome() {
        let s = Stats::default();
        s.request("a:1", RequestKind::Manifest, Outcome::Ok);
        s.request("a:1", RequestKind::Manifest, Outcome::Ok);
        s.request("a:1", RequestKind::Manifest, Outcome::ServerError);
        s.request("b", RequestKind::Token, Outcome::Ok);
        s.request("b", RequestKind::Manifest, Outcome::CircuitOpen);
        let snap = s.snapshot();
        assert_eq!(snap.count("a:1", RequestKind::Manifest, Outcome::Ok), 2);
        assert_eq!(snap.requests_to("a:1", RequestKind::Manifest), 3);
        assert_eq!(snap.requests_to("a:1", RequestKind::Token), 0);
        assert_eq!(snap.total(RequestKind::Token), 1);
        assert_eq!(snap.requests_sent(), 4);
        assert_eq!(snap.requests.len(), 4);
    }
}
