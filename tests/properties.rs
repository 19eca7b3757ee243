//! Property tests: reference parse/print round-trips, and `audit` and the
//! GCR parser never panic and keep their invariants on arbitrary input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value};

use image_auditor::audit::{Policy, VerdictKind, audit};
use image_auditor::event::{Action, Event, EventId, Source};
use image_auditor::index::{Children, How, Index};
use image_auditor::manifest::{Excluded, Image, Layout, Manifest, ManifestSet, Promotion};
use image_auditor::reference::{Digest, Reference, RegistryPrefix, Repository, Tag};
use image_auditor::sources::gcr;

// ---------------------------------------------------------------- references

fn host() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?";
    let name = prop_oneof![
        Just("localhost".to_string()),
        proptest::collection::vec(label, 2..4).prop_map(|l| l.join(".")),
        // A single label is a host only with a port.
        label.prop_map(|l| format!("{l}:5000")),
    ];
    (name, proptest::option::of(0u32..100_000)).prop_map(|(name, port)| match port {
        Some(p) if !name.contains(':') => format!("{name}:{p}"),
        _ => name,
    })
}

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?"
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
}

fn tag() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        "[A-Za-z0-9_][A-Za-z0-9_.-]{127}",
    ]
}

fn digest() -> impl Strategy<Value = Digest> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(Digest::Sha256),
        proptest::collection::vec(any::<u8>(), 64)
            .prop_map(|v| Digest::Sha512(Box::new(v.try_into().unwrap()))),
    ]
}

proptest! {
    #[test]
    fn reference_round_trips(
        host in host(),
        path in path(),
        tag in proptest::option::of(tag()),
        digest in proptest::option::of(digest()),
    ) {
        let repo = format!("{host}/{path}");
        let mut text = repo.clone();
        if let Some(t) = &tag {
            text.push(':');
            text.push_str(t);
        }
        if let Some(d) = &digest {
            text.push('@');
            text.push_str(&d.to_string());
        }
        let r: Reference = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(r.repository.as_str(), repo.as_str());
        prop_assert_eq!(r.repository.host(), host.as_str());
        prop_assert_eq!(r.repository.path(), path.as_str());
        prop_assert_eq!(r.tag.as_ref().map(|t| t.as_str()), tag.as_deref());
        prop_assert_eq!(&r.digest, &digest);
        prop_assert_eq!(r.to_string(), text.clone());
        let again: Reference = r.to_string().parse().unwrap();
        prop_assert_eq!(again, r);
    }

    #[test]
    fn digest_round_trips(d in digest()) {
        let text = d.to_string();
        let hex_len = if matches!(d, Digest::Sha256(_)) { 64 } else { 128 };
        prop_assert_eq!(text.len(), d.algorithm().len() + 1 + hex_len);
        let again: Digest = text.parse().unwrap();
        prop_assert_eq!(again.bytes(), d.bytes());
        prop_assert_eq!(again, d);
    }

    #[test]
    fn digest_of_bytes_verifies_them(bytes in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<usize>()) {
        let d = Digest::sha256_of(&bytes);
        prop_assert!(d.verifies(&bytes));
        if !bytes.is_empty() {
            let mut other = bytes.clone();
            let i = flip % other.len();
            other[i] ^= 1;
            prop_assert!(!d.verifies(&other));
        }
    }

    /// Parsing arbitrary text never panics, and whatever parses prints back
    /// to text that parses to the same value.
    #[test]
    fn reference_parse_never_panics(s in "[a-zA-Z0-9./:@_-]{0,60}|\\PC{0,40}") {
        if let Ok(r) = s.parse::<Reference>() {
            let again: Reference = r.to_string().parse().unwrap();
            prop_assert_eq!(again, r);
        }
        let _ = s.parse::<Digest>();
        let _ = s.parse::<Tag>();
        let _ = s.parse::<Repository>();
        let _ = s.parse::<RegistryPrefix>();
    }
}

// ---------------------------------------------------------------- audit

/// A few digests shared by manifests and events, so events hit the index.
fn pool_digest(i: usize) -> Digest {
    format!("sha256:{}", format!("{i:x}").repeat(64).get(..64).unwrap())
        .parse()
        .unwrap()
}

const HOSTS: [&str; 4] = ["us.gcr.io", "eu.gcr.io", "localhost:5000", "r.example"];
const SEGMENTS: [&str; 5] = ["prod", "kube-state", "kube-state-metrics", "a", "a-amd64"];
const NAMES: [&str; 6] = [
    "app",
    "a/b",
    "kube-state",
    "app-amd64",
    "prod",
    "kube-state-metrics",
];

