//! Push OIDC token verification against keys generated here (`openssl`
//! CLI) and a JWKS served on loopback by wiremock, whose request log counts
//! the fetches.

use crate::support;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use image_auditor::sources::push_auth::{
    AuthError, Claims, JwksError, MIN_REFETCH_FLOOR, PushAuthConfig, PushVerifier,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::token::openssl;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AUDIENCE: &str = "https://auditor.example.com/pubsub/push";
const EMAIL: &str = "push@acme-prod.iam.gserviceaccount.com";
const JWKS_PATH: &str = "/oauth2/v3/certs";

struct Key {
    /// PKCS#1 DER, as `EncodingKey::from_rsa_der` wants it.
    private_der: Vec<u8>,
    /// Base64url modulus, for the JWK.
    n: String,
}

impl Key {
    fn generate() -> Key {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        let pem = pem.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            pem,
        ]);
        let private_der = openssl(&["rsa", "-in", pem, "-traditional", "-outform", "DER"]);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-in", pem, "-noout", "-modulus"])).unwrap();
        let hex_modulus = modulus.trim().strip_prefix("Modulus=").unwrap();
        let n = URL_SAFE_NO_PAD.encode(hex::decode(hex_modulus).unwrap());
        Key { private_der, n }
    }

    fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": self.n, "e": "AQAB"})
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_rsa_der(&self.private_der),
        )
        .unwrap()
    }
}

/// Three keys per test binary: generating RSA keys is the slow part.
fn keys() -> &'static [Key; 3] {
    static KEYS: OnceLock<[Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [Key::generate(), Key::generate(), Key::generate()])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a Pub/Sub push token (docs/reference/event-formats.md §2).
