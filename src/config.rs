//! The service configuration: one YAML file, a few environment overrides,
//! and validation that fails fast with a message naming the option.
//! Just over 500 lines: one struct per section of the file with its
//! defaults, then one `load` that applies overrides and checks every
//! option, so an option's default and its check are found in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::alert::dispatch::AlertsConfig;
use crate::audit::Policy;
use crate::findings::{PostgresConfig, StoreLocation};
use crate::manifest::origin::{GitConfig, ManifestOrigin};
use crate::registry::RegistryConfig;
use crate::secret::{TokenError, configured_token};
use crate::server::AdminAccess;
use crate::sources::pubsub_pull::PullConfig;
use crate::sources::push_auth::PushAuthConfig;
use crate::sources::webhook::{EndpointConfig, WebhookKind};

mod file;
#[cfg(test)]
mod tests;

pub use file::{FileError, read_yaml};

/// The real k8s.io corpus shipped with the repository.
pub const DEFAULT_MANIFESTS: &str = "manifests-fixtures/k8s.io/registry.k8s.io";

/// Where the findings database and the registry cache live unless configured.
pub const DEFAULT_DATA_DIR: &str = "data";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Promotion manifests: a thin-layout root, a plain manifest file, or a
    /// directory of plain manifests. Watched for changes. Ignored when
    /// `manifests_git` is set.
    pub manifests: PathBuf,
    /// Take the manifests from a branch of a git repository instead, its
    /// manifest tree written under `data_dir/manifests-git`.
    pub manifests_git: Option<GitConfig>,
    pub reload: ReloadConfig,
    /// Where the findings database (unless `store` names another) and the
    /// registry cache live.
    pub data_dir: PathBuf,
    /// Where findings are kept: unset, the SQLite file
    /// `data_dir/findings.sqlite`.
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub policy: Policy,
    /// Read promoted manifest lists and pushed manifests from registries
    /// when a verdict depends on them. Off: such verdicts stay undecided.
    pub resolve: bool,
    pub registry: RegistryConfig,
    pub pubsub: PubsubConfig,
    /// Registry webhook endpoints, served at `POST /webhooks/<kind>`.
    pub webhooks: WebhooksConfig,
    /// Where findings are alerted, and how they are grouped.
    pub alerts: AlertsConfig,
    /// Periodic inventory sweeps of the destination registries.
    pub scan: ScanConfig,
    /// Who may acknowledge and resolve findings over HTTP.
    pub triage: crate::triage::TriageConfig,
    /// Accepted deviations: `exceptions.yaml` at the manifest root, and
    /// this local file.
    pub exceptions: crate::exceptions::ExceptionsConfig,
    /// How long an undecided event is retried before it is recorded as
    /// `unverifiable` and alerted.
    #[serde(with = "humantime_serde")]
    pub undecided_retry_for: Duration,
    pub log: LogConfig,
}

/// `store`: the findings store. Replicas share a PostgreSQL one; a single
/// process keeps the embedded SQLite default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub postgres: Option<PostgresConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted on any route.
    pub body_limit_bytes: usize,
    /// Time allowed for one request, from its headers to its response:
    /// reading the body and resolution included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    // Limits on what a client spends without a valid request.
    /// Connections held open at once. When all are taken, the oldest idle
    /// one is closed to make room; when all are busy, new ones are refused.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the
    /// connection's opening or its previous response (so it is also how
    /// long an idle keep-alive connection is kept).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Who may call the admin endpoints (`POST /-/reload`).
    pub admin: AdminConfig,
}

/// `http.admin`: the admin endpoints' token. Without one, they are served
/// only when the service listens on a loopback address.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// An environment variable holding the token, read at startup.
    pub token_env: Option<String>,
}

// Configurations get logged; tokens must not be.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_env", &self.token_env)
            .finish()
    }
}

