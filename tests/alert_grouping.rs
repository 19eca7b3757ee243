//! The pure part of alerting: which findings are one fact, over the real
//! k8s.io corpus (whose regional registries name images under different
//! paths), routing and severity; an unpromoted index and the platform
//! images pushed with it, over time, as one sink's dispatcher sees them.

use crate::support;

use std::collections::HashMap;

use image_auditor::alert::{Alert, AlertStatus, FactKey, Route, Severity, group, plan};
use image_auditor::audit::VerdictKind;
use image_auditor::event::{Action, EndpointName, EventId, Source};
use image_auditor::findings::{DedupeKey, Finding, FindingId};
use image_auditor::index::Index;
use image_auditor::manifest;

const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn k8s() -> Index {
    let set = manifest::load(std::path::Path::new(
        image_auditor::config::DEFAULT_MANIFESTS,
    ))
    .unwrap();
    Index::build(&set, 1)
}

fn finding(id: i64, verdict: VerdictKind, repository: Option<&str>, digest: &str) -> Finding {
    Finding {
        id: FindingId(id),
        created_at_ms: 1_000 + id,
        received_at_ms: 1_000 + id,
        key: DedupeKey {
            source: Source::PubsubPull,
            endpoint: EndpointName::only(),
            event_id: EventId(format!("m{id}")),
        },
        action: Some(Action::Insert),
        repository: repository.map(|r| r.parse().unwrap()),
        digest: Some(digest.parse().unwrap()),
        tag: None,
        verdict,
        reason: "not promoted".into(),
        evidence: serde_json::json!([]),
        manifest_commit: None,
        index_generation: 1,
        excepted_by: None,
        triage: image_auditor::findings::Triage::open(),
        deliveries: Vec::new(),
    }
}

#[test]
fn one_digest_in_every_region_is_one_fact_named_by_its_image() {
    let index = k8s();
    let regions = [
        "us-central1-docker.pkg.dev/k8s-artifacts-prod/images/etcd",
        "europe-west1-docker.pkg.dev/k8s-artifacts-prod/images/etcd",
        "asia-northeast1-docker.pkg.dev/k8s-artifacts-prod/images/etcd",
    ];
    let findings: Vec<Finding> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| finding(i as i64, VerdictKind::Unpromoted, Some(r), D))
        .collect();
    let groups = group(&findings, &index);
    assert_eq!(groups.len(), 1);
    let (key, members) = &groups[0];
    assert_eq!(key.image, "etcd");
    assert_eq!(members.len(), 3);
    let alert = Alert::of(key, members, AlertStatus::New);
    assert_eq!(alert.repositories.len(), 3);
    assert_eq!(alert.evidence, "not in any manifest");
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.first_seen_ms, 1_000);
    assert_eq!(alert.last_seen_ms, 1_002);
}

#[test]
fn other_content_other_verdicts_and_other_images_are_other_facts() {
    let index = k8s();
    let etcd = "us-central1-docker.pkg.dev/k8s-artifacts-prod/images/etcd";
    let findings = vec![
        finding(1, VerdictKind::Unpromoted, Some(etcd), D),
        finding(2, VerdictKind::Unpromoted, Some(etcd), E),
        finding(3, VerdictKind::Deleted, Some(etcd), D),
        finding(
            4,
            VerdictKind::Unpromoted,
            Some("us-central1-docker.pkg.dev/k8s-artifacts-prod/images/pause"),
            D,
        ),
        // No repository (malformed): never merged with anything.
        finding(5, VerdictKind::Malformed, None, D),
        finding(6, VerdictKind::Malformed, None, D),
    ];
    let groups = group(&findings, &index);
    assert_eq!(groups.len(), 6);
    let ids: std::collections::HashSet<String> = groups.iter().map(|(k, _)| k.alert_id()).collect();
    assert_eq!(ids.len(), 6, "alert ids differ between facts");
}

#[test]
fn the_alert_id_is_stable_and_16_hex() {
    let key = FactKey {
        verdict: VerdictKind::TagMoved,
        digest: Some(D.into()),
        tag: Some("v1".into()),
        image: "etcd".into(),
    };
    let id = key.alert_id();
    assert_eq!(id, key.clone().alert_id());
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let other = FactKey {
        tag: Some("v2".into()),
        ..key
    };
    assert_ne!(other.alert_id(), id);
}

