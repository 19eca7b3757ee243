//! Verification of the Google-signed OIDC token Pub/Sub attaches to every
//! push request (`Authorization: Bearer <JWT>`; docs/reference/event-formats.md
//! §2, "Authentication").
//!
//! A token is accepted when its RS256 signature checks against the key its
//! `kid` names in Google's JWKS, `iss` is one of the Google issuers, `aud` is
//! exactly the configured audience, `exp`/`iat` (and `nbf`, if present) hold
//! within a small leeway, `email` is an allowed service account and
//! `email_verified` is true.
//!
//! The JWKS is cached by [`jwks::KeyCache`] (its documentation says how
//! fetches are limited).
//!
//! Errors name the check that failed and never contain the token.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use crate::event::excerpt;

mod jwks;

pub use jwks::JwksError;
use jwks::KeyCache;

/// Google's JWKS (`jwks_uri` of `https://accounts.google.com`).
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// Google ID tokens carry either spelling.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// How tokens are checked and where keys come from (`pubsub.push.auth` in
/// the service configuration; only `audience` and `service_account_emails`
/// are required).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushAuthConfig {
    /// The subscription's `pushConfig.oidcToken.audience` (by default the
    /// push endpoint URL); compared exactly.
    pub audience: String,
    /// Service accounts whose tokens are accepted
    /// (`pushConfig.oidcToken.serviceAccountEmail`).
    pub service_account_emails: Vec<String>,
    /// Accepted `iss` values; [`GOOGLE_ISSUERS`] by default.
    #[serde(default = "defaults::issuers")]
    pub issuers: Vec<String>,
    /// Where the signing keys are published; [`GOOGLE_JWKS_URL`] by default.
    #[serde(default = "defaults::jwks_url")]
    pub jwks_url: String,
    /// Clock skew allowed on `exp`, `iat` and `nbf`. Default `10s`.
    #[serde(default = "defaults::leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Least time between two JWKS fetches, whatever causes them (first
    /// use, expiry, unknown `kid`, a failed fetch), and so the shortest time
    /// keys are kept. At least 1 s. Default `1m`.
    #[serde(default = "defaults::min_refetch_interval", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    /// How long keys are kept when the response has no `max-age`. Default `1h`.
    #[serde(default = "defaults::default_max_age", with = "humantime_serde")]
    pub default_max_age: Duration,
    /// Longest time keys are kept, whatever `max-age` says. Default `1d`.
    #[serde(default = "defaults::max_max_age", with = "humantime_serde")]
    pub max_max_age: Duration,
    /// Timeout of one JWKS request. Default `10s`.
    #[serde(default = "defaults::fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    pub fn issuers() -> Vec<String> {
        super::GOOGLE_ISSUERS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    pub fn jwks_url() -> String {
        super::GOOGLE_JWKS_URL.to_owned()
    }
    pub fn leeway() -> Duration {
        Duration::from_secs(10)
    }
    pub fn min_refetch_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn default_max_age() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn max_max_age() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn fetch_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl PushAuthConfig {
    /// Google's issuers and JWKS, a 10 s leeway (as google-cloud-auth), one
    /// refetch a minute, keys kept 1 h without `max-age` and at most 1 day.
    pub fn new<E: Into<String>>(
        audience: impl Into<String>,
        service_account_emails: impl IntoIterator<Item = E>,
    ) -> Self {
        PushAuthConfig {
            audience: audience.into(),
            service_account_emails: service_account_emails.into_iter().map(Into::into).collect(),
            issuers: defaults::issuers(),
            jwks_url: defaults::jwks_url(),
            leeway: defaults::leeway(),
            min_refetch_interval: defaults::min_refetch_interval(),
            default_max_age: defaults::default_max_age(),
            max_max_age: defaults::max_max_age(),
            fetch_timeout: defaults::fetch_timeout(),
        }
    }

    /// Fails fast on a configuration that could never accept a token, or
    /// that would let requests drive JWKS fetches.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.audience.trim().is_empty() {
            return Err(ConfigError("push auth: `audience` is empty".into()));
        }
        if self.service_account_emails.is_empty()
            || self
                .service_account_emails
                .iter()
                .any(|e| !e.contains('@') || e.trim() != e)
        {
            return Err(ConfigError(
                "push auth: `service_account_emails` must list at least one email, each without spaces"
                    .into(),
            ));
        }
        // Compared exactly, as Google's own verifiers do, and Google writes
        // service-account emails in lower case: an upper-case entry could
        // never match.
        if let Some(e) = self
            .service_account_emails
            .iter()
            .find(|e| e.chars().any(char::is_uppercase))
        {
            return Err(ConfigError(format!(
                "push auth: service account email {e:?} has upper-case letters: emails are \
                 compared exactly and Google issues them in lower case"
            )));
        }
        if self.issuers.is_empty() {
            return Err(ConfigError("push auth: `issuers` is empty".into()));
        }
        if self.min_refetch_interval < MIN_REFETCH_FLOOR {
            return Err(ConfigError(format!(
                "push auth: `min_refetch_interval` must be at least {MIN_REFETCH_FLOOR:?}: \
                 it is what keeps requests from driving JWKS fetches"
            )));
        }
        match reqwest::Url::parse(&self.jwks_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
            _ => Err(ConfigError(format!(
                "push auth: `jwks_url` {:?} is not an http(s) URL",
                self.jwks_url
            ))),
        }
    }
}

