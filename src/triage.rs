//! Triage over HTTP: `POST /v1/findings/{id}/acknowledge` and `/resolve`
//! (docs/design.md §9b, §9c). Who may triage: the bearer tokens of the
//! `triage.tokens` section, each naming the person or system holding it,
//! or OIDC tokens verified as the push route verifies them, naming an
//! allowed service account. That name is the "who" recorded with the
//! change; a request cannot choose it.
//!
//! Order of checks, each refusal counted in
//! `rejected_requests_total{reason}`: the rate limit (`triage_rate_limited`,
//! 429) before anything else, so that guessing tokens costs time;
//! credentials from the headers (`triage_unauthorized`, 401/403) before the
//! body is read; then the body.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::findings::triage::BadChange;
use crate::findings::{FindingId, StoreError, TriageAction, TriageChange, now_ms, off_thread};
use crate::registry::{RateLimit, TokenBucket};
use crate::server::AppState;
use crate::sources::push_auth::{PushAuthConfig, PushVerifier};

/// The `triage` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriageConfig {
    /// Bearer tokens, each naming who holds it.
    pub tokens: Vec<TokenConfig>,
    /// Accept Google-signed OIDC tokens (as `pubsub.push.auth` does, with
    /// its own audience and service accounts); the email is the name.
    pub oidc: Option<PushAuthConfig>,
    /// Triage requests served, whoever sends them; beyond, 429.
    pub rate_limit: RateLimit,
}

impl Default for TriageConfig {
    fn default() -> Self {
        TriageConfig {
            tokens: Vec::new(),
            oidc: None,
            rate_limit: RateLimit {
                requests_per_second: 2.0,
                burst: 20,
            },
        }
    }
}

/// One `triage.tokens[]` entry: the secret comes from the environment or a
/// file, never from the configuration itself.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The person or system holding the token: recorded as who triaged.
    pub name: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
}

// Configurations get logged; where a token is kept may be, the token not.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// Why the `triage` section cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TriageConfigError {
    #[error("triage.tokens[{index}]: {problem}")]
    Token { index: usize, problem: String },
    #[error("triage.tokens: two tokens are named {0:?}")]
    DuplicateName(String),
    #[error("triage.tokens: {first:?} and {second:?} have the same token")]
    SameToken { first: String, second: String },
    #[error("triage.oidc: {0}")]
    Oidc(crate::sources::push_auth::ConfigError),
    #[error("triage.rate_limit: requests_per_second must be more than 0")]
    RateLimit,
}

/// Shortest token accepted, as for the admin token.
const MIN_TOKEN_LEN: usize = 16;

/// Who may triage, checked from a request's headers.
pub struct TriageAccess {
    /// (name, token).
    tokens: Vec<(String, Box<[u8]>)>,
    oidc: Option<Arc<PushVerifier>>,
    bucket: TokenBucket,
}

impl std::fmt::Debug for TriageAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriageAccess")
            .field(
                "names",
                &self.tokens.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("oidc", &self.oidc.is_some())
            .finish_non_exhaustive()
    }
}

/// A refused request: the status, the message and the metric reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub reason: &'static str,
}