impl HttpConfig {
    /// Who may call the admin endpoints, with the token resolved through
    /// `env`.
    pub fn admin_access(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AdminAccess, TokenError> {
        let configured = configured_token(
            self.admin.token.as_deref(),
            self.admin.token_env.as_deref(),
            env,
        )?;
        let token = match configured {
            Some(token) => token,
            None if self.listen.ip().is_loopback() => return Ok(AdminAccess::Open),
            None => return Ok(AdminAccess::Disabled),
        };
        Ok(AdminAccess::Token(token.into_bytes().into_boxed_slice()))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubsubConfig {
    /// Streaming pull from a subscription of the `gcr` topic. Unset: no pull.
    pub pull: Option<PullConfig>,
    pub push: PushConfig,
}

/// `scan`: sweeps run by `serve`, the first one at startup.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Time between two sweeps. Unset: `serve` does not sweep.
    #[serde(with = "humantime_serde::option")]
    pub interval: Option<Duration>,
    /// Registry prefixes to sweep; empty: every destination of the manifests.
    pub targets: Vec<crate::reference::RegistryPrefix>,
    /// Also visit every repository `/v2/_catalog` lists under each target.
    pub catalog: bool,
    /// Most repositories visited per sweep (the rest resume next time).
    pub max_repositories: Option<usize>,
}

/// How the manifests are kept current.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// How often a local `manifests` directory is checked for changes.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Least time between two syncs of a git source made to re-check a
    /// negative verdict (refresh before reject).
    #[serde(with = "humantime_serde")]
    pub refresh_min_interval: Duration,
    /// A reload running longer than this makes `/readyz` answer 503.
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// How much of the manifest tree one load may walk.
    pub limits: crate::manifest::Budget,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch_interval: Duration::from_secs(5),
            refresh_min_interval: Duration::from_secs(10),
            stuck_after: Duration::from_secs(300),
            limits: crate::manifest::Budget::default(),
        }
    }
}

/// Endpoints per webhook format; a format without endpoints answers 404.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    pub distribution: Vec<EndpointConfig>,
    pub harbor: Vec<EndpointConfig>,
    pub ecr: Vec<EndpointConfig>,
    pub acr: Vec<EndpointConfig>,
}

