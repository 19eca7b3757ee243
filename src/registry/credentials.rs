//! Where the credentials for a host come from, in order of precedence: the
//! host's entry in the configuration, a Docker `config.json`, then Google
//! access tokens for Google registry hosts. A host with none is anonymous.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::config::RegistryConfig;
use super::error::ErrorKind;
use super::google::GoogleTokenProvider;
use super::stats::Stats;

/// A user name and password (or access token) for HTTP basic auth, used
/// directly for `Basic` challenges and towards token services for `Bearer`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Basic {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl Basic {
    pub(crate) fn header_value(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(pair))
    }
}

// Secrets never reach logs through Debug.
impl fmt::Debug for Basic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Basic({}:***)", self.username)
    }
}

pub(crate) struct Credentials {
    by_host: HashMap<String, Basic>,
    google: Option<GoogleTokenProvider>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// Reads every static credential once, so that a missing password
    /// variable or a broken `config.json` fails at start-up, not at the first
    /// event that needs the registry.
    pub(crate) fn from_config(config: &RegistryConfig) -> Result<Self, CredentialsError> {
        let mut by_host = HashMap::new();
        if let Some(path) = &config.docker_config {
            by_host.extend(read_docker_config(path)?);
        }
        for (host, h) in &config.hosts {
            let password = match (&h.password, &h.password_env) {
                (Some(_), Some(_)) => {
                    return Err(CredentialsError::BothPasswords { host: host.clone() });
                }
                (Some(p), None) => Some(p.clone()),
                (None, Some(var)) => {
                    Some(
                        std::env::var(var).map_err(|e| CredentialsError::PasswordEnv {
                            host: host.clone(),
                            var: var.clone(),
                            error: e,
                        })?,
                    )
                }
                (None, None) => None,
            };
            match (&h.username, password) {
                (Some(username), Some(password)) => {
                    by_host.insert(
                        host.clone(),
                        Basic {
                            username: username.clone(),
                            password,
                        },
                    );
                }
                (None, None) => {}
                _ => return Err(CredentialsError::HalfConfigured { host: host.clone() }),
            }
        }
        Ok(Self {
            by_host,
            google: config.google.as_ref().map(GoogleTokenProvider::new),
        })
    }

    /// The credentials for `host`, if any.
    pub(crate) async fn for_host(
        &self,
        host: &str,
        http: &reqwest::Client,
        stats: &Stats,
    ) -> Result<Option<Basic>, ErrorKind> {
        if let Some(basic) = self.by_host.get(host) {
            return Ok(Some(basic.clone()));
        }
        match &self.google {
            Some(google) if google.serves(host) => Ok(Some(Basic {
                username: "oauth2accesstoken".into(),
                password: google.token(http, stats).await?,
            })),
            _ => Ok(None),
        }
    }
}

fn read_docker_config(path: &Path) -> Result<HashMap<String, Basic>, CredentialsError> {
    let at = |problem: DockerConfigProblem| CredentialsError::DockerConfig {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read(path).map_err(|e| at(DockerConfigProblem::Read(e)))?;
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|e| at(DockerConfigProblem::Json(e)))?;
    let mut out = HashMap::new();
    for (key, entry) in config.auths {
        let basic = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| at(DockerConfigProblem::NotBase64 { key: key.clone() }))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| at(DockerConfigProblem::NoColon { key: key.clone() }))?;
                Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            }
            (_, Some(username), Some(password)) => Basic { username, password },
            // Entries filled by a credential store or helper carry no secret.
            _ => continue,
        };
        out.insert(auths_key_host(&key).to_owned(), basic);
    }
    Ok(out)
}

/// Why the static credentials cannot be read. The messages name the
/// configuration key or the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("hosts.{host}: set password or password_env, not both")]
    BothPasswords { host: String },
    #[error("hosts.{host}.password_env: ${var}: {error}")]
    PasswordEnv {
        host: String,
        var: String,
        error: std::env::VarError,
    },
    #[error("hosts.{host}: username and password go together")]
    HalfConfigured { host: String },
    #[error("docker config {}: {problem}", path.display())]
    DockerConfig {
        path: PathBuf,
        problem: DockerConfigProblem,
    },
}

/// What is wrong with a Docker `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigProblem {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("auths.{key:?}.auth is not base64 of user:password")]
    NotBase64 { key: String },
    #[error("auths.{key:?}.auth has no `:`")]
    NoColon { key: String },
}

/// `auths` keys are hosts, sometimes written as URLs
/// (`https://index.docker.io/v1/`).
fn auths_key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::config::HostConfig;

    #[test]
    fn docker_config_auths_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "127.0.0.1:5000": {{"username": "u2", "password": "p2"}},
                    "gcr.io": {{}}
                }}, "credHelpers": {{"us.gcr.io": "gcloud"}}}}"#,
                STANDARD.encode("u1:p:1")
            ),
        )
        .unwrap();
        let creds = read_docker_config(&path).unwrap();
        assert_eq!(
            creds["index.docker.io"],
            Basic {
                username: "u1".into(),
                password: "p:1".into()
            }
        );
        assert_eq!(creds["127.0.0.1:5000"].username, "u2");
        assert!(!creds.contains_key("gcr.io"));
    }

    #[test]
    fn broken_docker_config_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "!!!"}}}"#).unwrap();
        let err = read_docker_config(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("base64"),
            "{err}"
        );
        assert!(read_docker_config(&dir.path().join("missing.json")).is_err());
    }

    #[tokio::test]
    async fn configured_host_wins_over_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {"r.example": {"username": "docker", "password": "x"}}}"#,
        )
        .unwrap();
        let mut config = RegistryConfig {
            docker_config: Some(path),
            ..RegistryConfig::default()
        };
        config.hosts.insert(
            "r.example".into(),
            HostConfig {
                username: Some("configured".into()),
                password: Some("y".into()),
                ..HostConfig::default()
            },
        );
        let creds = Credentials::from_config(&config).unwrap();
        let got = creds
            .for_host("r.example", &reqwest::Client::new(), &Stats::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.username, "configured");
        assert_eq!(format!("{got:?}"), "Basic(configured:***)");
    }

    #[test]
    fn half_configured_host_is_rejected() {
        let mut config = RegistryConfig::default();
        config.hosts.insert(
            "r.example".into(),
            HostConfig {
                username: Some("u".into()),
                ..HostConfig::default()
            },
        );
        assert!(Credentials::from_config(&config).is_err());
    }
}
