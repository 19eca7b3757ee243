//! Google OAuth2 access tokens for Artifact Registry and Container Registry.
//! Both accept the token as the basic credentials `oauth2accesstoken:<token>`,
//! so the rest of the client treats it like any other password.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::{GoogleAuthConfig, GoogleTokenSource};
use super::error::ErrorKind;
use super::http::url_host;
use super::stats::{Outcome, RequestKind, Stats};

const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// A cached token is replaced this long before it expires, so that a request
/// never leaves with a token that dies in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

pub(crate) struct GoogleTokenProvider {
    source: GoogleTokenSource,
    hosts: Vec<String>,
    command_ttl: Duration,
    /// Held across a refresh so that concurrent requests wait for one
    /// command run or metadata request instead of each starting their own.
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct MetadataToken {
    access_token: String,
    expires_in: u64,
}

impl GoogleTokenProvider {
    pub(crate) fn new(config: &GoogleAuthConfig) -> Self {
        Self {
            source: config.token.clone(),
            hosts: config.hosts.clone(),
            command_ttl: config.command_token_ttl,
            cached: Mutex::new(None),
        }
    }

    /// Whether `host` matches one of the configured patterns.
    pub(crate) fn serves(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                None => pattern == host,
            })
    }

    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        stats: &Stats,
    ) -> Result<String, ErrorKind> {
        let fail = |e: TokenError| ErrorKind::Credentials(format!("google access token: {e}"));
        match &self.source {
            GoogleTokenSource::Static(token) => Ok(token.clone()),
            GoogleTokenSource::Env(var) => {
                std::env::var(var)
                    .map(|t| t.trim().to_owned())
                    .map_err(|error| {
                        fail(TokenError::Env {
                            var: var.clone(),
                            error,
                        })
                    })
            }
            GoogleTokenSource::Command(argv) => {
                let mut cached = self.cached.lock().await;
                if let Some((token, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(token.clone());
                }
                let token = run_command(argv).await.map_err(fail)?;
                *cached = Some((token.clone(), Instant::now() + self.command_ttl));
                Ok(token)
            }
            GoogleTokenSource::MetadataServer(url) => {
                let mut cached = self.cached.lock().await;
                if let Some((token, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(token.clone());
                }
                let url = if url.is_empty() {
                    METADATA_TOKEN_URL
                } else {
                    url
                };
                let token = fetch_metadata_token(http, url, stats).await.map_err(fail)?;
                let lifetime = Duration::from_secs(token.expires_in).saturating_sub(EXPIRY_MARGIN);
                *cached = Some((token.access_token.clone(), Instant::now() + lifetime));
                Ok(token.access_token)
            }
        }
    }
}

async fn run_command(argv: &[String]) -> Result<String, TokenError> {
    let (program, args) = argv.split_first().ok_or(TokenError::EmptyCommand)?;
    let output = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| TokenError::Spawn {
            program: program.clone(),
            error,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(TokenError::Exited {
            program: program.clone(),
            status: output.status,
            stderr: stderr.trim().chars().take(300).collect(),
        });
    }
    let token = String::from_utf8(output.stdout).map_err(|_| TokenError::NotUtf8 {
        program: program.clone(),
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::NoToken {
            program: program.clone(),
        });
    }
    Ok(token.to_owned())
}

async fn fetch_metadata_token(
    http: &reqwest::Client,
    url: &str,
    stats: &Stats,
) -> Result<MetadataToken, TokenError> {
    let at = |problem: MetadataProblem| TokenError::Metadata {
        url: url.to_owned(),
        problem,
    };
    let host = reqwest::Url::parse(url)
        .map(|u| url_host(&u))
        .map_err(|e| at(MetadataProblem::Url(e)))?;
    let response = http
        .get(url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            let outcome = if e.is_timeout() {
                Outcome::Timeout
            } else {
                Outcome::NetworkError
            };
            stats.request(&host, RequestKind::Token, outcome);
            return Err(at(MetadataProblem::Http(e)));
        }
    };
    let status = response.status();
    if !status.is_success() {
        stats.request(&host, RequestKind::Token, Outcome::OtherStatus);
        return Err(at(MetadataProblem::Status(status)));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| at(MetadataProblem::Http(e)))?;
    let token = serde_json::from_slice(&body).map_err(|e| at(MetadataProblem::Json(e)))?;
    stats.request(&host, RequestKind::Token, Outcome::Ok);
    Ok(token)
}

