//! `scan --baseline`: the findings of a first sweep as exceptions entries
//! for review, instead of alerts (docs/design.md §4.6).
//!
//! One entry per repository and verdict where one entry is exact: it
//! matches the content found and nothing else of that repository. Content
//! verdicts (`unpromoted`, `wrong_repository`, …) are about a digest
//! whatever its tag, so their entry lists digests only; tag verdicts
//! (`tag_moved`, `unlisted_tag`, `missing`) are about a digest under a tag,
//! so their entry lists both, and is split where digests × tags would
//! accept a pair that was not found. Pure: the caller writes the text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::audit::VerdictKind;
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};

use super::Date;

/// One finding of the sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub repository: Repository,
    pub digest: Option<Digest>,
    pub tag: Option<Tag>,
    pub verdict: VerdictKind,
}

/// The match fields of one entry to write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Draft {
    pub registry: Option<RegistryPrefix>,
    pub image: String,
    pub verdict: VerdictKind,
    pub digests: Vec<Digest>,
    pub tags: Vec<Tag>,
}

/// Whether the tag is part of what a verdict says is wrong.
fn tag_matters(verdict: VerdictKind) -> bool {
    matches!(
        verdict,
        VerdictKind::TagMoved | VerdictKind::UnlistedTag | VerdictKind::Missing
    )
}

/// The entries covering exactly `found`. `split` names a repository as a
/// registry prefix and the image below it (the destination prefix that
/// claims it); `None` writes the whole path as the image under its host.
pub fn drafts(
    found: &[Found],
    split: impl Fn(&Repository) -> Option<(RegistryPrefix, String)>,
) -> Vec<Draft> {
    // (repository, verdict) → digest → tags (None: untagged or tag not relevant).
    type Pairs = BTreeMap<Digest, BTreeSet<Option<Tag>>>;
    let mut groups: BTreeMap<(Repository, VerdictKind), Pairs> = BTreeMap::new();
    for f in found {
        // Only what an entry can match: a finding without a digest (a tag
        // deleted, say) is covered by a tag entry with no digest at all.
        let digest = match &f.digest {
            Some(d) => d.clone(),
            None => continue,
        };
        let tag = f.tag.clone().filter(|_| tag_matters(f.verdict));
        groups
            .entry((f.repository.clone(), f.verdict))
            .or_default()
            .entry(digest)
            .or_default()
            .insert(tag);
    }
    let mut out = Vec::new();
    for ((repository, verdict), pairs) in groups {
        let (registry, image) = match split(&repository) {
            Some((prefix, image)) => (Some(prefix), image),
            None => (repository.host().parse().ok(), repository.path().to_owned()),
        };
        let draft = |digests: Vec<Digest>, tags: Vec<Tag>| Draft {
            registry: registry.clone(),
            image: image.clone(),
            verdict,
            digests,
            tags,
        };
        // Digests found without a tag that matters: an entry of digests alone.
        let untagged: Vec<Digest> = pairs
            .iter()
            .filter(|(_, tags)| tags.contains(&None))
            .map(|(d, _)| d.clone())
            .collect();
        if !untagged.is_empty() {
            out.push(draft(untagged, Vec::new()));
        }
        // Tagged pairs: digests that share one tag set form an exact product.
        let mut by_tags: BTreeMap<Vec<Tag>, Vec<Digest>> = BTreeMap::new();
        for (digest, tags) in &pairs {
            let tags: Vec<Tag> = tags.iter().flatten().cloned().collect();
            if !tags.is_empty() {
                by_tags.entry(tags).or_default().push(digest.clone());
            }
        }
        // Or tags that share one digest set, when that takes fewer entries.
        let mut by_digests: BTreeMap<Vec<Digest>, Vec<Tag>> = BTreeMap::new();
        {
            let mut digests_of: BTreeMap<Tag, Vec<Digest>> = BTreeMap::new();
            for (digest, tags) in &pairs {
                for tag in tags.iter().flatten() {
                    digests_of
                        .entry(tag.clone())
                        .or_default()
                        .push(digest.clone());
                }
            }
            for (tag, digests) in digests_of {
                by_digests.entry(digests).or_default().push(tag);
            }
        }
        if by_digests.len() < by_tags.len() {
            out.extend(by_digests.into_iter().map(|(d, t)| draft(d, t)));
        } else {
            out.extend(by_tags.into_iter().map(|(t, d)| draft(d, t)));
        }
    }
    out
}

