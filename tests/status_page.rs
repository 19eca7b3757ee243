//! The status pages in headless Chromium (WebDriver through Debian's
//! chromedriver): the real `serve` binary, findings from real pushes and
//! from the store, and a browser reading and acting on them.
//! - hostile text from events, manifests, exceptions and notes shows as
//!   text: no element or script is injected, on the queue and on a
//!   finding's page;
//! - the queue puts open findings first and each filter narrows it;
//! - acknowledging and resolving from a finding's page goes through the
//!   authenticated API, keeps the token in `sessionStorage` only, and shows
//!   the API's refusals;
//! - without JavaScript the pages still read (and the filter form works);
//! - a screenshot of the queue (`IMAGE_AUDITOR_SCREENSHOT` saves it).

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::Locator;
use image_auditor::audit::{Evidence, VerdictKind};
use image_auditor::event::EventId;
use image_auditor::findings::{
    Decision, FindingId, SqliteStore, Store, TriageAction, TriageChange, TriageState, now_ms,
};
use serde_json::{Value, json};
use support::browser::Browser;
use support::decisions::{decision, digest, new_finding};
use support::fixtures::write_project;
use support::service::Service;

const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ALICE: &str = "alice-token-0123456789";
const SCRIPT: &str = "<script>window.pwned = 'script'</script>";
const IMG: &str = "\"><img src=x onerror=\"window.pwned = 'img'\">";
const WITHIN: Duration = Duration::from_secs(20);

fn manifests(dir: &Path) -> PathBuf {
    let root = dir.join("manifests-root");
    write_project(
        &root,
        "demo",
        "registries:\n- name: staging.example/demo\n  src: true\n- name: r0.example/prod\n",
        &format!("- name: app\n  dmap:\n    \"{A}\": [\"1.0\"]\n"),
    );
    root
}

/// What [`setup`] put in the store, by role.
struct Seeded {
    /// Unpromoted at r0.example/prod/app, received three days ago, open.
    old: FindingId,
    /// Tag moved at r0.example/prod/other, a minute ago, acknowledged.
    acknowledged: FindingId,
    /// Unpromoted at …/app, ten minutes ago, resolved.
    resolved: FindingId,
    /// Hostile text in every field that carries text, five minutes ago, open.
    hostile: FindingId,
}

/// Records the seeded findings, then starts `serve` on that store with
/// alice's triage token.
async fn setup(dir: &Path) -> (Service, Seeded) {
    // The store blocks: off the async threads, as the service calls it.
    let seeded = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || seed(&dir))
            .await
            .unwrap()
    };
    let token = dir.join("alice.token");
    std::fs::write(&token, ALICE).unwrap();
    let config = format!(
        "resolve: false\ntriage:\n  tokens:\n  - name: alice\n    token_file: {}\n",
        token.display()
    );
    let service = Service::start(dir, &manifests(dir), &config).await;
    (service, seeded)
}

fn seed(dir: &Path) -> Seeded {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let store = SqliteStore::open(dir.join("data/findings.sqlite")).unwrap();
    let now = now_ms();
    let at = |d: Decision, ago_ms: i64, repo: &str| Decision {
        received_at_ms: now - ago_ms,
        repository: Some(format!("r0.example/prod/{repo}").parse().unwrap()),
        ..d
    };
    let record = |d: Decision| new_finding(store.record(&d).unwrap());
    let old = record(at(
        decision("old", VerdictKind::Unpromoted),
        3 * 86_400_000,
        "app",
    ));
    let acknowledged = record(at(
        decision("moved", VerdictKind::TagMoved),
        60_000,
        "other",
    ));
    let resolved = record(at(
        decision("done", VerdictKind::Unpromoted),
        600_000,
        "app",
    ));
    let mut hostile = at(decision("h", VerdictKind::Unpromoted), 300_000, "app");
    hostile.key.event_id = EventId(format!("ev{IMG}"));
    hostile.reason = format!("reason {SCRIPT}{IMG}");
    hostile.manifest_commit = Some(IMG.into());
    hostile.evidence = vec![
        Evidence {
            project: IMG.into(),
            file: Arc::from(Path::new(SCRIPT)),
            line: 3,
            image: IMG.into(),
            digest: digest("ab"),
            tags: vec![IMG.into()],
            parent: Some(digest("cd")),
        }
        .into(),
    ];
    let hostile = record(hostile.excepted_by(format!("{SCRIPT}.yaml:4")));
    let change = |action, note: &str| TriageChange::new(action, "bob", note).unwrap();
    store
        .triage(acknowledged, &change(TriageAction::Acknowledge, IMG), now)
        .unwrap();
    store
        .triage(resolved, &change(TriageAction::Resolve, "rolled back"), now)
        .unwrap();
    Seeded {
        old,
        acknowledged,
        resolved,
        hostile,
    }
}