#[test]
fn routes_select_verdicts_and_severities() {
    let all = Route::default();
    let critical = Route {
        verdicts: Vec::new(),
        min_severity: Some(Severity::Critical),
    };
    let moved_only = Route {
        verdicts: vec![VerdictKind::TagMoved],
        min_severity: None,
    };
    for (verdict, severity) in [
        (VerdictKind::Unpromoted, Severity::Critical),
        (VerdictKind::UnpromotedAttachment, Severity::Critical),
        (VerdictKind::TagMoved, Severity::Critical),
        (VerdictKind::Deleted, Severity::Critical),
        (VerdictKind::WrongRepository, Severity::Warning),
        (VerdictKind::UnlistedTag, Severity::Warning),
        (VerdictKind::Unverifiable, Severity::Warning),
        (VerdictKind::Malformed, Severity::Warning),
    ] {
        assert_eq!(Severity::of(verdict), severity, "{verdict:?}");
        assert!(all.matches(verdict));
        assert_eq!(critical.matches(verdict), severity == Severity::Critical);
        assert_eq!(
            moved_only.matches(verdict),
            verdict == VerdictKind::TagMoved
        );
    }
}

// One rogue push, one alert: an unpromoted index and the platform images
// pushed with it. The dispatcher's decisions are `plan` (what is due) and
// `Alert::next` (new or update); `dispatch` below replays them over time as
// the dispatcher's loop does, with nothing else in between.

/// The index I and its platform images P1..P3.
const I: &str = "sha256:9999999999999999999999999999999999999999999999999999999999999999";
const P: [&str; 3] = [
    "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
    "sha256:b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
    "sha256:c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
];
const PLATFORMS: [&str; 3] = ["linux/amd64", "linux/arm64", "linux/s390x"];
/// A nested list inside the index, and what it lists.
const L: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
const WAIT: i64 = 10_000;
const POLL: i64 = 1_000;
const REPEAT: i64 = 3_600_000;

/// 25 regional destinations `r<i>.example/prod` of one project.
fn regions_index(dir: &std::path::Path) -> Index {
    let mut registries = String::from("registries:\n- name: staging.example/etcd\n  src: true\n");
    for i in 0..25 {
        registries.push_str(&format!("- name: r{i}.example/prod\n"));
    }
    support::fixtures::write_project(
        dir,
        "etcd",
        &registries,
        &format!("- name: etcd\n  dmap:\n    \"{D}\": [\"3.5\"]\n"),
    );
    Index::build(&manifest::load(dir).unwrap(), 1)
}

fn region(i: usize) -> String {
    format!("r{i}.example/prod/etcd")
}

/// A finding recorded at `at_ms`; `lists` is the pushed list the resolver
/// recorded in its evidence, as (digest, platform).
fn pushed(
    id: i64,
    at_ms: i64,
    verdict: VerdictKind,
    repository: &str,
    digest: &str,
    lists: &[(&str, Option<&str>)],
) -> Finding {
    let mut f = finding(id, verdict, Some(repository), digest);
    f.created_at_ms = at_ms;
    f.received_at_ms = at_ms;
    if !lists.is_empty() {
        let children: Vec<serde_json::Value> = lists
            .iter()
            .map(|(d, p)| match p {
                Some(p) => serde_json::json!({"digest": d, "platform": p}),
                None => serde_json::json!({"digest": d}),
            })
            .collect();
        f.evidence = serde_json::json!([{"pushed_list": {"children": children}}]);
    }
    f
}

fn index_of_p(id: i64, at_ms: i64, verdict: VerdictKind, repository: &str) -> Finding {
    let lists: Vec<(&str, Option<&str>)> = P
        .iter()
        .zip(PLATFORMS)
        .map(|(d, p)| (*d, Some(p)))
        .collect();
    let mut f = pushed(id, at_ms, verdict, repository, I, &lists);
    f.tag = Some("v9".parse().unwrap());
    f
}

