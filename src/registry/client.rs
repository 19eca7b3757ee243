//! The registry client and its HTTP request loop ([`Inner::send`]): every
//! request within the request budget, with authentication and bounded
//! retries; and its main operation, GET a manifest by digest with a size cap
//! and verification of the body against the digest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, RETRY_AFTER};
use sha2::Digest as _;

use super::auth::{Authenticator, Ctx, Sent};
use super::breaker::Breakers;
use super::cache::ManifestCache;
use super::config::RegistryConfig;
use super::credentials::{Credentials, CredentialsError};
use super::error::{ErrorKind, RegistryError};
use super::fetch::Flights;
use super::http::{ReadError, error_chain, read_capped, stated_digest};
use super::limit::{Limiter, backoff, parse_retry_after};
use super::media;
use super::stats::{Counter, Outcome, RequestKind, Stats, StatsSnapshot};
use crate::reference::{Digest, Repository};

/// The only way the auditor talks to registries. Cheap to clone; clones
/// share connections, budgets, tokens, the cache, in-flight fetches and
/// counters.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RegistryConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) auth: Authenticator,
    pub(crate) limiter: Limiter,
    pub(crate) breakers: Breakers,
    pub(crate) cache: Option<Arc<ManifestCache>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) flights: Flights,
}

/// Why a client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("registry credentials: {0}")]
    Credentials(CredentialsError),
    #[error("manifest cache {path}: {source}")]
    Cache {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Http(String),
}

/// One registry request, as [`Inner::send`] sends it.
pub(crate) struct Request<'a> {
    pub(crate) host: &'a str,
    /// The repository path the request is about (what a token is scoped
    /// to); [`super::auth::CATALOG_PATH`] for the catalog.
    pub(crate) path: &'a str,
    pub(crate) method: reqwest::Method,
    pub(crate) url: &'a str,
    pub(crate) accept: Option<&'static str>,
    pub(crate) kind: RequestKind,
}

impl<'a> Request<'a> {
    /// A request for a manifest of `repository` (by tag or digest) at `url`.
    pub(crate) fn manifest(
        repository: &'a Repository,
        method: reqwest::Method,
        url: &'a str,
    ) -> Request<'a> {
        Request {
            host: repository.host(),
            path: repository.path(),
            method,
            url,
            accept: Some(media::ACCEPT),
            kind: RequestKind::Manifest,
        }
    }
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self, SetupError> {
        let credentials = Credentials::from_config(&config).map_err(SetupError::Credentials)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("image-auditor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Http(e.to_string()))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(Arc::new(
                ManifestCache::open(dir, config.max_manifest_bytes, config.max_cache_bytes)
                    .map_err(|source| SetupError::Cache {
                        path: dir.clone(),
                        source,
                    })?,
            )),
            None => None,
        };
        let overrides: HashMap<_, _> = config
            .hosts
            .iter()
            .filter_map(|(host, h)| Some((host.clone(), h.rate_limit?)))
            .collect();
        let limiter = Limiter::new(config.rate_limit, config.per_host_rate_limit, overrides);
        Ok(Self {
            inner: Arc::new(Inner {
                breakers: Breakers::new(config.breaker),
                config,
                http,
                auth: Authenticator::new(credentials),
                limiter,
                cache,
                stats: Arc::default(),
                flights: Flights::default(),
            }),
        })
    }

    /// A copy of the request and cache counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// When `host` will next be asked, while its circuit breaker has it
    /// marked down; `None` when requests to it go through.
    pub fn host_down_until(&self, host: &str) -> Option<tokio::time::Instant> {
        self.inner.breakers.down_until(host)
    }
}

