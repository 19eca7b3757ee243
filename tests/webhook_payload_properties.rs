//! Properties of every webhook parser but distribution's (whose own
//! parser tests sit beside it) over arbitrary input: random bytes, each
//! format's documented example mutated field by field, and truncated bodies
//! never panic, and whatever comes back is internally consistent.

use crate::support::payloads;

use image_auditor::event::Source;
use image_auditor::reference::RegistryPrefix;
use image_auditor::sources::webhook::{Parsed, acr, ecr, harbor};
use payloads::*;
use proptest::prelude::*;
use serde_json::{Value, json};

const PARSERS: [(Source, Parser); 3] = [
    (Source::Harbor, harbor::parse),
    (Source::Ecr, ecr::parse),
    (Source::Acr, acr::parse),
];

/// Whatever came back is internally consistent: every delivery and its
/// event or malformed reason carry the same id and the parser's source.
fn check_consistent(source: Source, parsed: &Parsed) {
    for d in &parsed.deliveries {
        assert_eq!(d.source, source);
        match &d.decoded {
            Ok(e) => {
                assert_eq!(e.id, d.id);
                assert_eq!(e.source, source);
                assert!(e.digest.is_some() || e.tag.is_some());
            }
            Err(m) => {
                assert_eq!(m.id, d.id);
                assert_eq!(m.source, source);
            }
        }
    }
}

fn valid_bodies() -> Vec<Value> {
    vec![
        harbor_push(),
        harbor_cloud_event(
            "harbor.artifact.pushed",
            json!([{"digest": D1, "tag": D1, "resource_url": format!("h.io/library/busybox@{D1}")}]),
        ),
        ecr_push(),
        json!([acr_grid_event(
            ACR_ID,
            "Microsoft.ContainerRegistry.ImagePushed",
            acr_push_data(D2)
        )]),
        acr_delete_data(D1),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,80}".prop_map(Value::String),
        Just(json!(D1)),
        Just(json!(format!("{D1}x"))),
        Just(json!("sha256:")),
        Just(json!("SUCCESS")),
        Just(json!("Microsoft.EventGrid.SubscriptionValidationEvent")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([null, 1, "x"])),
    ]
}

/// Every path to a value inside `v`, as object keys and array indices.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(PathStep::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Index(i) => &mut v[*i],
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Value),
    Remove,
    Duplicate,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => json_leaf().prop_map(Mutation::Replace),
        1 => Just(Mutation::Remove),
        1 => Just(Mutation::Duplicate),
    ]
}

fn mutate(mut body: Value, picks: &[(prop::sample::Index, Mutation)]) -> Value {
    for (pick, m) in picks {
        let mut all = Vec::new();
        paths(&body, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        match m {
            Mutation::Replace(v) => *at_mut(&mut body, &path) = v.clone(),
            Mutation::Remove => {
                if let Some((last, parent)) = path.split_last() {
                    match (at_mut(&mut body, parent), last) {
                        (Value::Object(map), PathStep::Key(k)) => {
                            map.remove(k);
                        }
                        (Value::Array(items), PathStep::Index(i)) => {
                            items.remove(*i);
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Duplicate => {
                let target = at_mut(&mut body, &path);
                let copy = target.clone();
                if let Value::Array(items) = target {
                    items.push(copy);
                }
            }
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (source, parse) in PARSERS {
            if let Ok(parsed) = parse(&body, None) {
                check_consistent(source, &parsed);
            }
        }
    }

    #[test]
    fn mutated_payloads_never_panic(
        which in 0usize..5,
        picks in proptest::collection::vec((any::<prop::sample::Index>(), mutation()), 1..6),
        registry in proptest::option::of(Just("registry.example.com/mirror")),
    ) {
        let body = mutate(valid_bodies().swap_remove(which), &picks);
        let bytes = serde_json::to_vec(&body).unwrap();
        let registry = registry.map(|r| r.parse::<RegistryPrefix>().unwrap());
        for (source, parse) in PARSERS {
            if let Ok(parsed) = parse(&bytes, registry.as_ref()) {
                check_consistent(source, &parsed);
            }
        }
    }

    #[test]
    fn truncated_payloads_never_panic(which in 0usize..5, cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&valid_bodies()[which]).unwrap();
        let prefix = &bytes[..cut.index(bytes.len() + 1)];
        for (source, parse) in PARSERS {
            if let Ok(parsed) = parse(prefix, None) {
                check_consistent(source, &parsed);
            }
        }
    }
}