fn prefix() -> impl Strategy<Value = String> {
    (
        0..HOSTS.len(),
        proptest::collection::vec(0..SEGMENTS.len(), 0..3),
    )
        .prop_map(|(h, segs)| {
            let mut s = HOSTS[h].to_string();
            for i in segs {
                s.push('/');
                s.push_str(SEGMENTS[i]);
            }
            s
        })
}

fn pool_tag() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1.0".to_string()),
        Just("latest".to_string()),
        Just("v1".to_string()),
        (0..8usize).prop_map(|i| format!("sha256-{}.sig", pool_digest(i).hex())),
        (0..8usize).prop_map(|i| format!("sha256-{}.att", pool_digest(i).hex())),
        "[a-z0-9][a-z0-9.-]{0,6}",
    ]
}

fn promotion() -> impl Strategy<Value = Promotion> {
    (
        0..8usize,
        proptest::collection::vec(pool_tag(), 0..3),
        1..100u32,
    )
        .prop_map(|(d, tags, line)| Promotion {
            digest: pool_digest(d),
            tags: tags.iter().map(|t| t.parse().unwrap()).collect(),
            line,
        })
}

fn image() -> impl Strategy<Value = Image> {
    (0..NAMES.len(), proptest::collection::vec(promotion(), 0..4)).prop_map(|(n, promotions)| {
        Image {
            name: NAMES[n].to_string(),
            promotions,
        }
    })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        prefix(),
        proptest::collection::vec(prefix(), 1..4),
        proptest::collection::vec(image(), 1..4),
        0..1000u32,
    )
        .prop_map(|(source, destinations, images, n)| {
            let file: Arc<Path> = PathBuf::from(format!("images/p{n}/images.yaml")).into();
            Manifest {
                project: format!("p{n}"),
                manifest_file: file.clone(),
                images_file: file,
                source: source.parse().unwrap(),
                destinations: destinations.iter().map(|d| d.parse().unwrap()).collect(),
                images,
            }
        })
}

fn excluded() -> impl Strategy<Value = Excluded> {
    (proptest::collection::vec(prefix(), 0..3), 0..1000u32).prop_map(|(dests, n)| Excluded {
        project: format!("x{n}"),
        manifest_file: PathBuf::from(format!("manifests/x{n}/promoter-manifest.yaml")).into(),
        destinations: dests.iter().map(|d| d.parse().unwrap()).collect(),
    })
}

/// A small, possibly inconsistent manifest set (the index must cope with
/// anything the loader could hand it).
fn manifest_set() -> impl Strategy<Value = ManifestSet> {
    (
        proptest::collection::vec(manifest(), 1..4),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::collection::vec(excluded(), 1..2),
        ],
    )
        .prop_map(|(manifests, excluded)| ManifestSet {
            root: PathBuf::from("generated"),
            layout: Layout::Thin,
            commit: None,
            manifests,
            excluded,
            problems: Vec::new(),
        })
}

/// Resolved lists among the pool digests, cycles included.
fn lists() -> impl Strategy<Value = Vec<(usize, Vec<usize>)>> {
    proptest::collection::vec(
        (0..8usize, proptest::collection::vec(0..10usize, 0..3)),
        0..6,
    )
}

fn build(set: &ManifestSet, lists: &[(usize, Vec<usize>)]) -> Index {
    let index = Index::build(set, 7);
    let mut children = Children::default();
    for (parent, kids) in lists {
        children.record(&pool_digest(*parent), kids.iter().map(|&k| pool_digest(k)));
    }
    index.with_children(Arc::new(children))
}

fn index() -> impl Strategy<Value = Index> {
    (manifest_set(), lists()).prop_map(|(set, lists)| build(&set, &lists))
}