/// Why no Google access token could be had; it becomes
/// [`ErrorKind::Credentials`], so only its message travels further.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("${var}: {error}")]
    Env {
        var: String,
        error: std::env::VarError,
    },
    #[error("empty command")]
    EmptyCommand,
    #[error("{program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("{program} exited with {status}: {stderr}")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{program} printed a token that is not UTF-8")]
    NotUtf8 { program: String },
    #[error("{program} printed no token")]
    NoToken { program: String },
    #[error("{url}: {problem}")]
    Metadata {
        url: String,
        problem: MetadataProblem,
    },
}

/// What went wrong asking the metadata server.
#[derive(Debug, thiserror::Error)]
enum MetadataProblem {
    #[error("{0}")]
    Url(<reqwest::Url as std::str::FromStr>::Err),
    #[error("{0}")]
    Http(reqwest::Error),
    #[error("status {0}")]
    Status(reqwest::StatusCode),
    #[error("{0}")]
    Json(serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(source: GoogleTokenSource) -> GoogleTokenProvider {
        GoogleTokenProvider::new(&GoogleAuthConfig {
            token: source,
            hosts: vec!["gcr.io".into(), "*.gcr.io".into(), "*.pkg.dev".into()],
            command_token_ttl: Duration::from_secs(600),
        })
    }

    #[test]
    fn host_patterns() {
        let p = provider(GoogleTokenSource::Static("t".into()));
        assert!(p.serves("gcr.io"));
        assert!(p.serves("us.gcr.io"));
        assert!(p.serves("us-central1-docker.pkg.dev"));
        assert!(!p.serves("notgcr.io"));
        assert!(!p.serves(".gcr.io"));
        assert!(!p.serves("pkg.dev"));
        assert!(!p.serves("127.0.0.1:5000"));
    }

    #[tokio::test]
    async fn command_token_is_trimmed_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("runs");
        let script = format!("echo run >> {}; echo '  tok-123  '", counter.display());
        let p = provider(GoogleTokenSource::Command(vec![
            "sh".into(),
            "-c".into(),
            script,
        ]));
        let http = reqwest::Client::new();
        let stats = Stats::default();
        assert_eq!(p.token(&http, &stats).await.unwrap(), "tok-123");
        assert_eq!(p.token(&http, &stats).await.unwrap(), "tok-123");
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "run\n");
    }

    #[tokio::test]
    async fn failing_command_is_a_credentials_error() {
        let p = provider(GoogleTokenSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "echo nope >&2; exit 3".into(),
        ]));
        let err = p
            .token(&reqwest::Client::new(), &Stats::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ErrorKind::Credentials(m) if m.contains("nope")),
            "{err}"
        );
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn metadata_server_token_is_fetched_once() {
        use wiremock::matchers::{header, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/token"))
            .and(header("Metadata-Flavor", "Google"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                r#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            ))
            .expect(1)
            .mount(&server)
            .await;
        let p = provider(GoogleTokenSource::MetadataServer(format!(
            "{}/token",
            server.uri()
        )));
        let http = reqwest::Client::new();
        let stats = Stats::default();
        for _ in 0..3 {
            assert_eq!(p.token(&http, &stats).await.unwrap(), "ya29.x");
        }
        assert_eq!(stats.snapshot().total(RequestKind::Token), 1);
    }
}
