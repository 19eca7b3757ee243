//! Authentication against real registries: htpasswd basic auth, and bearer
//! tokens from a token service the registry trusts.

use crate::support;

use base64::Engine as _;
use image_auditor::reference::Repository;
use image_auditor::registry::{
    ErrorKind, HostConfig, Outcome, RegistryClient, RequestKind, resolve_children,
};
use support::oci::{Desc, Layout};
use support::registry::{Auth, Push, Registry, skopeo_push};
use support::token::{ISSUER, SERVICE, TokenService};
use support::{client, test_config};

const USER: &str = "pusher";
const PASSWORD: &str = "s3cret-pw";

/// A registry that lets only `USER` in, with htpasswd basic auth.
fn htpasswd_registry() -> Registry {
    Registry::start(Auth::Htpasswd {
        user: USER.into(),
        password: PASSWORD.into(),
    })
}

/// A registry that trusts the tokens of `tokens`.
fn token_registry(tokens: &TokenService) -> Registry {
    Registry::start(Auth::Token {
        realm: tokens.realm(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert: tokens.cert.clone(),
    })
}

/// A client that sends `USER` with `password` to `reg`.
fn client_as(reg: &Registry, password: &str) -> RegistryClient {
    let mut config = test_config(None);
    config.hosts.insert(
        reg.host.clone(),
        HostConfig {
            username: Some(USER.into()),
            password: Some(password.into()),
            ..HostConfig::default()
        },
    );
    client(config)
}

/// Pushes a two-platform index to `repo` as `USER`; returns (index, children).
fn push_index(reg: &Registry, dir: &std::path::Path, repo: &str) -> (Desc, [Desc; 2]) {
    let mut layout = Layout::create(&dir.join(repo.replace('/', "_")));
    let [index, amd64, arm64] = layout.two_platform_index();
    layout.tag(&index, "v1");
    let creds = format!("{USER}:{PASSWORD}");
    let push = Push {
        creds: Some(&creds),
        ..Push::default()
    };
    assert_eq!(
        skopeo_push(&layout.dir, "v1", &reg.host, repo, push),
        index.digest
    );
    (index, [amd64, arm64])
}

/// The children of the list `index` in `repo`, as `c` resolves them, sorted.
async fn children_of(c: &RegistryClient, repo: &Repository, index: &Desc) -> Vec<String> {
    let links = resolve_children(c, std::slice::from_ref(repo), &index.digest)
        .await
        .unwrap();
    let mut v: Vec<String> = links.iter().map(|l| l.child.to_string()).collect();
    v.sort();
    v
}

fn sorted(descs: &[Desc]) -> Vec<String> {
    let mut v: Vec<String> = descs.iter().map(|d| d.digest.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn htpasswd_registry_accepts_configured_basic_credentials_without_a_challenge() {
    let reg = htpasswd_registry();
    let work = tempfile::tempdir().unwrap();
    let (index, children) = push_index(&reg, work.path(), "secure/multi");
    let repo = reg.repo("secure/multi");

    let c = client_as(&reg, PASSWORD);
    assert_eq!(children_of(&c, &repo, &index).await, sorted(&children));
    // Credentials go with the first request: no 401 round trip.
    let stats = c.stats();
    assert_eq!(stats.requests_to(&reg.host, RequestKind::Manifest), 1);
    assert_eq!(
        stats.count(&reg.host, RequestKind::Manifest, Outcome::Ok),
        1
    );

    // Without credentials the answer is "cannot decide", not "absent".
    let anonymous = client(test_config(None));
    let err = anonymous
        .fetch_manifest(&repo, &index.digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    let stats = anonymous.stats();
    assert_eq!(
        stats.count(&reg.host, RequestKind::Manifest, Outcome::Unauthorized),
        1
    );
    assert_eq!(stats.requests_to(&reg.host, RequestKind::Manifest), 1);

    // A wrong password is refused once, not retried.
    let wrong = client_as(&reg, "wrong");
    let err = wrong
        .fetch_manifest(&repo, &index.digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unauthorized { .. }),
        "{err}"
    );
    assert_eq!(
        wrong.stats().requests_to(&reg.host, RequestKind::Manifest),
        1
    );
}

#[tokio::test]
async fn htpasswd_credentials_come_from_docker_config_json() {
    let reg = htpasswd_registry();
    let work = tempfile::tempdir().unwrap();
    let (index, children) = push_index(&reg, work.path(), "secure/multi");
    let docker_config = work.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &docker_config,
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.host),
    )
    .unwrap();

    let mut config = test_config(None);
    config.docker_config = Some(docker_config);
    let c = client(config);
    let repo = reg.repo("secure/multi");
    assert_eq!(children_of(&c, &repo, &index).await, sorted(&children));
}

#[tokio::test]
async fn token_registry_anonymous_pull_exchanges_one_challenge_for_one_token_per_repository() {
    let work = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(work.path(), &[(USER, PASSWORD)], true).await;
    let reg = token_registry(&tokens);
    let (index_a, children_a) = push_index(&reg, work.path(), "team/a");
    let (index_b, _) = push_index(&reg, work.path(), "team/b");
    let pushes = tokens.requests().await;

    let c = client(test_config(None));
    // (challenges, authorised manifest GETs, tokens issued) so far.
    let counts = || {
        let stats = c.stats();
        (
            stats.count(&reg.host, RequestKind::Manifest, Outcome::Unauthorized),
            stats.count(&reg.host, RequestKind::Manifest, Outcome::Ok),
            stats.count(&tokens.host(), RequestKind::Token, Outcome::Ok),
        )
    };
    let repo_a = reg.repo("team/a");
    assert_eq!(
        children_of(&c, &repo_a, &index_a).await,
        sorted(&children_a)
    );
    for child in &children_a {
        c.fetch_manifest(&repo_a, &child.digest).await.unwrap();
    }
    // One challenge, one token, then three authorised GETs.
    assert_eq!(counts(), (1, 3, 1));
    assert_eq!(tokens.requests().await - pushes, 1);

    // Another repository needs its own scope, but the challenge is known.
    c.fetch_manifest(&reg.repo("team/b"), &index_b.digest)
        .await
        .unwrap();
    assert_eq!(counts(), (1, 4, 2));
}

#[tokio::test]
async fn token_registry_with_credentials_and_with_refused_credentials() {
    let work = tempfile::tempdir().unwrap();
    // This token service serves nobody anonymously.
    let tokens = TokenService::start(work.path(), &[(USER, PASSWORD)], false).await;
    let reg = token_registry(&tokens);
    let (index, children) = push_index(&reg, work.path(), "private/app");
    let repo = reg.repo("private/app");

    let good = client_as(&reg, PASSWORD);
    assert_eq!(children_of(&good, &repo, &index).await, sorted(&children));

    let refused = client_as(&reg, "wrong");
    let err = refused
        .fetch_manifest(&repo, &index.digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::TokenService { .. }),
        "{err}"
    );
    assert!(err.is_transient());
    let stats = refused.stats();
    assert_eq!(
        stats.count(&tokens.host(), RequestKind::Token, Outcome::Unauthorized),
        1
    );
    assert_eq!(stats.total(RequestKind::Manifest), 1);
}