fn claims() -> Value {
    let now = now();
    json!({
        "aud": AUDIENCE,
        "azp": "113774264463038321964",
        "email": EMAIL,
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "113774264463038321964",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

fn jwks_response(body: &Value, cache_control: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("cache-control", cache_control)
        .insert_header("content-type", "application/json; charset=UTF-8")
        .set_body_json(body)
}

/// A JWKS endpoint that gives each of `answers` once, in turn, and the
/// last one to every later fetch.
async fn answering_in_turn(answers: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    let last = answers.len() - 1;
    for (i, answer) in answers.into_iter().enumerate() {
        let mock = Mock::given(method("GET"))
            .and(path(JWKS_PATH))
            .respond_with(answer);
        let mock = if i < last {
            mock.up_to_n_times(1)
        } else {
            mock
        };
        mock.mount(&server).await;
    }
    server
}

/// A JWKS endpoint serving `body`, cached as `cache_control` says.
async fn server_with(body: Value, cache_control: &str) -> MockServer {
    answering_in_turn(vec![jwks_response(&body, cache_control)]).await
}

async fn standard_server() -> MockServer {
    server_with(
        jwks(&[keys()[0].jwk("k1")]),
        "public, max-age=20000, must-revalidate, no-transform",
    )
    .await
}

fn verifier(server: &MockServer) -> PushVerifier {
    let mut config = PushAuthConfig::new(AUDIENCE, [EMAIL]);
    config.jwks_url = format!("{}{JWKS_PATH}", server.uri());
    PushVerifier::new(config).unwrap()
}

/// A verifier allowed the least time between fetches there is (1 s), for
/// tests that need a second fetch.
fn eager_verifier(server: &MockServer) -> PushVerifier {
    let mut config = PushAuthConfig::new(AUDIENCE, [EMAIL]);
    config.jwks_url = format!("{}{JWKS_PATH}", server.uri());
    config.min_refetch_interval = MIN_REFETCH_FLOOR;
    PushVerifier::new(config).unwrap()
}

/// Verifies `token` every 50 ms until `done` holds for the outcome (at most
/// 10 s): how a test waits for the refetch interval to pass, counting what
/// happened meanwhile rather than timing it.
async fn verify_until(
    v: &PushVerifier,
    token: &str,
    done: impl Fn(&Result<(), AuthError>) -> bool,
) -> Result<(), AuthError> {
    for _ in 0..200 {
        let outcome = verify(v, token).await;
        if done(&outcome) {
            return outcome;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no such outcome within 10 s");
}

async fn fetches(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

/// Verifies every token with `v` in its own task, all released at once
/// (so that they race on a cold cache); the results in token order.
async fn verify_all_at_once(
    v: PushVerifier,
    tokens: impl ExactSizeIterator<Item = String>,
) -> Vec<Result<Claims, AuthError>> {
    let v = Arc::new(v);
    let barrier = Arc::new(tokio::sync::Barrier::new(tokens.len()));
    let tasks: Vec<_> = tokens
        .map(|token| {
            let (v, barrier) = (v.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                v.verify(Some(&bearer(&token))).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// Verifies `token` and checks that a refusal never quotes it.
async fn verify(v: &PushVerifier, token: &str) -> Result<(), AuthError> {
    match v.verify(Some(&bearer(token))).await {
        Ok(_) => Ok(()),
        Err(e) => {
            assert!(
                !e.to_string().contains(token),
                "error echoes the token: {e}"
            );
            Err(e)
        }
    }
}

#[tokio::test]
async fn valid_token_is_accepted_with_either_issuer_spelling() {
    let server = standard_server().await;
    let v = verifier(&server);
    let token = keys()[0].sign("k1", &claims());
    let claims = v.verify(Some(&bearer(&token))).await.unwrap();
    assert_eq!(claims.email, EMAIL);
    assert_eq!(claims.audience, AUDIENCE);
    assert_eq!(claims.issuer, "https://accounts.google.com");
    assert_eq!(claims.subject.as_deref(), Some("113774264463038321964"));
    assert_eq!(claims.expires_at, claims.issued_at + 3600);

    let bare = with(self::claims(), "iss", json!("accounts.google.com"));
    verify(&v, &keys()[0].sign("k1", &bare)).await.unwrap();

    // The header's scheme is case-insensitive; the old string form of
    // `email_verified` is accepted; so is an `aud` list naming us.
    let mut headers = HeaderMap::new();
    let lower = format!("bearer {}", keys()[0].sign("k1", &self::claims()));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&lower).unwrap(),
    );
    v.verify_headers(&headers).await.unwrap();
    let old = with(self::claims(), "email_verified", json!("true"));
    verify(&v, &keys()[0].sign("k1", &old)).await.unwrap();
    let list = with(self::claims(), "aud", json!(["other", AUDIENCE]));
    verify(&v, &keys()[0].sign("k1", &list)).await.unwrap();
    assert_eq!(fetches(&server).await, 1);
}

#[tokio::test]
async fn every_failed_check_has_its_own_error() {
    let server = standard_server().await;
    let v = verifier(&server);
    let sign = |c: &Value| keys()[0].sign("k1", c);
    let now = now();

    let wrong_audience = sign(&with(
        claims(),
        "aud",
        json!("https://elsewhere.example.com/"),
    ));
    assert!(matches!(
        verify(&v, &wrong_audience).await,
        Err(AuthError::WrongAudience(a)) if a == "https://elsewhere.example.com/"
    ));
    let wrong_issuer = sign(&with(claims(), "iss", json!("https://evil.example.com")));
    assert!(matches!(
        verify(&v, &wrong_issuer).await,
        Err(AuthError::WrongIssuer(_))
    ));
    let expired = sign(&with(
        with(claims(), "exp", json!(now - 3600)),
        "iat",
        json!(now - 7200),
    ));
    assert_eq!(verify(&v, &expired).await, Err(AuthError::Expired));
    let future = sign(&with(
        with(claims(), "iat", json!(now + 3600)),
        "exp",
        json!(now + 7200),
    ));
    assert_eq!(verify(&v, &future).await, Err(AuthError::NotYetValid));
    let not_before = sign(&with(claims(), "nbf", json!(now + 3600)));
    assert_eq!(verify(&v, &not_before).await, Err(AuthError::NotYetValid));
    let wrong_email = sign(&with(
        claims(),
        "email",
        json!("intruder@evil.iam.gserviceaccount.com"),
    ));
    assert!(matches!(
        verify(&v, &wrong_email).await,
        Err(AuthError::EmailNotAllowed(_))
    ));
    let unverified = sign(&with(claims(), "email_verified", json!(false)));
    assert_eq!(
        verify(&v, &unverified).await,
        Err(AuthError::EmailNotVerified)
    );
    let mut no_verified = claims();
    no_verified
        .as_object_mut()
        .unwrap()
        .remove("email_verified");
    assert_eq!(
        verify(&v, &sign(&no_verified)).await,
        Err(AuthError::EmailNotVerified)
    );
    for claim in ["iss", "aud", "exp", "iat", "email"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            verify(&v, &sign(&c)).await,
            Err(AuthError::MissingClaim(claim))
        );
    }

    // Signed by a key the JWKS does not hold, under a kid it does.
    let forged = keys()[1].sign("k1", &claims());
    assert_eq!(verify(&v, &forged).await, Err(AuthError::BadSignature));
    // A valid token whose claims were altered after signing.
    let valid = sign(&claims());
    let parts: Vec<&str> = valid.split('.').collect();
    let altered = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&with(
            claims(),
            "email",
            json!("other@x.iam.gserviceaccount.com"),
        ))
        .unwrap(),
    );
    let tampered = format!("{}.{altered}.{}", parts[0], parts[2]);
    assert_eq!(verify(&v, &tampered).await, Err(AuthError::BadSignature));

    // Not signed with RS256 at all.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hs256 =
        jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(b"guessable")).unwrap();
    assert!(matches!(
        verify(&v, &hs256).await,
        Err(AuthError::UnsupportedAlgorithm(_))
    ));
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_der(&keys()[0].private_der),
    )
    .unwrap();
    assert_eq!(verify(&v, &no_kid).await, Err(AuthError::MissingKeyId));

    // The statuses the route answers with.
    assert_eq!(AuthError::Expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(AuthError::EmailNotVerified.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        AuthError::KeysUnavailable(JwksError::NoSigningKey(String::new())).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // All of the above from one fetch.
    assert_eq!(fetches(&server).await, 1);
}

#[tokio::test]
async fn missing_non_bearer_and_garbage_headers_are_rejected_without_a_fetch() {
    let server = standard_server().await;
    let v = verifier(&server);
    assert_eq!(v.verify(None).await, Err(AuthError::MissingHeader));
    let token = keys()[0].sign("k1", &claims());
    for value in [
        format!("Basic {token}"),
        token.clone(),
        "Bearer".into(),
        "Bearer ".into(),
        format!("Bearer {token} extra"),
        format!("Token {token}"),
    ] {
        let header = HeaderValue::from_str(&value).unwrap();
        let e = v.verify(Some(&header)).await.unwrap_err();
        assert_eq!(e, AuthError::NotBearer, "{value}");
        assert!(!e.to_string().contains(&token));
    }
    let binary = HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
    assert_eq!(v.verify(Some(&binary)).await, Err(AuthError::NotBearer));
    for garbage in ["garbage", "a.b.c", "a.b", "...."] {
        assert!(
            matches!(verify(&v, garbage).await, Err(AuthError::MalformedToken(_))),
            "{garbage}"
        );
    }
    assert_eq!(fetches(&server).await, 0);
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_interval_then_rejects() {
    let server = standard_server().await;
    let v = eager_verifier(&server);
    verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
    assert_eq!(fetches(&server).await, 1);

    // Invented kids cannot make it hammer the JWKS endpoint: within the
    // interval they are refused from the cache.
    for i in 0..10 {
        let t = keys()[1].sign(&format!("k-invented-{i}"), &claims());
        assert!(matches!(
            verify(&v, &t).await,
            Err(AuthError::UnknownKeyId(_))
        ));
    }
    assert_eq!(fetches(&server).await, 1);
    // Once the interval has passed, one refetch for the unknown kid.
    let stranger = keys()[1].sign("k-unknown", &claims());
    let refetched = verify_until(&v, &stranger, |_| v.jwks_fetches() == 2).await;
    assert_eq!(refetched, Err(AuthError::UnknownKeyId("k-unknown".into())));
    assert_eq!(fetches(&server).await, 2, "one refetch for the unknown kid");
    // Known keys keep working.
    verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
    assert_eq!(v.jwks_fetches(), 2);
}

#[tokio::test]
async fn jwks_is_fetched_once_for_many_verifications() {
    let server = standard_server().await;
    let v = verifier(&server);
    for _ in 0..100 {
        verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
    }
    assert_eq!(fetches(&server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_on_a_cold_cache_all_succeed() {
    let server = standard_server().await;
    let tokens = (0..32).map(|_| keys()[0].sign("k1", &claims()));
    for result in verify_all_at_once(verifier(&server), tokens).await {
        result.unwrap();
    }
    let n = fetches(&server).await;
    assert!((1..=2).contains(&n), "{n} JWKS fetches");
}

#[tokio::test]
async fn rotated_key_is_accepted_after_a_refetch() {
    let server = MockServer::start().await;
    let before = jwks(&[keys()[0].jwk("k1")]);
    let after = jwks(&[keys()[0].jwk("k1"), keys()[2].jwk("k2")]);
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks_response(&before, "max-age=20000"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(JWKS_PATH))
        .respond_with(jwks_response(&after, "max-age=20000"))
        .mount(&server)
        .await;
    let v = eager_verifier(&server);
    verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
    verify_until(&v, &keys()[2].sign("k2", &claims()), Result::is_ok)
        .await
        .unwrap();
    assert_eq!(fetches(&server).await, 2);
    // Both keys are now cached.
    verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
    verify(&v, &keys()[2].sign("k2", &claims())).await.unwrap();
    assert_eq!(fetches(&server).await, 2);
}

#[tokio::test]
async fn max_age_is_honoured_above_the_refetch_floor() {
    // `max-age` less `Age` (here 0) and `no-cache`: kept for the least
    // refetch interval, then fetched again on the next use.
    let server = answering_in_turn(vec![
        jwks_response(&jwks(&[keys()[0].jwk("k1")]), "public, max-age=100")
            .insert_header("age", "100"),
    ])
    .await;
    let no_cache = server_with(jwks(&[keys()[0].jwk("k1")]), "no-cache").await;
    for server in [&server, &no_cache] {
        let v = eager_verifier(server);
        let token = keys()[0].sign("k1", &claims());
        for _ in 0..3 {
            verify(&v, &token).await.unwrap();
        }
        assert_eq!(fetches(server).await, 1);
        verify_until(&v, &token, |_| v.jwks_fetches() == 2)
            .await
            .unwrap();
        assert_eq!(fetches(server).await, 2);
    }
}

#[tokio::test]
async fn unavailable_jwks_is_a_retryable_error_until_it_answers() {
    let server = answering_in_turn(vec![
        ResponseTemplate::new(500),
        ResponseTemplate::new(200).set_body_string("<html>not a jwks</html>"),
        jwks_response(&jwks(&[json!({"kty": "EC", "kid": "e1"})]), "max-age=60"),
        jwks_response(&jwks(&[keys()[0].jwk("k1")]), "max-age=600"),
    ])
    .await;
    let v = eager_verifier(&server);
    let token = keys()[0].sign("k1", &claims());
    for phrase in ["status 500", "not a JWKS", "no usable RS256"] {
        // Until the next fetch is due, every request gets the last error.
        let e = verify_until(&v, &token, |outcome| {
            outcome
                .as_ref()
                .is_err_and(|e| e.to_string().contains(phrase))
        })
        .await
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
    }
    verify_until(&v, &token, Result::is_ok).await.unwrap();
    assert_eq!(fetches(&server).await, 4);
}

#[tokio::test]
async fn stale_keys_are_served_while_a_refresh_fails() {
    let server = answering_in_turn(vec![
        jwks_response(&jwks(&[keys()[0].jwk("k1")]), "max-age=0"),
        ResponseTemplate::new(503),
    ])
    .await;
    let v = eager_verifier(&server);
    let token = keys()[0].sign("k1", &claims());
    verify(&v, &token).await.unwrap();
    // Expired after the floor; the refresh fails; the known key still
    // verifies, and the failing endpoint is not asked again for a while.
    verify_until(&v, &token, |outcome| {
        assert!(outcome.is_ok(), "{outcome:?}");
        v.jwks_fetches() == 2
    })
    .await
    .unwrap();
    for _ in 0..5 {
        verify(&v, &token).await.unwrap();
    }
    assert_eq!(fetches(&server).await, 2);
}

#[test]
fn configuration_is_validated() {
    let ok = PushAuthConfig::new(AUDIENCE, [EMAIL]);
    ok.validate().unwrap();
    assert_eq!(ok.jwks_url, "https://www.googleapis.com/oauth2/v3/certs");
    assert!(ok.issuers.contains(&"accounts.google.com".to_string()));
    assert!(
        ok.issuers
            .contains(&"https://accounts.google.com".to_string())
    );

    let e = PushAuthConfig::new(" ", [EMAIL]).validate().unwrap_err();
    assert!(e.to_string().contains("audience"), "{e}");
    let e = PushAuthConfig::new(AUDIENCE, Vec::<String>::new())
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("service_account_emails"), "{e}");
    let mut bad_url = PushAuthConfig::new(AUDIENCE, [EMAIL]);
    bad_url.jwks_url = "ftp://example.com/certs".into();
    assert!(PushVerifier::new(bad_url).is_err());
}

/// Push authentication against a hostile client and a failing or careless
/// JWKS endpoint: what each can make the verifier fetch, counted by the
/// wiremock JWKS server.
mod hostile {
    use super::*;

    /// A JWKS endpoint answering 500 to everything.
    async fn failing_server() -> MockServer {
        answering_in_turn(vec![ResponseTemplate::new(500)]).await
    }

    #[tokio::test]
    async fn invented_kids_while_the_jwks_fails_cost_one_fetch() {
        // Before: every such request fetched (about 215 fetches/s).
        let server = failing_server().await;
        let v = verifier(&server);
        for i in 0..200 {
            let token = keys()[1].sign(&format!("invented-{i}"), &claims());
            let e = verify(&v, &token).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
            assert!(e.to_string().contains("status 500"), "{e}");
        }
        assert_eq!(fetches(&server).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_before_the_first_success_share_one_fetch() {
        let server = failing_server().await;
        let tokens = (0..64).map(|i| keys()[1].sign(&format!("invented-{i}"), &claims()));
        for result in verify_all_at_once(verifier(&server), tokens).await {
            let e = result.unwrap_err();
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}");
        }
        assert_eq!(fetches(&server).await, 1);
    }

    #[tokio::test]
    async fn max_age_zero_does_not_mean_a_fetch_per_push() {
        // Before: `max-age=0` (or `no-store`) refetched on every push.
        for cache_control in ["max-age=0", "no-store", "max-age=0, must-revalidate"] {
            let server = server_with(jwks(&[keys()[0].jwk("k1")]), cache_control).await;
            let v = verifier(&server);
            for _ in 0..100 {
                verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
            }
            assert_eq!(fetches(&server).await, 1, "{cache_control}");
        }
    }

    #[tokio::test]
    async fn invented_kids_after_a_success_cost_no_fetch() {
        let server = standard_server().await;
        let v = verifier(&server);
        verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
        for i in 0..200 {
            let token = keys()[1].sign(&format!("invented-{i}"), &claims());
            assert!(matches!(
                verify(&v, &token).await,
                Err(AuthError::UnknownKeyId(_))
            ));
        }
        assert_eq!(fetches(&server).await, 1);
    }

    #[test]
    fn the_refetch_interval_cannot_be_configured_away() {
        let mut config = PushAuthConfig::new(AUDIENCE, [EMAIL]);
        config.min_refetch_interval = std::time::Duration::ZERO;
        let e = config.validate().unwrap_err();
        assert!(e.to_string().contains("min_refetch_interval"), "{e}");
    }

    #[tokio::test]
    async fn the_email_is_compared_exactly_as_google_does() {
        // Before: `PUSH@…` was accepted for `push@…`.
        let server = standard_server().await;
        let v = verifier(&server);
        let token = keys()[0].sign("k1", &with(claims(), "email", json!(EMAIL.to_uppercase())));
        assert!(matches!(
            verify(&v, &token).await,
            Err(AuthError::EmailNotAllowed(_))
        ));
        verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
        // An allow-list entry that could never match exactly is refused.
        let e = PushAuthConfig::new(AUDIENCE, [EMAIL.to_uppercase()])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("lower case"), "{e}");
    }

    #[tokio::test]
    async fn a_huge_kid_or_claim_is_never_echoed_whole() {
        let server = standard_server().await;
        let v = verifier(&server);
        verify(&v, &keys()[0].sign("k1", &claims())).await.unwrap();
        let long = "k".repeat(100_000);
        let e = verify(&v, &keys()[1].sign(&long, &claims()))
            .await
            .unwrap_err();
        assert!(e.to_string().len() < 600, "{} bytes", e.to_string().len());
        let token = keys()[0].sign("k1", &with(claims(), "email", json!(long)));
        let e = verify(&v, &token).await.unwrap_err();
        assert!(e.to_string().len() < 600, "{} bytes", e.to_string().len());
    }

    #[tokio::test]
    async fn the_service_counts_its_jwks_fetches_and_the_refetches_it_refuses() {
        let server = failing_server().await;
        let dir = tempfile::tempdir().unwrap();
        let service = support::service::Service::start(
            dir.path(),
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("manifests-fixtures/rules/thin-basic"),
            &format!(
                "resolve: false\npubsub:\n  push:\n    auth:\n      audience: {AUDIENCE}\n      \
                 service_account_emails: [{EMAIL}]\n      jwks_url: {}{JWKS_PATH}\n",
                server.uri()
            ),
        )
        .await;
        const PUSHES: usize = 5;
        for i in 0..PUSHES {
            let token = keys()[1].sign(&format!("invented-{i}"), &claims());
            let response = reqwest::Client::new()
                .post(service.url("/pubsub/push"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(r#"{"message":{"messageId":"1","data":"e30="}}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "push {i}"
            );
        }
        // The first push fetched; the others were refused without one.
        assert_eq!(fetches(&server).await, 1);
        assert_eq!(
            service.metric("image_auditor_jwks_fetches_total ").await,
            1.0
        );
        assert_eq!(
            service
                .metric(
                    r#"image_auditor_rejected_requests_total{reason="jwks_refetch_suppressed"} "#
                )
                .await,
            (PUSHES - 1) as f64
        );
    }
}
