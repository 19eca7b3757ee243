//! How the registry client is configured: credentials, transport, budgets and
//! the cache. Every field has a default, so an empty document is a valid
//! configuration that talks HTTPS anonymously to every registry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Configuration of the registry client (the `registry:` section of the
/// service configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Per-host settings, keyed by `host[:port]` exactly as it appears in
    /// repository names (e.g. `us-central1-docker.pkg.dev`, `127.0.0.1:5000`).
    pub hosts: BTreeMap<String, HostConfig>,

    /// A Docker `config.json` whose `auths` entries supply basic credentials
    /// (`auth` = base64 of `user:password`, or `username` + `password`).
    /// Credential helpers (`credHelpers`, `credsStore`) and `identitytoken`
    /// entries are not executed; configure such hosts under `hosts` or
    /// `google` instead. Unset: no file is read.
    pub docker_config: Option<PathBuf>,

    /// Google access tokens for Artifact Registry and Container Registry,
    /// sent as the basic credentials `oauth2accesstoken:<token>`. Unset: no
    /// Google credentials.
    pub google: Option<GoogleAuthConfig>,

    /// Hosts reached over plain HTTP instead of HTTPS: `host:port` matches that
    /// port only, a bare `host` matches every port of it. Meant for loopback
    /// test registries; a bearer-token realm is only followed over plain HTTP
    /// when the registry itself is in this list.
    pub insecure_http_hosts: Vec<String>,

    /// Time allowed to establish a TCP (and TLS) connection. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,

    /// Time allowed for one whole request, body included. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,

    /// Retries after a transient failure (network error, timeout, `429`,
    /// `5xx`) before the fetch fails as transient. Default `3`.
    pub max_retries: u32,

    /// First retry delay; it doubles on every retry, capped by `backoff_max`,
    /// and each delay is drawn uniformly below that bound (full jitter) so
    /// that many clients do not retry in step. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,

    /// Upper bound of one retry delay. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,

    /// The longest `Retry-After` the client waits for. A registry asking for
    /// more makes the fetch fail as transient at once, so the caller can
    /// schedule its own retry instead of holding work. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,

    /// Largest manifest body accepted; larger bodies are refused without
    /// being read to the end. Default 4 MiB, the limit the distribution
    /// reference implementation enforces on upload.
    pub max_manifest_bytes: u64,

    /// Request budget shared by all hosts. Default 20 requests/s, burst 20.
    pub rate_limit: RateLimit,

    /// Request budget of each host unless `hosts.<host>.rate_limit` says
    /// otherwise. Default 10 requests/s, burst 10.
    pub per_host_rate_limit: RateLimit,

    /// Directory of the content-addressed manifest cache, an OCI image layout
    /// (`oci-layout`, `index.json`, `blobs/<algorithm>/<hex>`). Created if
    /// missing. Unset: no cache, every fetch goes to the registry.
    pub cache_dir: Option<PathBuf>,

    /// Size bound of the cache in bytes; the least recently used manifests
    /// are evicted beyond it. Unset: unbounded (digests are immutable, so
    /// entries never expire for correctness).
    pub max_cache_bytes: Option<u64>,

    /// When a host is marked down after network failures, and for how long
    /// (the per-host circuit breaker).
    pub breaker: BreakerConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            docker_config: None,
            google: None,
            insecure_http_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retries: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            max_manifest_bytes: 4 * 1024 * 1024,
            rate_limit: RateLimit {
                requests_per_second: 20.0,
                burst: 20,
            },
            per_host_rate_limit: RateLimit {
                requests_per_second: 10.0,
                burst: 10,
            },
            cache_dir: None,
            max_cache_bytes: None,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Why a registry access file cannot be used.
pub type RegistryConfigError = crate::config::FileError;

impl RegistryConfig {
    /// Reads a file holding only registry access settings (the CLI's
    /// `--registry-config`); an empty file means the defaults.
    pub fn load(path: &Path) -> Result<RegistryConfig, RegistryConfigError> {
        crate::config::read_yaml("registry config file", path)
    }

    /// Caches under `data_dir` unless a cache directory is configured, so
    /// that a second run costs no registry requests.
    pub fn cache_under(&mut self, data_dir: &Path) {
        self.cache_dir
            .get_or_insert_with(|| data_dir.join("registry-cache"));
    }

    /// Whether `host` (with its port, if any) is reached over plain HTTP.
    pub fn is_insecure_http(&self, host: &str) -> bool {
        let bare = host.rsplit_once(':').map_or(host, |(name, _)| name);
        self.insecure_http_hosts
            .iter()
            .any(|h| h == host || h == bare)
    }
}

/// Settings for one registry host.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// User name for basic credentials (sent directly for `Basic` challenges,
    /// and to the token service for `Bearer` challenges).
    pub username: Option<String>,
    /// Password for `username`. Prefer `password_env` outside tests.
    pub password: Option<String>,
    /// Name of an environment variable holding the password, read when the
    /// client starts.
    pub password_env: Option<String>,
    /// Request budget of this host, replacing `per_host_rate_limit`.
    pub rate_limit: Option<RateLimit>,
}