/// The alerts one sink sends for `findings` (each claimable from its
/// `created_at_ms`), polling every `POLL` until `until_ms`.
fn dispatch(index: &Index, findings: &[Finding], until_ms: i64) -> Vec<Alert> {
    let mut held: Vec<Finding> = Vec::new();
    let mut sent: HashMap<FactKey, Alert> = HashMap::new();
    let mut alerts = Vec::new();
    let mut now = 0;
    while now <= until_ms {
        held.extend(
            findings
                .iter()
                .filter(|f| f.created_at_ms <= now && f.created_at_ms > now - POLL)
                .cloned(),
        );
        let plan = plan(&held, index, sent.iter(), now, WAIT, false);
        let batch: Vec<(FactKey, Alert)> = plan
            .due
            .iter()
            .map(|(key, members)| (key.clone(), Alert::next(key, members, sent.get(key))))
            .collect();
        let waiting = plan.waiting;
        for (key, alert) in batch {
            alerts.push(alert.clone());
            sent.insert(key, alert);
        }
        held.retain(|f| waiting.contains(&f.id));
        sent.retain(|_, a| now - a.first_seen_ms < REPEAT);
        now += POLL;
    }
    alerts
}

/// (summary, status, number of findings) of one alert.
type Told = (String, AlertStatus, usize);

/// What each alert told, in order.
fn told(alerts: &[Alert]) -> Vec<Told> {
    alerts
        .iter()
        .map(|a| (a.summary.clone(), a.status, a.finding_ids.len()))
        .collect()
}

fn short(d: &str) -> &str {
    &d[..19]
}

#[test]
fn an_index_and_its_platform_images_pushed_together_are_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let index = regions_index(dir.path());
    let r0 = region(0);
    let r1 = region(1);
    let u = VerdictKind::Unpromoted;
    let child = |id, at, digest| pushed(id, at, u, &r0, digest, &[]);
    let index_alert = |children: usize, places: usize| {
        let with = match children {
            0 => String::new(),
            1 => " (index + 1 platform image)".into(),
            n => format!(" (index + {n} platform images)"),
        };
        let places = if places == 1 {
            "1 repository".to_owned()
        } else {
            format!("{places} repositories")
        };
        format!("unpromoted: etcd:v9@{}{with} in {places}", short(I))
    };
    let alone = |digest: &str| format!("unpromoted: etcd@{} in 1 repository", short(digest));
    let new = AlertStatus::New;
    let updated = AlertStatus::Updated;

    // (case, findings, expected alerts)
    let cases: Vec<(&str, Vec<Finding>, Vec<Told>)> = vec![
        (
            "children first, the index within the window",
            vec![
                child(1, 0, P[0]),
                child(2, 200, P[1]),
                child(3, 400, P[2]),
                index_of_p(4, 3_000, u, &r0),
            ],
            vec![(index_alert(3, 1), new, 4)],
        ),
        (
            "the index first, its children within the window",
            vec![
                index_of_p(1, 0, u, &r0),
                child(2, 2_000, P[0]),
                child(3, 2_000, P[1]),
                child(4, 9_000, P[2]),
            ],
            vec![(index_alert(3, 1), new, 4)],
        ),
        (
            "the index never comes: each child alerts alone after the window",
            vec![child(1, 0, P[0]), child(2, 0, P[1])],
            vec![(alone(P[0]), new, 1), (alone(P[1]), new, 1)],
        ),
        (
            "the index comes after the children were told: nothing is taken back",
            vec![child(1, 0, P[0]), index_of_p(2, 15_000, u, &r0)],
            vec![(alone(P[0]), new, 1), (index_alert(0, 1), new, 1)],
        ),
        (
            "a child after the index was told updates the index's alert",
            vec![index_of_p(1, 0, u, &r0), child(2, 30_000, P[1])],
            vec![(index_alert(0, 1), new, 1), (index_alert(1, 1), updated, 2)],
        ),
        (
            "an image the index does not list is not its",
            vec![child(1, 0, D), index_of_p(2, 1_000, u, &r0)],
            vec![(alone(D), new, 1), (index_alert(0, 1), new, 1)],
        ),
        (
            // A promoted index alerts only for its tag; its entries are
            // explained by it, so a finding about one is another matter.
            "a child of a promoted index is not folded",
            vec![
                child(1, 0, P[0]),
                index_of_p(2, 1_000, VerdictKind::UnlistedTag, &r0),
            ],
            vec![
                (alone(P[0]), new, 1),
                (
                    format!("unlisted_tag: etcd:v9@{} in 1 repository", short(I)),
                    new,
                    1,
                ),
            ],
        ),
        (
            "the index pushed to another repository does not explain the child",
            vec![child(1, 0, P[0]), index_of_p(2, 1_000, u, &r1)],
            vec![(alone(P[0]), new, 1), (index_alert(0, 1), new, 1)],
        ),
        (
            "an index of another image name does not explain the child",
            vec![
                child(1, 0, P[0]),
                index_of_p(2, 1_000, u, "r0.example/prod/pause"),
            ],
            vec![
                (alone(P[0]), new, 1),
                (
                    format!("unpromoted: pause:v9@{} in 1 repository", short(I)),
                    new,
                    1,
                ),
            ],
        ),
        (
            "a nested list and its entries join the outermost index",
            vec![
                pushed(1, 0, u, &r0, P[0], &[]),
                pushed(2, 100, u, &r0, L, &[(P[0], Some("linux/amd64"))]),
                pushed(3, 200, u, &r0, I, &[(L, None), (P[1], Some("linux/arm64"))]),
                child(4, 300, P[1]),
            ],
            vec![(
                format!(
                    "unpromoted: etcd@{} (index + 3 platform images) in 1 repository",
                    short(I)
                ),
                new,
                4,
            )],
        ),
    ];
    for (case, findings, expected) in cases {
        let alerts = dispatch(&index, &findings, 60_000);
        assert_eq!(told(&alerts), expected, "{case}");
        // A joined child is named with the platform its index gives it,
        // even when it joins an alert sent before it came.
        for a in &alerts {
            for c in &a.children {
                let listed = P.iter().zip(PLATFORMS).find(|(d, _)| **d == c.digest);
                if let Some((_, platform)) = listed {
                    assert_eq!(c.platform.as_deref(), Some(platform), "{case}: {c:?}");
                }
            }
        }
        // Every finding is told, by exactly one alert (an update repeats
        // the findings of the alert it updates).
        let mut told_by: HashMap<i64, std::collections::BTreeSet<&str>> = HashMap::new();
        for a in &alerts {
            for id in &a.finding_ids {
                told_by.entry(id.0).or_default().insert(&a.alert_id);
            }
        }
        for f in &findings {
            assert_eq!(
                told_by.get(&f.id.0).map(|s| s.len()),
                Some(1),
                "{case}: {f:?}"
            );
        }
    }
}

