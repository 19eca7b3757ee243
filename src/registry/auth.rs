//! The HTTP authentication dance: which `Authorization` header a request
//! carries, what a `401` challenge teaches about a host, and bearer tokens
//! from the host's token service (`WWW-Authenticate: Bearer realm=…`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use serde::Deserialize;
use tokio::time::Instant;

use super::credentials::Credentials;
use super::error::ErrorKind;
use super::http::{ReadError, read_capped, url_host};
use super::stats::{Outcome, RequestKind, Stats};

/// Token responses are small JWTs; anything bigger is not one.
const MAX_TOKEN_RESPONSE: u64 = 1024 * 1024;

/// What a host asked for in its last `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Which kind of `Authorization` a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    Nothing,
    Basic,
    Bearer,
}

/// Everything a token request needs from the client.
pub(crate) struct Ctx<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) stats: &'a Stats,
    /// Whether the registry itself is plain HTTP, which is the only case in
    /// which a plain-HTTP realm is followed (credentials go to the realm).
    pub(crate) allow_http_realm: bool,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<(String, Instant)>>>;

/// What names one bearer token: the registry host and repository path it
/// is scoped to, and the token service (from the host's challenge) that
/// issues it.
struct TokenRequest<'a> {
    host: &'a str,
    path: &'a str,
    realm: &'a str,
    service: Option<&'a str>,
}