impl TriageAccess {
    /// Reads the tokens (through `env` and the files named) and builds the
    /// OIDC verifier.
    pub fn from_config(
        config: &TriageConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<TriageAccess, TriageConfigError> {
        let mut tokens: Vec<(String, Box<[u8]>)> = Vec::new();
        for (index, t) in config.tokens.iter().enumerate() {
            let at = |problem: String| TriageConfigError::Token { index, problem };
            if crate::findings::TriageChange::new(TriageAction::Resolve, &*t.name, "").is_err() {
                return Err(at(format!(
                    "name {:?} must be 1 to {} bytes without control characters",
                    crate::event::excerpt(&t.name),
                    crate::findings::triage::MAX_ACTOR_BYTES
                )));
            }
            let token = match (&t.token_env, &t.token_file) {
                (Some(var), None) => env(var).ok_or_else(|| {
                    at(format!("token_env: environment variable {var} is not set"))
                })?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| at(format!("token_file {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
                _ => return Err(at("set exactly one of token_env, token_file".into())),
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(at(format!(
                    "the token must be at least {MIN_TOKEN_LEN} characters"
                )));
            }
            if tokens.iter().any(|(name, _)| *name == t.name) {
                return Err(TriageConfigError::DuplicateName(t.name.clone()));
            }
            if let Some((first, _)) = tokens.iter().find(|(_, k)| **k == *token.as_bytes()) {
                // One token, two names: who triaged could not be told.
                return Err(TriageConfigError::SameToken {
                    first: first.clone(),
                    second: t.name.clone(),
                });
            }
            tokens.push((t.name.clone(), token.into_bytes().into_boxed_slice()));
        }
        let oidc = config
            .oidc
            .clone()
            .map(|c| PushVerifier::new(c).map(Arc::new))
            .transpose()
            .map_err(TriageConfigError::Oidc)?;
        let Some(bucket) = TokenBucket::new(config.rate_limit) else {
            return Err(TriageConfigError::RateLimit);
        };
        Ok(TriageAccess {
            tokens,
            oidc,
            bucket,
        })
    }

    /// Whether anyone at all may triage.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.oidc.is_some()
    }

    /// Takes one request from the rate limit.
    pub fn admit(&self) -> Result<(), Refusal> {
        if self.bucket.try_take() {
            Ok(())
        } else {
            Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "too many triage requests; try again shortly".into(),
                reason: "triage_rate_limited",
            })
        }
    }

    /// The name of who sends the request, from its `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let refuse = |status, message: String| Refusal {
            status,
            message,
            reason: "triage_unauthorized",
        };
        if !self.enabled() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "triage is disabled: configure triage.tokens or triage.oidc".into(),
            ));
        }
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| crate::secret::bearer(v.as_bytes()))
        else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "triage needs `Authorization: Bearer <token>`".into(),
            ));
        };
        // Every configured token is compared, in constant time each, so
        // the time taken says nothing about which one came close.
        let mut found = None;
        for (name, token) in &self.tokens {
            if bool::from(subtle::ConstantTimeEq::ct_eq(presented, &token[..])) {
                found = Some(name);
            }
        }
        if let Some(name) = found {
            return Ok(name.clone());
        }
        if let Some(verifier) = &self.oidc {
            return match verifier.verify_headers(headers).await {
                Ok(claims) => Ok(claims.email),
                Err(e) => Err(refuse(e.status(), format!("OIDC token refused: {e}"))),
            };
        }
        Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not one of triage.tokens".into(),
        ))
    }
}

/// The body of a triage request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriageBody {
    #[serde(default)]
    note: String,
    /// Optional: who the caller believes it is. Refused (403) unless it is
    /// the name its credentials carry, so a script cannot record a change
    /// under someone else's name by mistake.
    #[serde(rename = "as")]
    as_name: Option<String>,
}

pub async fn acknowledge(
    state: State<Arc<AppState>>,
    id: Path<String>,
    request: Request,
) -> Response {
    triage(state, id, TriageAction::Acknowledge, request).await
}