// Configurations get logged; passwords must not be.
impl fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("password_env", &self.password_env)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// The per-host circuit breaker: after `failures` consecutive network-level
/// failures (connection refused, name not resolved, connect or request
/// timeout) a host is marked down, and requests to it fail at once, as
/// transient, for `cooldown`; then one probe request is let through, and
/// its success marks the host up again.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that mark a host down; `0` never does. Default
    /// `2`: one failure may be a blip, and a host wrongly marked down only
    /// makes events `undecided` (retried) for one cool-down.
    pub failures: u32,
    /// How long a host stays down before one probe is let through. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 2,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// A token bucket: `burst` requests may go at once, then `requests_per_second`
/// on average. `requests_per_second: 0` disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

/// Where Google access tokens come from, and which hosts get them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAuthConfig {
    /// The token source.
    pub token: GoogleTokenSource,
    /// Host patterns that receive the token: an exact host, or `*.suffix` for
    /// any host ending in `.suffix`. Default `gcr.io`, `*.gcr.io`, `*.pkg.dev`.
    #[serde(default = "default_google_hosts")]
    pub hosts: Vec<String>,
    /// How long a token from `command` is reused before the command runs
    /// again. Google access tokens live an hour. Default `10m`.
    #[serde(default = "default_command_token_ttl", with = "humantime_serde")]
    pub command_token_ttl: Duration,
}

fn default_google_hosts() -> Vec<String> {
    ["gcr.io", "*.gcr.io", "*.pkg.dev"]
        .map(String::from)
        .to_vec()
}

fn default_command_token_ttl() -> Duration {
    Duration::from_secs(600)
}

/// One way to obtain a Google OAuth2 access token.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GoogleTokenSource {
    /// A fixed token (tests, short-lived jobs).
    Static(String),
    /// The named environment variable, read on every use so that an external
    /// refresher can rotate it.
    Env(String),
    /// A command whose standard output is the token, e.g.
    /// `["gcloud", "auth", "print-access-token"]`.
    Command(Vec<String>),
    /// The GCE/GKE/Cloud Run metadata server's default service account; the
    /// value is the token URL, empty for the standard one.
    MetadataServer(String),
}

impl fmt::Debug for GoogleTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoogleTokenSource::Static(_) => f.write_str("Static(***)"),
            GoogleTokenSource::Env(var) => f.debug_tuple("Env").field(var).finish(),
            GoogleTokenSource::Command(argv) => f.debug_tuple("Command").field(argv).finish(),
            GoogleTokenSource::MetadataServer(url) => {
                f.debug_tuple("MetadataServer").field(url).finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        let c: RegistryConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.max_manifest_bytes, 4 * 1024 * 1024);
        assert_eq!(c.max_retries, 3);
        assert!(c.cache_dir.is_none());
    }

    #[test]
    fn durations_and_token_sources_parse() {
        let c: RegistryConfig = serde_json::from_str(
            r#"{"request_timeout": "250ms",
                "google": {"token": {"command": ["gcloud", "auth", "print-access-token"]}},
                "hosts": {"127.0.0.1:5000": {"username": "u", "password": "p"}}}"#,
        )
        .unwrap();
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.breaker, BreakerConfig::default());
        let google = c.google.unwrap();
        assert_eq!(google.hosts, default_google_hosts());
        assert!(matches!(google.token, GoogleTokenSource::Command(ref argv) if argv.len() == 3));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c: RegistryConfig = serde_json::from_str(
            r#"{"google": {"token": {"static": "ya29.secret"}},
                "hosts": {"r.example": {"username": "u", "password": "hunter2"}}}"#,
        )
        .unwrap();
        let text = format!("{c:?}");
        assert!(
            !text.contains("ya29.secret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("\"u\""), "{text}");
    }

    #[test]
    fn breaker_keys_parse_and_may_be_partial() {
        let c: RegistryConfig = serde_json::from_str(r#"{"breaker": {"cooldown": "1m"}}"#).unwrap();
        assert_eq!(
            c.breaker,
            BreakerConfig {
                failures: 2,
                cooldown: Duration::from_secs(60)
            }
        );
        assert!(serde_json::from_str::<RegistryConfig>(r#"{"breaker": {"open": 1}}"#).is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_json::from_str::<RegistryConfig>(r#"{"cache": "/tmp"}"#).is_err());
    }

    #[test]
    fn insecure_hosts_match_with_or_without_port() {
        let c = RegistryConfig {
            insecure_http_hosts: vec!["127.0.0.1".into(), "localhost:5000".into()],
            ..RegistryConfig::default()
        };
        assert!(c.is_insecure_http("127.0.0.1:41234"));
        assert!(c.is_insecure_http("localhost:5000"));
        assert!(!c.is_insecure_http("localhost:5001"));
        assert!(!c.is_insecure_http("gcr.io"));
    }
}