pub(crate) struct Authenticator {
    credentials: Credentials,
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Bearer tokens by (host, repository path). One async lock per slot, so
    /// concurrent requests for one repository share a single token request
    /// while other repositories proceed.
    tokens: Mutex<HashMap<(String, String), TokenSlot>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Authenticator {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            challenges: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The `Authorization` header for a pull from `host`/`path`. Basic
    /// credentials are sent before any challenge, which saves a round trip on
    /// every basic-auth registry; a bearer host gets a token once its
    /// challenge is known.
    pub(crate) async fn authorize(
        &self,
        ctx: &Ctx<'_>,
        host: &str,
        path: &str,
    ) -> Result<(Option<String>, Sent), ErrorKind> {
        let challenge = lock(&self.challenges).get(host).cloned();
        if let Some(Challenge::Bearer { realm, service }) = challenge {
            let request = TokenRequest {
                host,
                path,
                realm: &realm,
                service: service.as_deref(),
            };
            let token = self.bearer_token(ctx, &request).await?;
            return Ok((Some(format!("Bearer {token}")), Sent::Bearer));
        }
        match self.credentials.for_host(host, ctx.http, ctx.stats).await? {
            Some(basic) => Ok((Some(basic.header_value()), Sent::Basic)),
            None => Ok((None, Sent::Nothing)),
        }
    }

    /// Learns from a `401`: returns whether one more attempt with different
    /// credentials can succeed.
    pub(crate) async fn on_unauthorized(
        &self,
        ctx: &Ctx<'_>,
        host: &str,
        path: &str,
        headers: &HeaderMap,
        sent: Sent,
    ) -> Result<bool, ErrorKind> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let chosen = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }))
            .or_else(|| challenges.first())
            .cloned();
        let Some(chosen) = chosen else {
            return Ok(false);
        };
        lock(&self.challenges).insert(host.to_owned(), chosen.clone());
        match chosen {
            Challenge::Bearer { .. } => {
                if sent == Sent::Bearer {
                    // The token was refused (revoked, or expired early): drop
                    // it so that the retry asks for a fresh one.
                    self.forget_token(host, path);
                }
                Ok(true)
            }
            Challenge::Basic => Ok(sent != Sent::Basic
                && self
                    .credentials
                    .for_host(host, ctx.http, ctx.stats)
                    .await?
                    .is_some()),
        }
    }

    fn forget_token(&self, host: &str, path: &str) {
        let slot = lock(&self.tokens)
            .get(&(host.to_owned(), path.to_owned()))
            .cloned();
        // A slot that is locked is being refilled right now, with a token at
        // least as new as the refused one.
        if let Some(slot) = slot
            && let Ok(mut token) = slot.try_lock()
        {
            *token = None;
        }
    }

    async fn bearer_token(&self, ctx: &Ctx<'_>, t: &TokenRequest<'_>) -> Result<String, ErrorKind> {
        let slot = lock(&self.tokens)
            .entry((t.host.to_owned(), t.path.to_owned()))
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.request_token(ctx, t).await?;
        // Renew before the end so that no request leaves with a dying token.
        *cached = Some((token.clone(), Instant::now() + lifetime.mul_f64(0.9)));
        Ok(token)
    }

    async fn request_token(
        &self,
        ctx: &Ctx<'_>,
        t: &TokenRequest<'_>,
    ) -> Result<(String, Duration), ErrorKind> {
        let fail = |detail: String| ErrorKind::TokenService {
            realm: t.realm.to_owned(),
            detail,
        };
        let mut url = reqwest::Url::parse(t.realm).map_err(|e| fail(format!("bad realm: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if ctx.allow_http_realm => {}
            scheme => {
                return Err(fail(format!(
                    "refusing to send credentials to a {scheme} realm of an HTTPS registry"
                )));
            }
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = t.service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope(t.path));
        }
        let realm_host = url_host(&url);
        let mut request = ctx.http.get(url);
        if let Some(basic) = self
            .credentials
            .for_host(t.host, ctx.http, ctx.stats)
            .await?
        {
            request = request.header(AUTHORIZATION, basic.header_value());
        }
        let record = |outcome| ctx.stats.request(&realm_host, RequestKind::Token, outcome);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                record(if e.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::NetworkError
                });
                return Err(fail(e.to_string()));
            }
        };
        let status = response.status();
        if !status.is_success() {
            record(match status.as_u16() {
                401 | 403 => Outcome::Unauthorized,
                429 => Outcome::RateLimited,
                500..=599 => Outcome::ServerError,
                _ => Outcome::OtherStatus,
            });
            return Err(fail(format!("status {status}")));
        }
        let body = match read_capped(response, MAX_TOKEN_RESPONSE).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => {
                record(Outcome::TooLarge);
                return Err(fail("response too large".into()));
            }
            Err(ReadError::Timeout) => {
                record(Outcome::Timeout);
                return Err(fail("timed out".into()));
            }
            Err(ReadError::Network(e)) => {
                record(Outcome::NetworkError);
                return Err(fail(e));
            }
        };
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            record(Outcome::OtherStatus);
            fail(format!("unparseable token response: {e}"))
        })?;
        let Some(token) = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
        else {
            record(Outcome::OtherStatus);
            return Err(fail("response has no token".into()));
        };
        record(Outcome::Ok);
        // The distribution token spec says 60 seconds when unspecified.
        Ok((
            token,
            Duration::from_secs(parsed.expires_in.unwrap_or(60).max(1)),
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Maps of learned challenges and token slots stay valid after a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The token scope for a request about `path`; the empty path is the
/// registry's catalog (no repository path is empty).
pub(crate) const CATALOG_PATH: &str = "";

fn scope(path: &str) -> String {
    if path == CATALOG_PATH {
        "registry:catalog:*".to_owned()
    } else {
        format!("repository:{path}:pull")
    }
}

/// The `Basic` and `Bearer` challenges in one `WWW-Authenticate` value
/// (RFC 9110 §11.6.1: `scheme param=value, param="quoted, value", scheme2 …`).
pub(crate) fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut raw: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        rest = rest[end..].trim_start();
        if let Some(after) = rest.strip_prefix('=') {
            let (value, after) = parse_param_value(after.trim_start());
            rest = after;
            if let Some((_, params)) = raw.last_mut() {
                params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            raw.push((word.to_ascii_lowercase(), HashMap::new()));
        }
    }
    raw.into_iter()
        .filter_map(|(scheme, mut params)| match scheme.as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: params.remove("realm")?,
                service: params.remove("service"),
            }),
            _ => None,
        })
        .collect()
}

/// A quoted string (with `\` escapes) or a bare token; returns the value and
/// the remaining input.
fn parse_param_value(s: &str) -> (String, &str) {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find(',').unwrap_or(s.len());
        return (s[..end].trim().to_owned(), &s[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &quoted[i + 1..]),
            c => value.push(c),
        }
    }
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="http://127.0.0.1:5059/token",service="demo-registry",scope="repository:secure/x:pull,push""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "http://127.0.0.1:5059/token".into(),
                service: Some("demo-registry".into()),
            }]
        );
    }

    #[test]
    fn several_challenges_in_one_value_and_odd_spacing() {
        let c = parse_challenges(
            r#"Basic realm="a \"quoted\" realm", bearer  realm = "https://auth.example/token" , Negotiate"#,
        );
        assert_eq!(
            c,
            vec![
                Challenge::Basic,
                Challenge::Bearer {
                    realm: "https://auth.example/token".into(),
                    service: None
                }
            ]
        );
    }

    #[test]
    fn bearer_without_realm_and_garbage_are_ignored() {
        assert!(parse_challenges(r#"Bearer service="x""#).is_empty());
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(r#"=,,"unterminated"#).is_empty());
        assert!(parse_challenges("\u{0}\u{ffff}==\"").is_empty());
    }
}