#[test]
fn an_index_of_3_platforms_pushed_to_25_regions_is_one_alert_naming_all() {
    let dir = tempfile::tempdir().unwrap();
    let index = regions_index(dir.path());
    let mut findings = Vec::new();
    let mut id = 0;
    // Region by region, the platform images by digest and then the index.
    for r in 0..25 {
        for p in P {
            id += 1;
            findings.push(pushed(
                id,
                id * 50,
                VerdictKind::Unpromoted,
                &region(r),
                p,
                &[],
            ));
        }
        id += 1;
        findings.push(index_of_p(id, id * 50, VerdictKind::Unpromoted, &region(r)));
    }
    let alerts = dispatch(&index, &findings, 60_000);
    assert_eq!(alerts.len(), 1, "{:#?}", told(&alerts));
    let alert = &alerts[0];
    assert_eq!(
        alert.summary,
        format!(
            "unpromoted: etcd:v9@{} (index + 3 platform images) in 25 repositories",
            short(I)
        )
    );
    assert_eq!(alert.digest.as_deref(), Some(I));
    assert_eq!(alert.repositories.len(), 25);
    assert_eq!(alert.events.len(), 100);
    assert_eq!(alert.finding_ids.len(), 100);
    let children: Vec<(Option<&str>, &str)> = alert
        .children
        .iter()
        .map(|c| (c.platform.as_deref(), c.digest.as_str()))
        .collect();
    assert_eq!(
        children,
        vec![
            (Some("linux/amd64"), P[0]),
            (Some("linux/arm64"), P[1]),
            (Some("linux/s390x"), P[2])
        ]
    );
    // The index's reason and evidence speak for the alert; the pushed list
    // is told as `children`, not as a manifest entry.
    assert_eq!(alert.evidence, "not in any manifest");
    let json = serde_json::to_value(alert).unwrap();
    assert_eq!(json["children"][2]["platform"], "linux/s390x");
    assert!(json.get("lists").is_none(), "internal: {json}");
}