/// An event made mostly of the set's own prefixes, image names, digests and
/// tags (so that it lands in scope and hits promotions), sometimes of
/// anything valid.
fn event_for(set: &ManifestSet) -> impl Strategy<Value = Event> + use<> {
    let mut others: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
    let mut prefixes = Vec::new();
    let mut names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let mut digests: Vec<Digest> = (0..10).map(pool_digest).collect();
    let mut tags: Vec<String> = vec!["1.0".into()];
    for m in &set.manifests {
        others.push(m.source.to_string());
        prefixes.extend(m.destinations.iter().map(|d| d.to_string()));
        for image in &m.images {
            names.push(image.name.clone());
            for p in &image.promotions {
                digests.push(p.digest.clone());
                tags.extend(p.tags.iter().map(|t| t.to_string()));
                tags.push(format!("sha256-{}.sbom", p.digest.hex()));
            }
        }
    }
    for x in &set.excluded {
        prefixes.extend(x.destinations.iter().map(|d| d.to_string()));
    }
    let prefix = prop_oneof![
        5 => proptest::sample::select(prefixes),
        1 => proptest::sample::select(others),
    ];
    let repository = prop_oneof![
        6 => (prefix.clone(), proptest::sample::select(names))
            .prop_map(|(p, n)| format!("{p}/{n}")),
        2 => (prefix, path()).prop_map(|(p, rest)| format!("{p}/{rest}")),
        1 => (host(), path()).prop_map(|(h, p)| format!("{h}/{p}")),
    ]
    .prop_map(|r| r.parse::<Repository>().unwrap());
    let digest = prop_oneof![
        4 => proptest::sample::select(digests),
        1 => digest(),
    ];
    let tag = prop_oneof![
        4 => proptest::sample::select(tags),
        1 => pool_tag(),
        1 => tag(),
    ];
    (
        prop_oneof![3 => Just(Action::Insert), 1 => Just(Action::Delete)],
        repository,
        proptest::option::of(digest),
        proptest::option::weighted(0.4, tag),
    )
        .prop_map(|(action, repository, digest, tag)| Event {
            id: EventId("prop".into()),
            source: Source::Gcr,
            action,
            repository,
            digest,
            tag: tag.map(|t| t.parse().unwrap()),
        })
}

fn scenario() -> impl Strategy<Value = (Index, Event)> {
    (manifest_set(), lists()).prop_flat_map(|(set, lists)| {
        let index = build(&set, &lists);
        (Just(index), event_for(&set))
    })
}

