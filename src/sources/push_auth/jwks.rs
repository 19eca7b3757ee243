//! The cache of the JWKS that push tokens are verified against.
//!
//! The JWKS is cached here rather than with google-cloud-auth's `idtoken`
//! verifier, whose cache fails concurrent verifications while a fetch is in
//! flight (googleapis/google-cloud-rust#6696). This cache:
//!
//! - fetches on the first use, when the keys expire (`Cache-Control:
//!   max-age`, less `Age`) and when a token names a `kid` it does not hold
//!   (a key rotation);
//! - never starts two fetches less than
//!   [`PushAuthConfig::min_refetch_interval`] apart, whatever the reason:
//!   before the first successful fetch, after a failed one, on an unknown
//!   `kid`. Anyone can send a token with an RS256 header and an invented
//!   `kid`, so without this each such request would cost a fetch; and the
//!   keys are kept at least that long whatever `max-age` says (`max-age=0`
//!   would otherwise mean a fetch per push);
//! - runs one fetch at a time: verifications that need the keys while a
//!   fetch is in flight wait for it and use its result, so a cold cache hit
//!   by 32 requests at once costs one fetch and fails none of them;
//! - keeps serving the keys it has when a refresh of expired keys fails
//!   (Google publishes keys well before signing with them and keeps them
//!   after), retrying after `min_refetch_interval`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::DecodingKey;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use super::{AuthError, PushAuthConfig};
use crate::event::excerpt;

/// Why the signing keys could not be fetched; the words name the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The request failed at `step` (empty: sending it).
    #[error("GET {url}: {step}{error}")]
    Fetch {
        url: String,
        step: &'static str,
        error: String,
    },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url} is not a JWKS: {error}")]
    NotJwks { url: String, error: String },
    #[error("{0} has no usable RS256 signing key")]
    NoSigningKey(String),
}

/// The keys, and what limits their fetching; shared by every verification.
pub(super) struct KeyCache {
    client: reqwest::Client,
    keys: ArcSwap<KeySet>,
    /// Held for the whole of a fetch: one fetch at a time.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Fetches started, successful or not.
    pub(super) fetches: Counter,
    /// Verifications refused because the keys they needed could only come
    /// from a fetch that `min_refetch_interval` did not allow yet.
    pub(super) refetches_suppressed: Counter,
    /// Fetches finished, successful or not (changed under `refresh` only).
    completed: AtomicU64,
}

struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
    /// `None` before the first successful fetch.
    expires: Option<Instant>,
}

#[derive(Default)]
struct RefreshState {
    /// When the last fetch started, successful or not.
    last_fetch: Option<Instant>,
    /// The error of the last fetch, if it failed.
    last_failure: Option<JwksError>,
}

impl KeyCache {
    pub(super) fn new(client: reqwest::Client) -> KeyCache {
        KeyCache {
            client,
            keys: ArcSwap::from_pointee(KeySet {
                keys: HashMap::new(),
                expires: None,
            }),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            fetches: Counter::default(),
            refetches_suppressed: Counter::default(),
            completed: AtomicU64::new(0),
        }
    }

    /// The key ids held now.
    pub(super) fn kids(&self) -> Vec<String> {
        self.keys.load().keys.keys().cloned().collect()
    }

    /// The key named `kid`, fetching the JWKS when needed (module docs).
    pub(super) async fn key(
        &self,
        config: &PushAuthConfig,
        kid: &str,
    ) -> Result<Arc<DecodingKey>, AuthError> {
        {
            // A short-lived guard: never held across the await below.
            let seen = self.keys.load();
            if is_fresh(&seen, Instant::now())
                && let Some(key) = seen.keys.get(kid)
            {
                return Ok(key.clone());
            }
        }
        let completed_before = self.completed.load(Ordering::Acquire);

        let mut state = self.refresh.lock().await;
        let current = self.keys.load_full();
        if self.completed.load(Ordering::Acquire) != completed_before {
            // A fetch finished while we waited: its answer is ours, and
            // queueing another fetch behind it would only repeat it.
            return current
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| match &state.last_failure {
                    Some(error) => AuthError::KeysUnavailable(error.clone()),
                    None => unknown_kid(kid),
                });
        }
        let now = Instant::now();
        if is_fresh(&current, now)
            && let Some(key) = current.keys.get(kid)
        {
            return Ok(key.clone());
        }
        // Fresh keys without this kid (a rotation, or an invented kid), no
        // keys yet, or expired ones: all the same to the rate limit.
        if state
            .last_fetch
            .is_some_and(|t| now.duration_since(t) < config.min_refetch_interval)
        {
            return current.keys.get(kid).cloned().ok_or_else(|| {
                self.refetches_suppressed.inc();
                match &state.last_failure {
                    Some(error) => AuthError::KeysUnavailable(error.clone()),
                    None => unknown_kid(kid),
                }
            });
        }
        state.last_fetch = Some(now);