impl WebhooksConfig {
    pub fn by_kind(&self) -> [(WebhookKind, &[EndpointConfig]); 4] {
        [
            (WebhookKind::Distribution, &self.distribution),
            (WebhookKind::Harbor, &self.harbor),
            (WebhookKind::Ecr, &self.ecr),
            (WebhookKind::Acr, &self.acr),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Serve `POST /pubsub/push`.
    pub enabled: bool,
    /// Verify the Google-signed OIDC token of each push. Unset: no check
    /// (only behind a private ingress).
    pub auth: Option<PushAuthConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line with a `severity` field (Cloud Logging).
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `image_auditor=debug`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            manifests: DEFAULT_MANIFESTS.into(),
            manifests_git: None,
            reload: ReloadConfig::default(),
            data_dir: DEFAULT_DATA_DIR.into(),
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            policy: Policy::default(),
            resolve: true,
            registry: RegistryConfig::default(),
            pubsub: PubsubConfig::default(),
            webhooks: WebhooksConfig::default(),
            alerts: AlertsConfig::default(),
            scan: ScanConfig::default(),
            triage: crate::triage::TriageConfig::default(),
            exceptions: crate::exceptions::ExceptionsConfig::default(),
            undecided_retry_for: Duration::from_secs(3600),
            log: LogConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            admin: AdminConfig::default(),
        }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("config option `{option}`: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

/// Environment variables that override the file, for container platforms.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("PORT", "listen on 0.0.0.0:$PORT (as Cloud Run expects)"),
    ("IMAGE_AUDITOR_LISTEN", "http.listen"),
    ("IMAGE_AUDITOR_MANIFESTS", "manifests"),
    ("IMAGE_AUDITOR_DATA_DIR", "data_dir"),
    ("IMAGE_AUDITOR_LOG", "log.filter"),
];

impl Config {
    /// Reads `path` (or the defaults), applies the environment, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => read_yaml("config file", path)?,
        };
        config.apply_env(|var| std::env::var(var).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies [`ENV_OVERRIDES`] read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(port) = get("PORT") {
            let port: u16 = port.parse().map_err(|_| ConfigError::Env {
                var: "PORT",
                value: port.clone(),
                message: "not a port number".into(),
            })?;
            self.http.listen = SocketAddr::from(([0, 0, 0, 0], port));
        }
        if let Some(listen) = get("IMAGE_AUDITOR_LISTEN") {
            self.http.listen = listen.parse().map_err(|_| ConfigError::Env {
                var: "IMAGE_AUDITOR_LISTEN",
                value: listen.clone(),
                message: "not an address such as 127.0.0.1:8080".into(),
            })?;
        }
        if let Some(manifests) = get("IMAGE_AUDITOR_MANIFESTS") {
            self.manifests = manifests.into();
        }
        if let Some(dir) = get("IMAGE_AUDITOR_DATA_DIR") {
            self.data_dir = dir.into();
        }
        if let Some(filter) = get("IMAGE_AUDITOR_LOG") {
            self.log.filter = filter;
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |option, message: String| ConfigError::Invalid { option, message };
        if self.manifests_git.is_none() && !self.manifests.exists() {
            return Err(invalid(
                "manifests",
                format!("{} does not exist", self.manifests.display()),
            ));
        }
        if self.reload.stuck_after.is_zero() {
            return Err(invalid("reload.stuck_after", "must be more than 0".into()));
        }
        let limits = &self.reload.limits;
        if limits.max_entries == 0 || limits.max_bytes == 0 {
            return Err(invalid(
                "reload.limits",
                "`max_entries` and `max_bytes` must be more than 0".into(),
            ));
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(invalid(
                "http.body_limit_bytes",
                "must be at least 1024: a Pub/Sub push envelope alone is larger".into(),
            ));
        }
        if self.http.request_timeout.is_zero() {
            return Err(invalid(
                "http.request_timeout",
                "must be more than 0".into(),
            ));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1".into()));
        }
        if self.http.header_read_timeout.is_zero() {
            return Err(invalid(
                "http.header_read_timeout",
                "must be more than 0".into(),
            ));
        }
        self.http
            .admin_access(|var| std::env::var(var).ok())
            .map_err(|e| invalid("http.admin", e.to_string()))?;
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            invalid(
                "data_dir",
                format!("cannot create {}: {e}", self.data_dir.display()),
            )
        })?;
        self.registry.cache_under(&self.data_dir);
        if let Some(postgres) = &self.store.postgres {
            postgres
                .validate()
                .map_err(|e| invalid("store", e.to_string()))?;
        }
        crate::sources::webhook::Endpoints::from_config(&self.webhooks.by_kind(), |var| {
            std::env::var(var).ok()
        })
        .map_err(|e| invalid("webhooks", e.to_string()))?;
        crate::triage::TriageAccess::from_config(&self.triage, |var| std::env::var(var).ok())
            .map_err(|e| invalid("triage", e.to_string()))?;
        self.alerts
            .validate(crate::findings::DEFAULT_CLAIM_LEASE)
            .map_err(|e| invalid("alerts", e.to_string()))?;
        if let Some(interval) = self.scan.interval {
            if !self.resolve {
                return Err(invalid(
                    "scan.interval",
                    "sweeps read registries: set `resolve: true` or leave scan.interval unset"
                        .into(),
                ));
            }
            if interval < Duration::from_secs(1) {
                return Err(invalid("scan.interval", "must be at least 1s".into()));
            }
        }
        if let Some(file) = &self.exceptions.file
            && !file.is_file()
        {
            return Err(invalid(
                "exceptions.file",
                format!("{} is not a file", file.display()),
            ));
        }
        if self.exceptions.max_ahead < Duration::from_secs(86_400) {
            return Err(invalid(
                "exceptions.max_ahead",
                "must be at least 1 day".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", e.to_string()));
        }
        Ok(())
    }

    /// Where the manifests come from, and how often to look for changes.
    pub fn manifest_source(&self) -> (ManifestOrigin, Duration) {
        match &self.manifests_git {
            Some(git) => (
                ManifestOrigin::Git {
                    config: git.clone(),
                    checkout: self.data_dir.join("manifests-git"),
                },
                git.poll_interval,
            ),
            None => (
                ManifestOrigin::Directory(self.manifests.clone()),
                self.reload.watch_interval,
            ),
        }
    }

    pub fn findings_db(&self) -> PathBuf {
        findings_db(&self.data_dir)
    }

    /// Where findings are kept: the `store` section, or the SQLite file of
    /// the data directory.
    pub fn store_location(&self) -> StoreLocation {
        match &self.store.postgres {
            Some(postgres) => StoreLocation::Postgres(postgres.clone()),
            None => StoreLocation::Sqlite(self.findings_db()),
        }
    }
}

/// The findings database of a data directory: `serve` and `scan` share it.
pub fn findings_db(data_dir: &Path) -> PathBuf {
    data_dir.join("findings.sqlite")
}