/// The lowest `min_refetch_interval` accepted.
pub const MIN_REFETCH_FLOOR: Duration = Duration::from_secs(1);

/// A configuration [`PushAuthConfig::validate`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub audience: String,
    /// The push service account.
    pub email: String,
    pub subject: Option<String>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Why a request was refused. Messages say which check failed; the token
/// itself never appears (values taken from it are truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    MissingHeader,
    #[error("Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("token is not a well-formed JWT: {0}")]
    MalformedToken(&'static str),
    #[error("token is signed with {0}, only RS256 is accepted")]
    UnsupportedAlgorithm(String),
    #[error("token header has no `kid`")]
    MissingKeyId,
    #[error("no published signing key has kid {0:?}")]
    UnknownKeyId(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claim `{0}` is missing or has the wrong type")]
    MissingClaim(&'static str),
    #[error("token issuer {0:?} is not accepted")]
    WrongIssuer(String),
    #[error("token audience {0:?} is not the configured audience")]
    WrongAudience(String),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (`iat` or `nbf` in the future)")]
    NotYetValid,
    #[error("token email {0:?} is not an allowed push service account")]
    EmailNotAllowed(String),
    #[error("token email is not verified")]
    EmailNotVerified,
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(JwksError),
}

impl AuthError {
    /// 503 when our side cannot get keys (a retry may succeed), 403 for a
    /// valid token of an identity that is not allowed, 401 otherwise. Pub/Sub
    /// redelivers on all three.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::EmailNotAllowed(_) | AuthError::EmailNotVerified => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Verifies push tokens; cheap to share (`Arc`) across requests.
pub struct PushVerifier {
    config: PushAuthConfig,
    validation: Validation,
    keys: KeyCache,
}

impl fmt::Debug for PushVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushVerifier")
            .field("config", &self.config)
            .field("kids", &self.keys.kids())
            .field("fetches", &self.keys.fetches.get())
            .finish_non_exhaustive()
    }
}

impl PushVerifier {
    /// A verifier with its own HTTP client.
    pub fn new(config: PushAuthConfig) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .build()
            .map_err(|e| ConfigError(format!("push auth: HTTP client: {e}")))?;
        Self::with_client(config, client)
    }

    /// A verifier fetching keys with `client`.
    pub fn with_client(
        config: PushAuthConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        // Signature and algorithm only: every claim is checked in
        // `check_claims`, so that each failure has its own error.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(PushVerifier {
            config,
            validation,
            keys: KeyCache::new(client),
        })
    }

    pub fn config(&self) -> &PushAuthConfig {
        &self.config
    }

    /// Counts fetches and suppressed refetches in the given counters (the
    /// service's metrics) instead of private ones.
    pub fn with_counters(mut self, fetches: Counter, refetches_suppressed: Counter) -> Self {
        self.keys.fetches = fetches;
        self.keys.refetches_suppressed = refetches_suppressed;
        self
    }

    /// JWKS fetches started so far.
    pub fn jwks_fetches(&self) -> u64 {
        self.keys.fetches.get()
    }

    /// Verifies the `Authorization` header of a push request.
    pub async fn verify(&self, authorization: Option<&HeaderValue>) -> Result<Claims, AuthError> {
        let token = bearer_token(authorization)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::MalformedToken("the header does not decode"))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(AuthError::MissingKeyId)?;
        let key = self.keys.key(&self.config, &kid).await?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => {
                    AuthError::UnsupportedAlgorithm("an algorithm the key does not fit".into())
                }
                ErrorKind::Json(_) => {
                    AuthError::MalformedToken("the claims are not the expected JSON")
                }
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    AuthError::MalformedToken("a part is not base64url")
                }
                _ => AuthError::MalformedToken("it does not decode"),
            },
        )?;
        self.check_claims(data.claims, unix_now())
    }

    /// Verifies the `Authorization` header found in `headers`.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Claims, AuthError> {
        self.verify(headers.get(header::AUTHORIZATION)).await
    }

    fn check_claims(&self, raw: RawClaims, now: u64) -> Result<Claims, AuthError> {
        let issuer = raw.iss.ok_or(AuthError::MissingClaim("iss"))?;
        if !self.config.issuers.contains(&issuer) {
            return Err(AuthError::WrongIssuer(excerpt(&issuer)));
        }
        let audience = match raw.aud {
            Some(Audience::One(a)) => a,
            // A JWT may carry a list; Google's carry one string.
            Some(Audience::Many(list)) => match list.iter().find(|a| **a == self.config.audience) {
                Some(a) => a.clone(),
                None => return Err(AuthError::WrongAudience(excerpt(&list.join(",")))),
            },
            None => return Err(AuthError::MissingClaim("aud")),
        };
        if audience != self.config.audience {
            return Err(AuthError::WrongAudience(excerpt(&audience)));
        }
        let leeway = self.config.leeway.as_secs_f64();
        let now_f = now as f64;
        let exp = raw.exp.ok_or(AuthError::MissingClaim("exp"))?;
        let iat = raw.iat.ok_or(AuthError::MissingClaim("iat"))?;
        if exp + leeway < now_f {
            return Err(AuthError::Expired);
        }
        if iat - leeway > now_f || raw.nbf.is_some_and(|nbf| nbf - leeway > now_f) {
            return Err(AuthError::NotYetValid);
        }
        let email = raw.email.ok_or(AuthError::MissingClaim("email"))?;
        // Exact, like Google's verifiers: `Pusher@…` is not `pusher@…`.
        if !self.config.service_account_emails.contains(&email) {
            return Err(AuthError::EmailNotAllowed(excerpt(&email)));
        }
        if !raw.email_verified.is_some_and(|v| v.0) {
            return Err(AuthError::EmailNotVerified);
        }
        Ok(Claims {
            issuer,
            audience,
            email,
            subject: raw.sub,
            issued_at: iat.max(0.0) as u64,
            expires_at: exp.max(0.0) as u64,
        })
    }
}

fn bearer_token(authorization: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::MissingHeader)?;
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim_start();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    email: Option<String>,
    email_verified: Option<Verified>,
    exp: Option<f64>,
    iat: Option<f64>,
    nbf: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// `email_verified` is a boolean in current Google tokens and was the
/// string `"true"` in older ones.
struct Verified(bool);

impl<'de> Deserialize<'de> for Verified {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Bool(bool),
            Text(String),
        }
        Ok(Verified(match Either::deserialize(d)? {
            Either::Bool(b) => b,
            Either::Text(s) => s.eq_ignore_ascii_case("true"),
        }))
    }
}