/// The queue's rows as (id, state), in page order.
async fn rows(browser: &Browser) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for row in browser
        .client
        .find_all(Locator::Css("tr.finding"))
        .await
        .unwrap()
    {
        let id = row.attr("data-id").await.unwrap().unwrap();
        let state = row.attr("data-state").await.unwrap().unwrap();
        out.push((id.parse().unwrap(), state));
    }
    out
}

async fn goto(browser: &Browser, service: &Service, path: &str) {
    browser.client.goto(&service.url(path)).await.unwrap();
}

/// The page's text as a reader sees it.
async fn text(browser: &Browser) -> String {
    browser
        .client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn api_finding(service: &Service, id: FindingId) -> Value {
    let all: Value = reqwest::get(service.url("/v1/findings?limit=1000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id.0)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_shows_as_text_and_injects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (service, seeded) = setup(dir.path()).await;
    // A real delivery whose action is markup: it becomes a malformed
    // finding whose reason quotes it.
    let answer = service
        .push_gcr(
            "m-hostile",
            &json!({"action": SCRIPT, "digest": format!("r0.example/prod/app@{B}")}),
        )
        .await;
    assert_eq!(answer["verdict"], "malformed", "{answer}");

    let response = reqwest::get(service.url("/")).await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");

    let browser = Browser::start(true).await;
    let injected = "return [document.querySelectorAll('img, svg, iframe').length, \
                    document.scripts.length, window.pwned === undefined]";
    goto(&browser, &service, "/").await;
    assert_eq!(browser.eval(injected).await, json!([0, 0, true]));
    let page = text(&browser).await;
    assert!(page.contains(&format!("reason {SCRIPT}{IMG}")), "{page}");
    assert!(
        page.contains(&format!("excepted by {SCRIPT}.yaml:4")),
        "{page}"
    );
    assert!(page.contains(SCRIPT), "the pushed action quoted: {page}");
    assert!(page.contains("acknowledged by bob"), "{page}");

    goto(&browser, &service, &format!("/findings/{}", seeded.hostile)).await;
    // One script: the page's own, from its own file.
    assert_eq!(browser.eval(injected).await, json!([0, 1, true]));
    let src = browser.eval("return document.scripts[0].src").await;
    assert_eq!(src, json!(service.url("/assets/triage.js")));
    let page = text(&browser).await;
    for shown in [
        format!("ev{IMG}"),
        format!("{SCRIPT}:3"),
        format!("{SCRIPT}.yaml:4"),
        IMG.to_owned(),
    ] {
        assert!(page.contains(&shown), "{shown} not shown in {page}");
    }

    // A note is text from a person: acknowledged with markup through the
    // API, it reads back as typed.
    let response = reqwest::Client::new()
        .post(service.url(&format!("/v1/findings/{}/acknowledge", seeded.hostile)))
        .bearer_auth(ALICE)
        .json(&json!({"note": format!("note {IMG}{SCRIPT}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.eval(injected).await, json!([0, 1, true]));
    let note = browser
        .client
        .find(Locator::Id("triage-note"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(note, format!("note {IMG}{SCRIPT}"));

    // An id that names nothing, itself markup, is a 404 page that says so.
    let missing = reqwest::get(service.url("/findings/%3Cscript%3E1"))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    goto(&browser, &service, "/findings/%3Cscript%3E1").await;
    assert_eq!(browser.eval(injected).await, json!([0, 0, true]));
    assert!(text(&browser).await.contains("no finding <script>1"));
    goto(&browser, &service, "/findings/999999").await;
    assert!(text(&browser).await.contains("There is no finding 999999"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_puts_open_first_and_each_filter_narrows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (service, s) = setup(dir.path()).await;
    let browser = Browser::start(true).await;

    goto(&browser, &service, "/").await;
    let all = rows(&browser).await;
    assert_eq!(
        all,
        [
            (s.hostile.0, "open".to_owned()),
            (s.old.0, "open".into()),
            (s.acknowledged.0, "acknowledged".into()),
            (s.resolved.0, "resolved".into()),
        ],
        "open first, newest first within"
    );
    let ids = |rows: Vec<(i64, String)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    let cases: [(&str, Vec<i64>); 6] = [
        ("/?verdict=tag_moved", vec![s.acknowledged.0]),
        (
            "/?repository=r0.example%2Fprod%2Fapp",
            vec![s.hostile.0, s.old.0, s.resolved.0],
        ),
        ("/?state=resolved", vec![s.resolved.0]),
        (
            "/?since=24h",
            vec![s.hostile.0, s.acknowledged.0, s.resolved.0],
        ),
        (
            "/?state=open&verdict=unpromoted&since=1h",
            vec![s.hostile.0],
        ),
        // One row per state and page: the next page of open findings.
        (
            &format!("/?state=open&limit=1&before={}", s.hostile),
            vec![s.old.0],
        ),
    ];
    for (path, expected) in cases {
        goto(&browser, &service, path).await;
        assert_eq!(ids(rows(&browser).await), expected, "{path}");
    }
    // A page of one row per state links to the next.
    goto(&browser, &service, "/?limit=1").await;
    assert_eq!(
        ids(rows(&browser).await),
        [s.hostile.0, s.acknowledged.0, s.resolved.0]
    );
    let older = browser.client.find(Locator::Css("a.older")).await.unwrap();
    older.click().await.unwrap();
    browser
        .client
        .wait()
        .at_most(WITHIN)
        .for_url(
            &format!(
                "{}?state=open&before={}&limit=1",
                service.url("/"),
                s.hostile
            )
            .parse()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ids(rows(&browser).await), [s.old.0]);

    // A filter the page cannot use says which, with 400.
    let bad = reqwest::get(service.url("/?verdict=nope&since=soon"))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    goto(&browser, &service, "/?verdict=nope&since=soon").await;
    let errors = browser
        .client
        .find(Locator::Id("filter-errors"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        errors.contains("verdict: unknown verdict \"nope\""),
        "{errors}"
    );
    assert!(errors.contains("since: \"soon\""), "{errors}");

    // The screenshot of the whole queue.
    goto(&browser, &service, "/").await;
    let png = browser.client.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let shot = dir.path().join("status-page.png");
    std::fs::write(&shot, &png).unwrap();
    if let Some(path) = std::env::var_os("IMAGE_AUDITOR_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_and_resolve_from_the_finding_page() {
    let dir = tempfile::tempdir().unwrap();
    let (service, s) = setup(dir.path()).await;
    let browser = Browser::start(true).await;
    goto(&browser, &service, &format!("/findings/{}", s.old)).await;
    let el = |id: &'static str| browser.client.find(Locator::Id(id));
    let state_is = |state: &'static str| {
        let browser = &browser;
        async move {
            browser
                .client
                .wait()
                .at_most(WITHIN)
                .for_element(Locator::Css(&format!("#triage[data-state='{state}']")))
                .await
                .unwrap();
        }
    };
    let result_is_error = || async {
        browser
            .client
            .wait()
            .at_most(WITHIN)
            .for_element(Locator::Css("#result.error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let storage = "return [sessionStorage.getItem('image-auditor.triage-token'), \
                   localStorage.length, document.cookie]";

    // The script showed the controls; the page has the evidence.
    assert!(el("act").await.unwrap().is_displayed().await.unwrap());
    let page = text(&browser).await;
    assert!(page.contains("images/sig-foo/images.yaml:7"), "{page}");
    assert!(
        page.contains(&digest("cd").to_string()),
        "the parent index: {page}"
    );

    // A wrong token: the API's 401 is shown, nothing changes or is kept.
    el("token")
        .await
        .unwrap()
        .send_keys("not-a-token-0123456789")
        .await
        .unwrap();
    el("note")
        .await
        .unwrap()
        .send_keys("looking")
        .await
        .unwrap();
    el("acknowledge").await.unwrap().click().await.unwrap();
    let error = result_is_error().await;
    assert!(
        error.starts_with("401: the bearer token is not one of triage.tokens"),
        "{error}"
    );
    assert_eq!(browser.eval(storage).await, json!([null, 0, ""]));
    assert_eq!(
        api_finding(&service, s.old).await["triage"]["state"],
        "open"
    );
    assert_eq!(
        el("triage-state").await.unwrap().text().await.unwrap(),
        "open"
    );

    // The right token, once: acknowledged by the token's holder.
    el("token").await.unwrap().clear().await.unwrap();
    el("token").await.unwrap().send_keys(ALICE).await.unwrap();
    el("acknowledge").await.unwrap().click().await.unwrap();
    state_is("acknowledged").await;
    assert_eq!(
        el("triage-by").await.unwrap().text().await.unwrap(),
        "alice"
    );
    assert_eq!(
        el("triage-note").await.unwrap().text().await.unwrap(),
        "looking"
    );
    let triage = &api_finding(&service, s.old).await["triage"];
    assert_eq!(
        (&triage["state"], &triage["by"], &triage["note"]),
        (&json!("acknowledged"), &json!("alice"), &json!("looking"))
    );
    assert_eq!(browser.eval(storage).await, json!([ALICE, 0, ""]));
    assert!(browser.client.get_all_cookies().await.unwrap().is_empty());
    assert!(!el("token-row").await.unwrap().is_displayed().await.unwrap());
    let disabled = el("acknowledge")
        .await
        .unwrap()
        .prop("disabled")
        .await
        .unwrap();
    assert_eq!(
        disabled.as_deref(),
        Some("true"),
        "acknowledged: no second acknowledge"
    );

    // Resolve on another page of the same tab: the token is not asked again.
    goto(&browser, &service, &format!("/findings/{}", s.acknowledged)).await;
    assert!(!el("token-row").await.unwrap().is_displayed().await.unwrap());
    el("note")
        .await
        .unwrap()
        .send_keys("fixed by rollback")
        .await
        .unwrap();
    el("resolve").await.unwrap().click().await.unwrap();
    state_is("resolved").await;
    assert_eq!(
        el("triage-by").await.unwrap().text().await.unwrap(),
        "alice"
    );
    let triage = &api_finding(&service, s.acknowledged).await["triage"];
    assert_eq!(
        (&triage["state"], &triage["by"], &triage["note"]),
        (
            &json!("resolved"),
            &json!("alice"),
            &json!("fixed by rollback")
        )
    );

    // Resolved behind the page's back: the page still offers acknowledge,
    // and shows the API's 409 when pressed.
    goto(&browser, &service, &format!("/findings/{}", s.hostile)).await;
    let store = SqliteStore::open(service.findings_db()).unwrap();
    let change = TriageChange::new(TriageAction::Resolve, "carol", "").unwrap();
    store.triage(s.hostile, &change, now_ms()).unwrap();
    el("acknowledge").await.unwrap().click().await.unwrap();
    let error = result_is_error().await;
    assert!(error.starts_with("409: "), "{error}");
    assert!(error.contains("resolved"), "{error}");
    assert_eq!(
        store.finding(s.hostile).unwrap().unwrap().triage.state,
        TriageState::Resolved
    );

    // Forgetting the token asks for it again; a refused token is not kept.
    el("forget").await.unwrap().click().await.unwrap();
    assert_eq!(browser.eval(storage).await, json!([null, 0, ""]));
    assert!(el("token-row").await.unwrap().is_displayed().await.unwrap());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_pages_read_and_the_filters_work() {
    let dir = tempfile::tempdir().unwrap();
    let (service, s) = setup(dir.path()).await;
    let browser = Browser::start(false).await;

    goto(&browser, &service, "/").await;
    assert_eq!(rows(&browser).await.len(), 4);
    // The form is a plain GET: choosing a state and submitting narrows.
    let select = browser
        .client
        .find(Locator::Css("#filters select[name=state]"))
        .await
        .unwrap();
    select.select_by_value("acknowledged").await.unwrap();
    browser
        .client
        .find(Locator::Css("#filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .client
        .wait()
        .at_most(WITHIN)
        .for_url(
            &format!(
                "{}?verdict=&repository=&state=acknowledged&since=",
                service.url("/")
            )
            .parse()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&browser).await,
        [(s.acknowledged.0, "acknowledged".to_owned())]
    );

    // A finding's page reads; acting says it needs JavaScript and offers
    // no controls that would do nothing.
    goto(&browser, &service, &format!("/findings/{}", s.old)).await;
    let page = text(&browser).await;
    assert!(page.contains("images/sig-foo/images.yaml:7"), "{page}");
    assert!(page.contains("need JavaScript"), "{page}");
    assert!(
        !browser
            .client
            .find(Locator::Id("act"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    browser.close().await;
}
