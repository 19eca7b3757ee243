//! A small Docker-registry token service (`auth.token`): RS256 JWTs signed
//! with the `openssl` CLI, whose self-signed certificate the registry trusts
//! (`rootcertbundle`) and which each JWT carries in its `x5c` header.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::run_ok;

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-issuer";

pub struct TokenService {
    pub server: MockServer,
    pub cert: PathBuf,
}

struct Issuer {
    key: PathBuf,
    cert_der: String,
    users: HashMap<String, String>,
    /// Whether a request without credentials gets `pull` (like a public
    /// repository) or a 401.
    anonymous_pull: bool,
}

impl TokenService {
    pub async fn start(dir: &Path, users: &[(&str, &str)], anonymous_pull: bool) -> Self {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-token",
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&cert),
        ]);
        let der = openssl(&["x509", "-in", path_str(&cert), "-outform", "DER"]);
        let issuer = Issuer {
            key,
            cert_der: STANDARD.encode(der),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            anonymous_pull,
        };
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/token"))
            .respond_with(issuer)
            .mount(&server)
            .await;
        Self { server, cert }
    }

    pub fn realm(&self) -> String {
        format!("{}/token", self.server.uri())
    }

    /// `host:port` of the token service, as the client's counters name it.
    pub fn host(&self) -> String {
        self.server.address().to_string()
    }

    pub async fn requests(&self) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .len()
    }
}

impl Respond for Issuer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let user = match request.headers.get("authorization") {
            None if self.anonymous_pull => String::new(),
            None => return ResponseTemplate::new(401),
            Some(value) => {
                let decoded = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Basic "))
                    .and_then(|b| STANDARD.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                match decoded.split_once(':') {
                    Some((u, p)) if self.users.get(u).is_some_and(|want| want == p) => u.to_owned(),
                    _ => return ResponseTemplate::new(401),
                }
            }
        };
        let mut access = Vec::new();
        let mut service = String::new();
        for (k, v) in request.url.query_pairs() {
            match &*k {
                "service" => service = v.into_owned(),
                "scope" => {
                    for scope in v.split(' ') {
                        let mut parts = scope.splitn(2, ':');
                        let typ = parts.next().unwrap_or_default();
                        let rest = parts.next().unwrap_or_default();
                        let (name, actions) = rest.rsplit_once(':').unwrap_or((rest, ""));
                        let granted: Vec<&str> = actions
                            .split(',')
                            .filter(|a| !a.is_empty() && (!user.is_empty() || *a == "pull"))
                            .collect();
                        access.push(json!({"type": typ, "name": name, "actions": granted}));
                    }
                }
                _ => {}
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der]});
        let claims = json!({
            "iss": ISSUER, "sub": user, "aud": service, "iat": now, "nbf": now - 5,
            "exp": now + 300, "jti": format!("{:x}", fastrand::u64(..)), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = sign(&self.key, signing_input.as_bytes());
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
        ResponseTemplate::new(200)
            .set_body_json(json!({"token": token, "access_token": token, "expires_in": 300}))
    }
}

/// A JWKS with no keys, so every push token is refused, and the service's
/// `pubsub.push.auth` configuration naming it. Keep the server for as long
/// as the service runs.
pub async fn keyless_push_auth() -> (MockServer, String) {
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"keys":[]}"#))
        .mount(&jwks)
        .await;
    let config = format!(
        "pubsub:\n  push:\n    auth:\n      audience: https://auditor.example/pubsub/push\n      \
         service_account_emails: [push@p.iam.gserviceaccount.com]\n      jwks_url: {}/certs\n",
        jwks.uri()
    );
    (jwks, config)
}

fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", path_str(key)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    out.stdout
}

/// Runs the `openssl` CLI; its stdout.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    run_ok(Command::new("openssl").args(args).stdin(Stdio::null())).stdout
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