/// The text of an exceptions file holding `drafts`, each with `reason`,
/// `owner` and `expires`. Values are written as JSON strings (valid YAML),
/// so no tag or reason changes type or meaning.
pub fn to_yaml(drafts: &[Draft], reason: &str, owner: &str, expires: Date, header: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    if drafts.is_empty() {
        out.push_str("exceptions: []\n");
        return out;
    }
    out.push_str("exceptions:\n");
    for d in drafts {
        let mut first = true;
        let mut field = |out: &mut String, text: String| {
            let _ = writeln!(out, "{} {text}", if first { "  -" } else { "   " });
            first = false;
        };
        if let Some(r) = &d.registry {
            field(&mut out, format!("registry: {}", q(r.as_str())));
        }
        field(&mut out, format!("image: {}", q(&d.image)));
        field(&mut out, format!("verdict: {}", d.verdict.as_str()));
        let list = |out: &mut String, name: &str, items: Vec<String>, first: bool| {
            let _ = writeln!(out, "{} {name}:", if first { "  -" } else { "   " });
            for item in items {
                let _ = writeln!(out, "      - {}", q(&item));
            }
        };
        if !d.digests.is_empty() {
            list(
                &mut out,
                "digests",
                d.digests.iter().map(ToString::to_string).collect(),
                false,
            );
        }
        if !d.tags.is_empty() {
            list(
                &mut out,
                "tags",
                d.tags.iter().map(|t| t.as_str().to_owned()).collect(),
                false,
            );
        }
        let _ = writeln!(out, "    reason: {}", q(reason));
        let _ = writeln!(out, "    owner: {}", q(owner));
        let _ = writeln!(out, "    expires: {expires}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::fixtures::{d, t};
    use std::path::Path;
    use std::sync::Arc;

    fn found(repo: &str, digest: u8, tag: Option<&str>, verdict: VerdictKind) -> Found {
        Found {
            repository: repo.parse().unwrap(),
            digest: Some(d(digest)),
            tag: tag.map(t),
            verdict,
        }
    }
    /// The findings of `verdict` in `repo`, one per `digest[:tag]` of
    /// `pushes` (digests by fixture number): `"1:v1 4"` is digest 1 tagged
    /// `v1` and digest 4 untagged.
    fn pushed(repo: &str, verdict: VerdictKind, pushes: &str) -> Vec<Found> {
        let one = |push: &str| match push.split_once(':') {
            Some((digest, tag)) => found(repo, digest.parse().unwrap(), Some(tag), verdict),
            None => found(repo, push.parse().unwrap(), None, verdict),
        };
        pushes.split_whitespace().map(one).collect()
    }
    fn split(r: &Repository) -> Option<(RegistryPrefix, String)> {
        r.path().strip_prefix("prod/").map(|image| {
            (
                format!("{}/prod", r.host()).parse().unwrap(),
                image.to_owned(),
            )
        })
    }

    /// (registry, image, verdict, digests, tags) of one expected entry.
    type Want = (
        Option<&'static str>,
        &'static str,
        VerdictKind,
        Vec<u8>,
        Vec<&'static str>,
    );

    #[test]
    fn one_entry_per_repository_and_verdict_where_that_is_exact() {
        use VerdictKind::*;
        let app = "r.example/prod/app";
        let prod = Some("r.example/prod");
        struct Case {
            name: &'static str,
            found: Vec<Found>,
            /// (registry, image, verdict, digests, tags) per entry.
            want: Vec<Want>,
        }
        let cases = [
            Case {
                name: "content verdicts list digests, whatever the tags",
                found: pushed(app, Unpromoted, "1:v1 2:v2 2:v2b"),
                want: vec![(prod, "app", Unpromoted, vec![1, 2], vec![])],
            },
            Case {
                name: "verdicts are separate entries",
                found: [
                    pushed(app, Unpromoted, "1:v1"),
                    pushed(app, UnlistedTag, "3:v3"),
                ]
                .concat(),
                want: vec![
                    (prod, "app", Unpromoted, vec![1], vec![]),
                    (prod, "app", UnlistedTag, vec![3], vec!["v3"]),
                ],
            },
            Case {
                name: "tag verdicts: one product when it is exact",
                found: pushed(app, UnlistedTag, "1:a 1:b 2:a 2:b"),
                want: vec![(prod, "app", UnlistedTag, vec![1, 2], vec!["a", "b"])],
            },
            Case {
                name: "tag verdicts: split where the product would accept more",
                found: pushed(app, TagMoved, "1:v1 2:v2"),
                want: vec![
                    (prod, "app", TagMoved, vec![1], vec!["v1"]),
                    (prod, "app", TagMoved, vec![2], vec!["v2"]),
                ],
            },
            Case {
                name: "tag verdicts: tags sharing digests, fewer entries",
                found: pushed(app, Missing, "1:a 2:a 1:b 2:b 3:c"),
                want: vec![
                    (prod, "app", Missing, vec![1, 2], vec!["a", "b"]),
                    (prod, "app", Missing, vec![3], vec!["c"]),
                ],
            },
            Case {
                name: "untagged missing digests: digests alone",
                found: pushed(app, Missing, "4 5:v5"),
                want: vec![
                    (prod, "app", Missing, vec![4], vec![]),
                    (prod, "app", Missing, vec![5], vec!["v5"]),
                ],
            },
            Case {
                name: "repositories no prefix claims: the whole path under the host",
                found: pushed("r.example/legacy/tool", Unpromoted, "6:x"),
                want: vec![(
                    Some("r.example"),
                    "legacy/tool",
                    Unpromoted,
                    vec![6],
                    vec![],
                )],
            },
            Case {
                name: "a finding without a digest is left out",
                found: vec![Found {
                    repository: app.parse().unwrap(),
                    digest: None,
                    tag: Some(t("v1")),
                    verdict: Deleted,
                }],
                want: vec![],
            },
        ];
        for case in cases {
            let mut got = drafts(&case.found, split);
            got.sort();
            let mut want: Vec<Draft> = case
                .want
                .iter()
                .map(|(registry, image, verdict, digests, tags)| Draft {
                    registry: registry.map(|r| r.parse().unwrap()),
                    image: (*image).to_owned(),
                    verdict: *verdict,
                    digests: digests
                        .iter()
                        .map(|&n| d(n))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    tags: tags.iter().map(|s| t(s)).collect(),
                })
                .collect();
            want.sort();
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn the_written_file_loads_and_excepts_exactly_what_was_found() {
        use VerdictKind::*;
        let found = vec![
            found("r.example/prod/app", 1, Some("1.10"), Unpromoted),
            found("r.example/prod/app", 2, Some("v2"), TagMoved),
            found("r.example/prod/app", 3, Some("v3"), TagMoved),
        ];
        let expires: Date = "2025-06-30".parse().unwrap();
        let text = to_yaml(
            &drafts(&found, split),
            "legacy: \"before\" the auditor # not a comment",
            "team: a",
            expires,
            "baseline of sweep 1\nreview before merging",
        );
        let file: Arc<Path> = Path::new("baseline.yaml").into();
        let limits = super::super::Limits {
            today: "2025-01-01".parse().unwrap(),
            max_ahead_days: 180,
        };
        let entries = super::super::parse(&file, &text, limits).unwrap_or_else(|p| {
            panic!(
                "{text}\n{}",
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert_eq!(entries.len(), 3, "{text}");
        assert_eq!(
            entries[0].reason,
            "legacy: \"before\" the auditor # not a comment"
        );
        assert_eq!(entries[0].owner, "team: a");
        assert!(text.starts_with("# baseline of sweep 1\n# review before merging\n"));
        let set = super::super::Exceptions::new(entries);
        let today = limits.today;
        let covered = |f: &Found| {
            set.lookup(
                &super::super::Subject {
                    repository: &f.repository,
                    digest: f.digest.as_ref(),
                    tag: f.tag.as_ref(),
                    verdict: f.verdict,
                },
                today,
            )
            .applies()
            .is_some()
        };
        for f in &found {
            assert!(covered(f), "{f:?} not covered by\n{text}");
        }
        // A new push, or a found digest under another moved tag, is not.
        for new in [
            super::tests::found("r.example/prod/app", 9, Some("v9"), Unpromoted),
            super::tests::found("r.example/prod/app", 2, Some("v3"), TagMoved),
            super::tests::found("r.example/prod/other", 1, Some("v1"), Unpromoted),
        ] {
            assert!(!covered(&new), "{new:?} covered by\n{text}");
        }

        let empty = to_yaml(&[], "r", "o", expires, "nothing found");
        assert_eq!(super::super::parse(&file, &empty, limits).unwrap(), vec![]);
    }
}
