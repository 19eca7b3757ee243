//! Authentication against real registries: htpasswd basic auth, and bearer
//! tokens from a token service the registry trusts.

use crate::support;

use base64::Engine as _;
use image_auditor::registry::{ErrorKind, HostConfig, Outcome, RequestKind, resolve_children};
use support::oci::{Desc, Layout};
use support::registry::{Auth, Push, Registry, skopeo_push};
use support::token::{ISSUER, SERVICE, TokenService};
use support::{client, test_config};

const USER: &str = "pusher";
const PASSWORD: &str = "s3cret-pw";

/// Pushes a two-platform index to `repo`; returns (index, children).
fn push_index(reg: &Registry, dir: &std::path::Path, repo: &str, creds: &str) -> (Desc, [Desc; 2]) {
    let mut layout = Layout::create(&dir.join(repo.replace('/', "_")));
    let [index, amd64, arm64] = layout.two_platform_index();
    layout.tag(&index, "v1");
    let push = Push {
        creds: Some(creds),
        ..Push::default()
    };
    assert_eq!(
        skopeo_push(&layout.dir, "v1", &reg.host, repo, push),
        index.digest
    );
    (index, [amd64, arm64])
}

fn child_digests(links: &[image_auditor::registry::ChildLink]) -> Vec<String> {
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
    let reg = Registry::start(Auth::Htpasswd {
        user: USER.into(),
        password: PASSWORD.into(),
    });
    let work = tempfile::tempdir().unwrap();
    let (index, children) = push_index(
        &reg,
        work.path(),
        "secure/multi",
        &format!("{USER}:{PASSWORD}"),
    );
    let repo = reg.repo("secure/multi");

    let mut config = test_config(None);
    config.hosts.insert(
        reg.host.clone(),
        HostConfig {
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            ..HostConfig::default()
        },
    );
    let c = client(config);
    let links = resolve_children(&c, std::slice::from_ref(&repo), &index.digest)
        .await
        .unwrap();
    assert_eq!(child_digests(&links), sorted(&children));
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
    let mut config = test_config(None);
    config.hosts.insert(
        reg.host.clone(),
        HostConfig {
            username: Some(USER.into()),
            password: Some("wrong".into()),
            ..HostConfig::default()
        },
    );
    let wrong = client(config);
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
    let reg = Registry::start(Auth::Htpasswd {
        user: USER.into(),
        password: PASSWORD.into(),
    });
    let work = tempfile::tempdir().unwrap();
    let (index, children) = push_index(
        &reg,
        work.path(),
        "secure/multi",
        &format!("{USER}:{PASSWORD}"),
    );
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
    let links = resolve_children(&c, &[reg.repo("secure/multi")], &index.digest)
        .await
        .unwrap();
    assert_eq!(child_digests(&links), sorted(&children));
}

#[tokio::test]
async fn token_registry_anonymous_pull_exchanges_one_challenge_for_one_token_per_repository() {
    let work = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(work.path(), &[(USER, PASSWORD)], true).await;
    let reg = Registry::start(Auth::Token {
        realm: tokens.realm(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert: tokens.cert.clone(),
    });
    let creds = format!("{USER}:{PASSWORD}");
    let (index_a, children_a) = push_index(&reg, work.path(), "team/a", &creds);
    let (index_b, _) = push_index(&reg, work.path(), "team/b", &creds);
    let pushes = tokens.requests().await;

    let c = client(test_config(None));
    let repo_a = reg.repo("team/a");
    let links = resolve_children(&c, std::slice::from_ref(&repo_a), &index_a.digest)
        .await
        .unwrap();
    assert_eq!(child_digests(&links), sorted(&children_a));
    for child in &children_a {
        c.fetch_manifest(&repo_a, &child.digest).await.unwrap();
    }
    let stats = c.stats();
    // One challenge, one token, then three authorised GETs.
    assert_eq!(
        stats.count(&reg.host, RequestKind::Manifest, Outcome::Unauthorized),
        1
    );
    assert_eq!(
        stats.count(&reg.host, RequestKind::Manifest, Outcome::Ok),
        3
    );
    assert_eq!(
        stats.count(&tokens.host(), RequestKind::Token, Outcome::Ok),
        1
    );
    assert_eq!(tokens.requests().await - pushes, 1);

    // Another repository needs its own scope, but the challenge is known.
    c.fetch_manifest(&reg.repo("team/b"), &index_b.digest)
        .await
        .unwrap();
    let stats = c.stats();
    assert_eq!(
        stats.count(&reg.host, RequestKind::Manifest, Outcome::Unauthorized),
        1
    );
    assert_eq!(
        stats.count(&reg.host, RequestKind::Manifest, Outcome::Ok),
        4
    );
    assert_eq!(
        stats.count(&tokens.host(), RequestKind::Token, Outcome::Ok),
        2
    );
}

#[tokio::test]
async fn token_registry_with_credentials_and_with_refused_credentials() {
    let work = tempfile::tempdir().unwrap();
    // This token service serves nobody anonymously.
    let tokens = TokenService::start(work.path(), &[(USER, PASSWORD)], false).await;
    let reg = Registry::start(Auth::Token {
        realm: tokens.realm(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert: tokens.cert.clone(),
    });
    let (index, children) = push_index(
        &reg,
        work.path(),
        "private/app",
        &format!("{USER}:{PASSWORD}"),
    );
    let repo = reg.repo("private/app");

    let with = |password: &str| {
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
    };
    let good = with(PASSWORD);
    let links = resolve_children(&good, std::slice::from_ref(&repo), &index.digest)
        .await
        .unwrap();
    assert_eq!(child_digests(&links), sorted(&children));

    let refused = with("wrong");
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