impl Inner {
    /// GETs the manifest `digest` from `repository` and returns its bytes,
    /// verified. Transient failures are retried here, within the budget;
    /// what comes back is final for this fetch.
    pub(crate) async fn get_manifest(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Bytes, RegistryError> {
        let url = self.manifest_url(repository, digest);
        let request = Request::manifest(repository, reqwest::Method::GET, &url);
        self.send(&request, |response| self.read_verified(response, digest))
            .await
            .map_err(|kind| RegistryError::new(repository, digest, kind))
    }

    /// The URL of manifest `reference` (a tag or digest) of `repository`.
    pub(crate) fn manifest_url(
        &self,
        repository: &Repository,
        reference: &dyn std::fmt::Display,
    ) -> String {
        self.url(
            repository.host(),
            &format!("{}/manifests/{reference}", repository.path()),
        )
    }

    /// `scheme://host/v2/<rest>`, plain HTTP only for hosts configured so.
    pub(crate) fn url(&self, host: &str, rest: &str) -> String {
        let scheme = if self.config.is_insecure_http(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2/{rest}")
    }

    /// Sends `request` within the budget, with authentication and bounded
    /// retries of transient failures, and hands a `200` to `on_ok`, whose
    /// transient failures (a body cut short) are retried too. Every attempt
    /// is counted in the stats under `request.kind`. A host marked down by
    /// its circuit breaker is not asked: the request fails at once as
    /// transient, and a failing request is not retried once its host is down.
    pub(crate) async fn send<T, F, Fut>(
        &self,
        request: &Request<'_>,
        mut on_ok: F,
    ) -> Result<T, ErrorKind>
    where
        F: FnMut(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = Result<T, (Outcome, ErrorKind)>>,
    {
        let Request {
            host,
            path,
            ref method,
            url,
            accept,
            kind,
        } = *request;
        let ctx = Ctx {
            http: &self.http,
            stats: &self.stats,
            allow_http_realm: self.config.is_insecure_http(host),
        };
        let mut retries = 0;
        let mut reauthenticated = false;
        let mut previous: Option<ErrorKind> = None;
        loop {
            // Asked before waiting for the budget, so that a request to a host
            // that is down neither waits nor spends budget, and again after
            // it, as the host may have been marked down meanwhile.
            let permit = match self.breakers.refusal(host) {
                Some(refused) => Err(refused),
                None => {
                    self.limiter.acquire(host).await;
                    self.breakers.admit(host)
                }
            };
            let permit = match permit {
                Ok(permit) => permit,
                Err(refused) => {
                    self.stats.request(host, kind, Outcome::CircuitOpen);
                    // A retry keeps the failure that led to it: it says more.
                    return Err(previous.unwrap_or(ErrorKind::HostDown {
                        last_error: refused.last_error,
                    }));
                }
            };
            // `detail` describes a failure, for the breaker's message.
            let record = |outcome: Outcome, detail: &str| {
                self.stats.request(host, kind, outcome);
                permit.settle(outcome, detail);
            };
            let (authorization, sent) = self.auth.authorize(&ctx, host, path).await?;
            let mut builder = self.http.request(method.clone(), url);
            if let Some(accept) = accept {
                builder = builder.header(ACCEPT, accept);
            }
            if let Some(value) = authorization {
                builder = builder.header(AUTHORIZATION, value);
            }
            // Each arm either returns or yields the transient failure to retry.
            let failure = match builder.send().await {
                Err(e) if e.is_timeout() => {
                    record(Outcome::Timeout, "timed out");
                    ErrorKind::Timeout
                }
                Err(e) => {
                    let chain = error_chain(&e);
                    record(Outcome::NetworkError, &chain);
                    ErrorKind::Network(chain)
                }
                Ok(response) => match response.status() {
                    StatusCode::OK => match on_ok(response).await {
                        Ok(value) => {
                            record(Outcome::Ok, "");
                            return Ok(value);
                        }
                        Err((outcome, kind)) => {
                            record(outcome, &kind.to_string());
                            if !kind.is_transient() {
                                return Err(kind);
                            }
                            kind
                        }
                    },
                    status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                        record(Outcome::Unauthorized, "");
                        if status == StatusCode::UNAUTHORIZED
                            && !reauthenticated
                            && self
                                .auth
                                .on_unauthorized(&ctx, host, path, response.headers(), sent)
                                .await?
                        {
                            reauthenticated = true;
                            continue;
                        }
                        return Err(ErrorKind::Unauthorized {
                            status: status.as_u16(),
                            detail: match sent {
                                Sent::Nothing => "no credentials for this host",
                                _ => "credentials refused",
                            }
                            .into(),
                        });
                    }
                    StatusCode::NOT_FOUND => {
                        record(Outcome::NotFound, "");
                        return Err(ErrorKind::NotFound);
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        record(Outcome::RateLimited, "");
                        let retry_after = response
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, SystemTime::now()));
                        if let Some(wait) = retry_after {
                            if wait > self.config.max_retry_after {
                                return Err(ErrorKind::RateLimited { retry_after });
                            }
                            // Every request to this host waits, not just this one.
                            self.limiter
                                .block_host(host, tokio::time::Instant::now() + wait);
                        }
                        ErrorKind::RateLimited { retry_after }
                    }
                    status if status.is_server_error() => {
                        record(Outcome::ServerError, "");
                        ErrorKind::Server {
                            status: status.as_u16(),
                        }
                    }
                    status => {
                        record(Outcome::OtherStatus, "");
                        return Err(ErrorKind::UnexpectedStatus {
                            status: status.as_u16(),
                        });
                    }
                },
            };
            // A host marked down would refuse the retry anyway.
            if retries >= self.config.max_retries || self.breakers.refusal(host).is_some() {
                return Err(failure);
            }
            let honours_retry_after = matches!(
                failure,
                ErrorKind::RateLimited {
                    retry_after: Some(_)
                }
            );
            if !honours_retry_after {
                let delay = backoff(retries, self.config.backoff_base, self.config.backoff_max);
                tokio::time::sleep(delay).await;
            }
            tracing::debug!(host, repository = path, url, error = %failure, retries, "retrying registry request");
            retries += 1;
            self.stats.bump(Counter::Retry);
            previous = Some(failure);
        }
    }

