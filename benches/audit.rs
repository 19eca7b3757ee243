//! docs/design.md §10: audit decisions per second on one core, for known and unknown
//! digests, against the synthetic 10× k8s.io index. `cargo bench --bench audit`.

#[path = "support/synthetic.rs"]
mod synthetic;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use image_auditor::audit::{Policy, VerdictKind, audit};
use image_auditor::event::{Action, Event, EventId, Source};
use image_auditor::index::Index;
use image_auditor::manifest;
use image_auditor::reference::{Digest, Repository};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    synthetic::generate(dir.path(), &synthetic::Scale::k8s_io_x10()).unwrap();
    let set = manifest::load(dir.path()).unwrap();
    let index = Index::build(&set, 1);
    let policy = Policy::default();

    // Events at real destinations: each promoted digest with its first tag.
    let mut known = Vec::new();
    for m in set.manifests.iter().take(400) {
        for image in &m.images {
            for p in image.promotions.iter().take(4) {
                let dest = &m.destinations[known.len() % m.destinations.len()];
                known.push(Event {
                    id: EventId("bench".into()),
                    source: Source::Gcr,
                    action: Action::Insert,
                    repository: Repository::join(dest, &image.name).unwrap(),
                    digest: Some(p.digest.clone()),
                    tag: p.tags.first().cloned(),
                });
            }
        }
    }
    let unknown: Vec<Event> = known
        .iter()
        .enumerate()
        .map(|(i, e)| Event {
            digest: Some(Digest::sha256_of(&i.to_le_bytes())),
            tag: None,
            ..e.clone()
        })
        .collect();
    for e in &known {
        let kind = audit(&index, e, &policy).verdict.kind;
        assert!(matches!(kind, VerdictKind::Promoted), "{kind} for {e:?}");
    }
    assert_eq!(
        audit(&index, &unknown[0], &policy).verdict.kind,
        VerdictKind::Unpromoted
    );

    eprintln!("{} events per iteration", known.len());
    let mut group = c.benchmark_group("audit_x10");
    for (name, events) in [("known_digest", &known), ("unknown_digest", &unknown)] {
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                events
                    .iter()
                    .filter(|e| audit(&index, e, &policy).verdict.kind.alerts())
                    .count()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