        self.fetches.inc();
        let fetched = self.fetch(config).await;
        let result = match fetched {
            Ok((keys, max_age)) => {
                state.last_failure = None;
                let next = Arc::new(KeySet {
                    keys,
                    expires: Some(Instant::now() + max_age),
                });
                self.keys.store(next.clone());
                next.keys.get(kid).cloned().ok_or_else(|| unknown_kid(kid))
            }
            Err(error) => {
                tracing::warn!(url = %config.jwks_url, %error, "JWKS fetch failed");
                state.last_failure = Some(error.clone());
                if current.expires.is_some() {
                    // Serve the stale keys for a while rather than failing
                    // every push until the endpoint is back.
                    self.keys.store(Arc::new(KeySet {
                        keys: current.keys.clone(),
                        expires: Some(Instant::now() + config.min_refetch_interval),
                    }));
                }
                current
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or(AuthError::KeysUnavailable(error))
            }
        };
        self.completed.fetch_add(1, Ordering::Release);
        result
    }

    /// One JWKS request: the usable RS256 keys by kid, and how long to keep
    /// them.
    async fn fetch(
        &self,
        config: &PushAuthConfig,
    ) -> Result<(HashMap<String, Arc<DecodingKey>>, Duration), JwksError> {
        let url = &config.jwks_url;
        let failed = |step: &'static str, e: &dyn fmt::Display| JwksError::Fetch {
            url: url.clone(),
            step,
            error: e.to_string(),
        };
        let response = self
            .client
            .get(url)
            .timeout(config.fetch_timeout)
            .send()
            .await
            .map_err(|e| failed("", &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Status {
                url: url.clone(),
                status,
            });
        }
        let max_age = cache_lifetime(response.headers())
            .unwrap_or(config.default_max_age)
            .min(config.max_max_age)
            .max(config.min_refetch_interval);
        let body = response
            .bytes()
            .await
            .map_err(|e| failed("reading the body: ", &e))?;
        let jwks: Jwks = serde_json::from_slice(&body).map_err(|e| JwksError::NotJwks {
            url: url.clone(),
            error: e.to_string(),
        })?;
        let keys: HashMap<_, _> = jwks
            .keys
            .into_iter()
            .filter(|jwk| {
                jwk.kty == "RSA"
                    && jwk.alg.as_deref().is_none_or(|a| a == "RS256")
                    && jwk.r#use.as_deref().is_none_or(|u| u == "sig")
            })
            .filter_map(|jwk| {
                let key = DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?);
                Some((jwk.kid?, Arc::new(key.ok()?)))
            })
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoSigningKey(url.clone()));
        }
        Ok((keys, max_age))
    }
}

fn is_fresh(set: &KeySet, now: Instant) -> bool {
    set.expires.is_some_and(|e| now < e)
}

fn unknown_kid(kid: &str) -> AuthError {
    AuthError::UnknownKeyId(excerpt(kid))
}

/// `Cache-Control: max-age` less `Age`; zero for `no-store`/`no-cache`;
/// `None` when neither is said.
fn cache_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive
                .split_once('=')
                .map_or((directive, None), |(n, a)| (n.trim(), Some(a.trim())));
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(secs) = arg.and_then(|a| a.trim_matches('"').parse::<u64>().ok())
            {
                max_age = Some(secs);
            }
        }
    }
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|m| Duration::from_secs(m.saturating_sub(age)))
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    r#use: Option<String>,
    n: Option<String>,
    e: Option<String>,
}