    /// Reads at most the size cap of the body, then checks it against the
    /// requested digest and against `Docker-Content-Digest` when present.
    async fn read_verified(
        &self,
        response: reqwest::Response,
        digest: &Digest,
    ) -> Result<Bytes, (Outcome, ErrorKind)> {
        let limit = self.config.max_manifest_bytes;
        let header_digest = stated_digest(&response);
        let body = match read_capped(response, limit).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => {
                return Err((Outcome::TooLarge, ErrorKind::TooLarge { limit }));
            }
            Err(ReadError::Timeout) => return Err((Outcome::Timeout, ErrorKind::Timeout)),
            Err(ReadError::Network(e)) => {
                return Err((Outcome::NetworkError, ErrorKind::Network(e)));
            }
        };
        if !digest.verifies(&body) {
            let actual = same_algorithm_digest(digest, &body);
            return Err((
                Outcome::DigestMismatch,
                ErrorKind::DigestMismatch { actual },
            ));
        }
        if let Some(header) = header_digest {
            // The header may use another algorithm than the request; what
            // matters is that it names these bytes.
            let consistent = header.parse::<Digest>().is_ok_and(|d| d.verifies(&body));
            if !consistent {
                return Err((
                    Outcome::DigestMismatch,
                    ErrorKind::HeaderDigestMismatch { header },
                ));
            }
        }
        Ok(body)
    }
}

pub(crate) fn same_algorithm_digest(like: &Digest, bytes: &[u8]) -> Digest {
    match like {
        Digest::Sha256(_) => Digest::sha256_of(bytes),
        Digest::Sha512(_) => Digest::Sha512(Box::new(sha2::Sha512::digest(bytes).into())),
    }
}
