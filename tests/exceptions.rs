//! Exceptions (README "Exceptions"): the real `serve` binary with an
//! `exceptions.yaml` beside its manifests and a webhook sink; the CLI's
//! `check` and `manifests validate` over the same files.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

use image_auditor::exceptions::Date;
use image_auditor::findings::{Finding, FindingQuery, SqliteStore, Store};
use serde_json::{Value, json};
use support::fixtures::{A, B, C, line_of, regions_root, write_plain_manifest};
use support::receiver::Receiver;
use support::service::Service;

const D: &str = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const E: &str = "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

fn day(offset: i64) -> String {
    Date::today().plus_days(offset).to_string()
}

/// An entry accepting `digest` as unpromoted in `r0.example/prod/app`.
fn entry(digest: &str, expires: &str, owner: &str) -> String {
    format!(
        "- registry: r0.example/prod\n  image: app\n  digests: [\"{digest}\"]\n  \
         verdicts: [unpromoted]\n  reason: hotfix reviewed in INC-{owner}\n  owner: {owner}\n  \
         expires: {expires}\n"
    )
}

fn unpromoted(region: usize, digest: &str) -> Value {
    json!({"action": "INSERT", "digest": format!("r{region}.example/prod/app@{digest}")})
}

fn findings(service: &Service) -> Vec<Finding> {
    SqliteStore::open(service.findings_db())
        .unwrap()
        .findings(&FindingQuery::default())
        .unwrap()
}

fn finding<'a>(all: &'a [Finding], event: &str) -> &'a Finding {
    all.iter()
        .find(|f| f.key.event_id.0 == event)
        .unwrap_or_else(|| panic!("no finding for {event}: {all:#?}"))
}