pub async fn resolve(state: State<Arc<AppState>>, id: Path<String>, request: Request) -> Response {
    triage(state, id, TriageAction::Resolve, request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// 200 `{finding, changed}`; 404 for no such finding, 409 for a change the
/// state does not allow, 400 for a bad body, 503 when the store fails.
async fn triage(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    action: TriageAction,
    request: Request,
) -> Response {
    let access = state.triage.clone();
    let refused = |r: Refusal| {
        state.metrics.rejected(r.reason);
        error(r.status, r.message)
    };
    if let Err(r) = access.admit() {
        return refused(r);
    }
    let who = match access.authenticate(request.headers()).await {
        Ok(who) => who,
        Err(r) => return refused(r),
    };
    let Ok(id) = id.parse::<i64>().map(FindingId) else {
        return error(StatusCode::NOT_FOUND, "a finding id is a number");
    };
    let body = match axum::body::to_bytes(
        request.into_body(),
        crate::findings::triage::MAX_NOTE_BYTES * 8,
    )
    .await
    {
        Ok(body) => body,
        Err(_) => {
            state.metrics.rejected("body_too_large");
            return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
        }
    };
    let body: TriageBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriageBody {
            note: String::new(),
            as_name: None,
        }
    } else {
        // A repeated key is refused like any malformed body: the note
        // must be the one the caller meant.
        let parsed = crate::sources::json::parse(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()));
        match parsed {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"note\": \"…\"}}: {e}"),
                );
            }
        }
    };
    if let Some(claimed) = &body.as_name
        && *claimed != who
    {
        state.metrics.rejected("triage_unauthorized");
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "these credentials are {who:?}'s, not {:?}'s",
                crate::event::excerpt(claimed)
            ),
        );
    }
    let change = match TriageChange::new(action, who, body.note) {
        Ok(change) => change,
        Err(e @ (BadChange::Actor | BadChange::NoteTooLong | BadChange::NoteControl)) => {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let by = change.by.clone();
    match off_thread(&state.store, move |s| s.triage(id, &change, now_ms())).await {
        Ok(triaged) => {
            tracing::info!(
                finding = id.0,
                action = action.as_str(),
                by,
                changed = triaged.changed,
                "finding triaged"
            );
            axum::Json(json!({ "finding": triaged.finding, "changed": triaged.changed }))
                .into_response()
        }
        Err(e @ StoreError::NoSuchFinding { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ StoreError::Triage { .. }) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &[(&str, &str)]) -> TriageAccess {
        let config = TriageConfig {
            tokens: tokens
                .iter()
                .map(|(name, var)| TokenConfig {
                    name: (*name).into(),
                    token_env: Some((*var).into()),
                    token_file: None,
                })
                .collect(),
            ..TriageConfig::default()
        };
        TriageAccess::from_config(&config, |var| Some(format!("token-of-{var}-0123456789")))
            .unwrap()
    }

    fn with_bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn the_token_names_who_triages() {
        let a = access(&[("alice", "A"), ("ci-bot", "B")]);
        assert_eq!(
            a.authenticate(&with_bearer("token-of-B-0123456789")).await,
            Ok("ci-bot".into())
        );
        let cases = [
            (HeaderMap::new(), StatusCode::UNAUTHORIZED),
            (
                with_bearer("token-of-C-0123456789"),
                StatusCode::UNAUTHORIZED,
            ),
            (
                with_bearer("token-of-A-012345678"),
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (headers, status) in cases {
            let r = a.authenticate(&headers).await.unwrap_err();
            assert_eq!((r.status, r.reason), (status, "triage_unauthorized"));
        }
        let none = access(&[]);
        let r = none
            .authenticate(&with_bearer("token-of-A-0123456789"))
            .await
            .unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn tokens_are_checked_when_loaded() {
        let load = |tokens: Vec<TokenConfig>, value: &'static str| {
            TriageAccess::from_config(
                &TriageConfig {
                    tokens,
                    ..TriageConfig::default()
                },
                move |_| Some(value.to_owned()),
            )
        };
        let t = |name: &str| TokenConfig {
            name: name.into(),
            token_env: Some("V".into()),
            token_file: None,
        };
        let short = load(vec![t("alice")], "short").unwrap_err();
        assert!(short.to_string().contains("at least 16"), "{short}");
        let same = load(vec![t("alice"), t("bob")], "a-long-enough-token").unwrap_err();
        assert!(
            matches!(same, TriageConfigError::SameToken { .. }),
            "{same}"
        );
        let twice = load(vec![t("alice"), t("alice")], "a-long-enough-token").unwrap_err();
        assert!(
            matches!(twice, TriageConfigError::DuplicateName(_)),
            "{twice}"
        );
        let unnamed = load(vec![t("")], "a-long-enough-token").unwrap_err();
        assert!(
            unnamed.to_string().starts_with("triage.tokens[0]: name"),
            "{unnamed}"
        );
        let neither = TokenConfig {
            token_env: None,
            ..t("alice")
        };
        let neither = load(vec![neither], "a-long-enough-token").unwrap_err();
        assert!(neither.to_string().contains("exactly one"), "{neither}");
    }
}