fn repository() -> impl Strategy<Value = Repository> {
    prop_oneof![
        (prefix(), 0..NAMES.len()).prop_map(|(p, n)| format!("{p}/{}", NAMES[n])),
        (prefix(), path()).prop_map(|(p, rest)| format!("{p}/{rest}")),
        (host(), path()).prop_map(|(h, p)| format!("{h}/{p}")),
    ]
    .prop_map(|r| r.parse().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn audit_never_panics_and_keeps_its_invariants(
        (index, event) in scenario(),
        strict in any::<bool>(),
        allow in any::<bool>(),
    ) {
        use VerdictKind::*;
        let policy = Policy { strict_repository: strict, allow_unpromoted_deletes: allow };
        let a = audit(&index, &event, &policy);
        let kind = a.verdict.kind;
        // Pure: the same input gives the same answer.
        prop_assert_eq!(&audit(&index, &event, &policy), &a);
        prop_assert!(!matches!(kind, Malformed | Unverifiable), "{a:?}");
        match event.action {
            Action::Delete => prop_assert!(
                matches!(kind, Deleted | DeletedUnpromoted | OutOfScope),
                "{a:?}"
            ),
            Action::Insert => prop_assert!(
                !matches!(kind, Deleted | DeletedUnpromoted | Missing),
                "{a:?}"
            ),
            Action::Absent => prop_assert!(
                matches!(kind, Missing | OutOfScope),
                "{a:?}"
            ),
        }
        if kind == DeletedUnpromoted {
            prop_assert!(allow);
        }
        if kind == OutOfScope {
            let claims = index.claims(&event.repository);
            prop_assert!(!claims.in_scope() && claims.excluded.is_empty());
            prop_assert!(a.pending.is_none());
        }
        // Only a verdict that reading could overturn is provisional.
        if let Some(p) = &a.pending {
            prop_assert!(
                matches!(kind, Unpromoted | WrongRepository | UnpromotedAttachment
                    | DeletedUnpromoted | Undecided),
                "{a:?}"
            );
            for &image in &p.parents {
                let r = index.parents_to_resolve(image);
                prop_assert!(!r.digests.is_empty(), "{r:?}");
                prop_assert!(!r.repositories.is_empty(), "{r:?}");
            }
        }
        // Positive verdicts carry their evidence.
        if matches!(kind, Promoted | PromotedChild | PromotedAttachment | TagMoved | WrongRepository) {
            prop_assert!(!a.verdict.evidence.is_empty(), "{a:?}");
        }
        if kind == Promoted {
            prop_assert!(a.verdict.evidence.iter().all(|e| e.parent.is_none()), "{a:?}");
        }
        if kind == PromotedChild {
            prop_assert!(a.verdict.evidence.iter().all(|e| e.parent.as_ref() == Some(&e.digest)), "{a:?}");
        }
        if matches!(kind, Promoted | PromotedChild) {
            prop_assert!(a.pending.is_none());
            prop_assert!(event.digest.is_some());
        }
    }

    /// Index derived events: digests the index promotes, at repositories its
    /// own prefixes and image names make.
    #[test]
    fn audit_of_a_promoted_digest_at_its_own_repository_is_never_unpromoted(
        index in index(),
        pick in any::<prop::sample::Index>(),
    ) {
        // Every (repository, digest) the index promotes directly.
        let mut direct = BTreeMap::new();
        for d in (0..8).map(pool_digest) {
            for p in index.placements(&d) {
                let image = index.promotion_image(p.promotion);
                let m = index.manifest(index.image_manifest(image));
                for dest in &m.destinations {
                    if let Ok(repo) = Repository::join(dest, index.image_name(image)) {
                        direct.insert(repo.to_string(), d.clone());
                    }
                }
            }
        }
        prop_assume!(!direct.is_empty());
        let (repo, d) = direct.iter().nth(pick.index(direct.len())).unwrap();
        let event = Event {
            id: EventId("prop".into()),
            source: Source::Gcr,
            action: Action::Insert,
            repository: repo.parse().unwrap(),
            digest: Some(d.clone()),
            tag: None,
        };
        let a = audit(&index, &event, &Policy::default());
        prop_assert!(
            matches!(a.verdict.kind, VerdictKind::Promoted | VerdictKind::PromotedChild),
            "{repo}@{d}: {a:?}"
        );
    }

    /// A tag R promises to D1 never explains another digest D2 at R, however
    /// D2 is promoted: under another image name of the same manifest (row
    /// 6), as a child of a list (row 5), elsewhere, or not at all.
    #[test]
    fn a_promised_tag_never_makes_another_digest_promoted(
        index in index(),
        strict in any::<bool>(),
    ) {
        // Every (R, T) the index promises, with the digests T is promised to.
        let mut promised: BTreeMap<(String, String), BTreeSet<Digest>> = BTreeMap::new();
        for d in (0..8).map(pool_digest) {
            for p in index.placements(&d).into_iter().filter(|p| p.how == How::Direct) {
                let image = index.promotion_image(p.promotion);
                let m = index.manifest(index.image_manifest(image));
                for dest in &m.destinations {
                    let Ok(repo) = Repository::join(dest, index.image_name(image)) else {
                        continue;
                    };
                    for tag in index.promotion_tags(p.promotion) {
                        promised
                            .entry((repo.to_string(), tag.to_string()))
                            .or_default()
                            .insert(d.clone());
                    }
                }
            }
        }
        let policy = Policy { strict_repository: strict, allow_unpromoted_deletes: false };
        for ((repo, tag), to) in &promised {
            for d2 in (0..10).map(pool_digest).filter(|d| !to.contains(d)) {
                let event = Event {
                    id: EventId("prop".into()),
                    source: Source::Gcr,
                    action: Action::Insert,
                    repository: repo.parse().unwrap(),
                    digest: Some(d2.clone()),
                    tag: Some(tag.parse().unwrap()),
                };
                let a = audit(&index, &event, &policy);
                prop_assert!(
                    !matches!(a.verdict.kind, VerdictKind::Promoted | VerdictKind::PromotedChild),
                    "{repo}:{tag}@{d2}, promised to {to:?}: {a:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- gcr payloads

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        Just(Value::String("INSERT".into())),
        Just(Value::String("DELETE".into())),
        (repository(), digest()).prop_map(|(r, d)| Value::String(format!("{r}@{d}"))),
        (repository(), tag()).prop_map(|(r, t)| Value::String(format!("{r}:{t}"))),
        "[a-zA-Z0-9./:@_-]{0,40}".prop_map(Value::String),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_parse(bytes: &[u8]) -> Result<(), TestCaseError> {
    let id = EventId("prop".into());
    match gcr::parse(&id, bytes) {
        Ok(e) => {
            prop_assert!(e.digest.is_some() || e.tag.is_some());
            prop_assert_eq!(&e.id, &id);
            let v: Value = serde_json::from_slice(bytes).unwrap();
            let action = v.get("action").and_then(Value::as_str);
            prop_assert_eq!(
                action,
                Some(match e.action {
                    Action::Insert => "INSERT",
                    Action::Delete => "DELETE",
                    Action::Absent => unreachable!("the GCR parser never builds an absence"),
                })
            );
            let again: Repository = e.repository.to_string().parse().unwrap();
            prop_assert_eq!(again, e.repository);
        }
        Err(m) => {
            prop_assert_eq!(&m.id, &id);
            prop_assert!(!m.reason.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn gcr_parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_parse(&bytes)?;
    }

    #[test]
    fn gcr_parse_never_panics_on_json_objects(
        fields in proptest::collection::btree_map(
            prop_oneof![Just("action"), Just("digest"), Just("tag"), Just("Digest"), Just("x")]
                .prop_map(str::to_string),
            json_value(),
            0..5,
        )
    ) {
        let object = Value::Object(fields.into_iter().collect::<Map<_, _>>());
        check_parse(serde_json::to_string(&object).unwrap().as_bytes())?;
    }
}