async fn check(service: &Service, reference: &str) -> Value {
    let answer: Value = reqwest::Client::new()
        .post(service.url("/v1/check"))
        .json(&json!({ "references": [reference] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["results"][0].clone()
}

/// The one finding story: an excepted push is recorded and never alerted
/// while an unexcepted one alerts; `/v1/check` says which entry applies;
/// the file is reloaded as it changes, a broken version leaves the last
/// good one in force (reported once), and an expired entry stops matching
/// and is reported once — across a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excepted_findings_are_recorded_never_alerted_and_follow_the_file() {
    let hook = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let root = regions_root(dir.path(), A, 2);
    let file = root.join("exceptions.yaml");
    std::fs::write(
        &file,
        format!(
            "exceptions:\n{}{}",
            entry(B, &day(30), "alice"),
            entry(E, &day(-1), "erin")
        ),
    )
    .unwrap();
    let config = format!(
        "resolve: false\nreload:\n  watch_interval: 100ms\nalerts:\n  poll_interval: 100ms\n  \
         group_wait: 200ms\n  backoff_base: 100ms\n  backoff_max: 500ms\n  sinks:\n  \
         - name: hook\n    webhook:\n      url: {}\n",
        hook.url
    );
    let mut service = Service::start(dir.path(), &root, &config).await;

    // B is excepted, C is not; E's entry has expired, so E alerts.
    service.push_gcr("m-b", &unpromoted(0, B)).await;
    service.push_gcr("m-c", &unpromoted(0, C)).await;
    service.push_gcr("m-e", &unpromoted(0, E)).await;
    service
        .wait_until("the hook received three alerts", || async {
            hook.accepted_json().len() >= 3
        })
        .await;
    let all = findings(&service);
    let b_line = line_of(&file, B);
    let excepted = finding(&all, "m-b");
    assert_eq!(excepted.verdict.as_str(), "unpromoted");
    let by = excepted.excepted_by.as_deref().unwrap();
    // The entry's line is its first key, two lines above its digests.
    assert_eq!(by, format!("{}:{}", file.display(), b_line - 2));
    assert_eq!(finding(&all, "m-c").excepted_by, None);
    assert_eq!(finding(&all, "m-e").excepted_by, None);
    let expired: Vec<&Finding> = all
        .iter()
        .filter(|f| f.verdict.as_str() == "exception_expired")
        .collect();
    assert_eq!(expired.len(), 1, "{all:#?}");
    assert_eq!(expired[0].key.source.as_str(), "manifests");
    let e_line = line_of(&file, E) - 2;
    assert!(
        expired[0]
            .reason
            .contains(&format!("exceptions.yaml:{e_line} (owner erin"))
            && expired[0]
                .reason
                .contains(&format!("expired on {}", day(-1))),
        "{}",
        expired[0].reason
    );

    // Exactly C, E and the expired entry reached the sink; never B.
    let alerts = hook.accepted_json();
    let mut alerted: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["verdict"].as_str().unwrap(),
                a["digest"].as_str().unwrap_or("-")
            )
        })
        .collect();
    alerted.sort();
    assert_eq!(
        alerted,
        [
            "exception_expired -".to_owned(),
            format!("unpromoted {C}"),
            format!("unpromoted {E}")
        ]
    );
    assert!(
        !hook
            .requests()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(B))
    );
    assert_eq!(
        service
            .metric(r#"image_auditor_excepted_findings_total{verdict="unpromoted"}"#)
            .await,
        1.0
    );
    assert_eq!(
        service
            .metric(r#"image_auditor_events_total{source="pubsub_push",action="insert",verdict="excepted"}"#)
            .await,
        1.0
    );
    assert_eq!(
        service.metric("image_auditor_exceptions_entries ").await,
        2.0
    );
    assert_eq!(
        service.metric("image_auditor_exceptions_expired ").await,
        1.0
    );

    // `/v1/check` says which entry applies, and which has expired.
    let b = check(&service, &format!("r0.example/prod/app@{B}")).await;
    assert_eq!(
        (b["verdict"].as_str(), b["alert"].as_bool()),
        (Some("unpromoted"), Some(false))
    );
    assert_eq!(b["exception"]["state"], "applies");
    assert_eq!(b["exception"]["owner"], "alice");
    assert_eq!(b["exception"]["excepted_by"], by);
    let e = check(&service, &format!("r0.example/prod/app@{E}")).await;
    assert_eq!(
        (e["alert"].as_bool(), e["exception"]["state"].as_str()),
        (Some(true), Some("expired"))
    );
    // Another region is not covered by an entry naming r0.
    let b1 = check(&service, &format!("r1.example/prod/app@{B}")).await;
    assert_eq!(
        (b1["alert"].as_bool(), b1.get("exception")),
        (Some(true), None)
    );

    // The file changes: B's entry goes, D's comes; the next poll uses it.
    std::fs::write(
        &file,
        format!("exceptions:\n{}", entry(D, &day(10), "dave")),
    )
    .unwrap();
    service
        .wait_until("D's entry is in force", || async {
            check(&service, &format!("r0.example/prod/app@{D}")).await["exception"]["state"]
                == "applies"
        })
        .await;
    assert_eq!(
        check(&service, &format!("r0.example/prod/app@{B}")).await["alert"],
        true
    );
    service.push_gcr("m-d", &unpromoted(0, D)).await;
    assert!(finding(&findings(&service), "m-d").excepted_by.is_some());

    // A broken version: the last good one stays, the problem is reported once.
    std::fs::write(
        &file,
        format!(
            "exceptions:\n{}  colour: red\n",
            entry(C, &day(10), "carol")
        ),
    )
    .unwrap();
    service
        .wait_until("the broken file is reported", || async {
            service
                .metric("image_auditor_exceptions_load_failures_total ")
                .await
                >= 1.0
        })
        .await;
    assert_eq!(
        check(&service, &format!("r0.example/prod/app@{D}")).await["exception"]["state"],
        "applies",
        "the last good version stays"
    );
    assert_eq!(
        check(&service, &format!("r0.example/prod/app@{C}")).await["alert"],
        true
    );
    let broken: Vec<String> = service
        .manifest_findings()
        .into_iter()
        .filter(|r| r.starts_with("exceptions file:"))
        .collect();
    assert_eq!(broken.len(), 1, "{broken:#?}");
    assert!(
        broken[0].contains("exceptions.yaml:9: error: unknown field `colour`"),
        "{}",
        broken[0]
    );

    // The expiry report is once ever: a restart reports nothing new.
    std::fs::write(
        &file,
        format!("exceptions:\n{}", entry(E, &day(-1), "erin")),
    )
    .unwrap();
    service.terminate().await;
    service.restart().await;
    assert_eq!(
        service.metric("image_auditor_exceptions_expired ").await,
        1.0
    );
    let expired_now = findings(&service)
        .iter()
        .filter(|f| f.verdict.as_str() == "exception_expired")
        .count();
    assert_eq!(expired_now, 1);
}

fn cli(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-auditor"))
        .arg("--manifests")
        .arg(root)
        .args(args)
        .env_remove("IMAGE_AUDITOR_MANIFESTS")
        .env_remove("IMAGE_AUDITOR_EXCEPTIONS")
        .env_remove("IMAGE_AUDITOR_REGISTRY_CONFIG")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `out` exited with `code`, and what it printed says `phrase`.
#[track_caller]
fn assert_exit(out: &Output, code: i32, phrase: &str) {
    let text = text(out);
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(text.contains(phrase), "{phrase}: {text}");
}

#[test]
fn check_shows_the_exception_and_validate_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let root = regions_root(dir.path(), A, 2);
    let local = dir.path().join("local.yaml");
    std::fs::write(
        root.join("exceptions.yaml"),
        format!("exceptions:\n{}", entry(B, &day(30), "alice")),
    )
    .unwrap();
    std::fs::write(
        &local,
        format!("exceptions:\n{}", entry(C, &day(-3), "carol")),
    )
    .unwrap();

    let b = format!("r0.example/prod/app@{B}");
    let c = format!("r0.example/prod/app@{C}");
    let with_local = |args: &[&str]| {
        cli(
            &root,
            &[&["--exceptions", local.to_str().unwrap()], args].concat(),
        )
    };
    let out = with_local(&["check", &b]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.starts_with("unpromoted\t"), "{line}");
    assert!(
        line.contains("[excepted by ") && line.contains("exceptions.yaml:2 (owner alice"),
        "{line}"
    );

    let out = with_local(&["check", "--json", &c]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an expired entry excepts nothing: {}",
        text(&out)
    );
    let v = support::stdout_json(&out);
    assert_eq!(v["exception"]["state"], "expired");
    assert_eq!(
        v["exception"]["excepted_by"],
        format!("{}:2", local.display())
    );

    // `manifests validate` checks both files; a broken one names file and line.
    let out = with_local(&["manifests", "validate"]);
    assert_exit(&out, 0, "exceptions: 2 entries in 2 file(s)");
    std::fs::write(
        &local,
        format!("exceptions:\n{}", entry(C, &day(400), "carol")),
    )
    .unwrap();
    let out = with_local(&["manifests", "validate"]);
    assert_exit(
        &out,
        1,
        &format!(
            "{}:8: error: `expires` {} is 400 days ahead; at most 180 days",
            local.display(),
            day(400)
        ),
    );
    // A longer allowance is an option.
    let out = with_local(&["--exceptions-max-ahead", "500days", "manifests", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // `check` refuses to run on invalid exceptions rather than guess.
    let out = with_local(&["check", &b]);
    assert_exit(&out, 2, "the exceptions are invalid");
    // A local file that does not exist is an error, not silence.
    let out = cli(
        &root,
        &["--exceptions", "/nonexistent/ex.yaml", "check", &b],
    );
    assert_exit(&out, 2, "/nonexistent/ex.yaml: error: does not exist");
}

/// A plain-layout root may hold `exceptions.yaml` too: it is not read as a
/// manifest.
#[test]
fn a_plain_root_does_not_load_its_exceptions_file_as_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("plain");
    write_plain_manifest(
        &root.join("demo.yaml"),
        "staging.example/demo",
        "r0.example/prod",
        A,
    );
    std::fs::write(
        root.join("exceptions.yaml"),
        format!("exceptions:\n{}", entry(B, &day(5), "bo")),
    )
    .unwrap();
    let out = cli(&root, &["manifests", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).ends_with("1 projects valid, 0 excluded; 0 errors, 0 warnings\n"),
        "{}",
        text(&out)
    );
    let out = cli(&root, &["check", &format!("r0.example/prod/app@{B}")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn the_exceptions_options_load_and_bad_ones_name_the_option() {
    use image_auditor::config::Config;
    let dir = tempfile::tempdir().unwrap();
    let root = regions_root(dir.path(), A, 2);
    let local = dir.path().join("local.yaml");
    std::fs::write(&local, "exceptions: []\n").unwrap();
    let load = |exceptions: &str| {
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "manifests: {}\ndata_dir: {}\n{exceptions}",
                root.display(),
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        Config::load(Some(&path))
    };
    let config = load("").unwrap();
    assert_eq!(config.exceptions.file, None);
    assert_eq!(config.exceptions.max_ahead.as_secs(), 180 * 86_400);
    let config = load(&format!(
        "exceptions:\n  file: {}\n  max_ahead: 30days\n",
        local.display()
    ))
    .unwrap();
    assert_eq!(config.exceptions.file.as_deref(), Some(local.as_path()));
    assert_eq!(config.exceptions.max_ahead.as_secs(), 30 * 86_400);
    let missing = load("exceptions:\n  file: /nonexistent/ex.yaml\n").unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("config option `exceptions.file`"),
        "{missing}"
    );
    let short = load("exceptions:\n  max_ahead: 1h\n").unwrap_err();
    assert!(
        short
            .to_string()
            .starts_with("config option `exceptions.max_ahead`"),
        "{short}"
    );
    let unknown = load("exceptions:\n  path: x\n").unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `path`"),
        "{unknown}"
    );
}
