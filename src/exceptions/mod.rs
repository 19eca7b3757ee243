//! Exceptions: reviewed, expiring acceptances of findings (docs/design.md §4.6).
//!
//! A YAML file (`exceptions.yaml` at the manifest root, reloaded with the
//! manifests, and optionally a local file) lists deviations someone
//! accepted: content pushed by hand and reviewed, legacy images from before
//! the manifests. A finding an unexpired entry covers is recorded with its
//! verdict and `excepted_by` (`file:line`) and raises no alert. An expired
//! entry stops covering anything and is reported once, as an
//! `exception_expired` finding, so it gets renewed or removed.
//!
//! This module is pure: [`Exceptions::lookup`] takes the day to judge expiry
//! on. `load` parses and validates files; `baseline` turns the findings of
//! a sweep into entries for review.
//!
//! Over 500 lines, about half of it the table tests of matching and
//! expiry, which belong beside the matching they pin down; the loader is
//! in `load.rs` and the baseline writer in `baseline.rs`.

pub mod baseline;
mod date;
mod load;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::audit::VerdictKind;
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};

pub use date::{Date, DateError};
pub use load::{
    DEFAULT_MAX_AHEAD_DAYS, ExceptionsConfig, Limits, MAX_FILE_BYTES, parse, read, read_text,
};

/// The exceptions file at the root of a manifest origin.
pub const FILE_NAME: &str = "exceptions.yaml";

/// One accepted deviation. Every match field that is set must match; at
/// least one of `registry`, `image`, `digests` and `tags` is set (an entry
/// that names only verdicts would silence them everywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// The file and line of the entry: what `excepted_by` records.
    pub file: Arc<Path>,
    pub line: u32,
    /// Repositories at or below this prefix (split at `/`).
    pub registry: Option<RegistryPrefix>,
    /// The image name below a prefix: with `registry`, exactly
    /// `registry/image`; alone, any repository ending in `/image`.
    pub image: Option<String>,
    /// Any of these digests.
    pub digests: Vec<Digest>,
    /// Any of these tags (a finding without a tag does not match).
    pub tags: Vec<Tag>,
    /// Any of these verdicts; empty: any alerting verdict.
    pub verdicts: Vec<VerdictKind>,
    pub reason: String,
    pub owner: String,
    /// The last day (UTC) the entry applies.
    pub expires: Date,
}

/// What a finding is about, as far as exceptions are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub repository: &'a Repository,
    pub digest: Option<&'a Digest>,
    pub tag: Option<&'a Tag>,
    pub verdict: VerdictKind,
}

impl Exception {
    /// `file:line`, as recorded in `excepted_by`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// Whether the entry's match fields cover `subject`, expiry aside.
    pub fn covers(&self, s: &Subject<'_>) -> bool {
        if !self.verdicts.is_empty() && !self.verdicts.contains(&s.verdict) {
            return false;
        }
        if !self.digests.is_empty() && !s.digest.is_some_and(|d| self.digests.contains(d)) {
            return false;
        }
        if !self.tags.is_empty() && !s.tag.is_some_and(|t| self.tags.contains(t)) {
            return false;
        }
        match (&self.registry, &self.image) {
            (None, None) => true,
            // Split at `/` only, as destinations are: `prod` does not take
            // `production/app`, `app` does not take `my-app`.
            (Some(prefix), None) => {
                s.repository.as_str() == prefix.as_str()
                    || s.repository.splits().any(|(p, _)| p == prefix.as_str())
            }
            (None, Some(image)) => s.repository.splits().any(|(_, name)| name == image),
            (Some(prefix), Some(image)) => s
                .repository
                .splits()
                .any(|(p, name)| p == prefix.as_str() && name == image),
        }
    }

    /// Expired on `today`: `expires` is the last day it applies.
    pub fn is_expired(&self, today: Date) -> bool {
        today > self.expires
    }

    /// A stable key of what the entry accepts and until when, independent
    /// of its file's path and its line: the id of its expiry report, so
    /// moving an entry does not report it again and renewing it does.
    pub fn key(&self) -> String {
        let mut text = format!(
            "registry={}\nimage={}\n",
            self.registry.as_ref().map_or("", RegistryPrefix::as_str),
            self.image.as_deref().unwrap_or_default()
        );
        for d in &self.digests {
            text.push_str(&format!("digest={d}\n"));
        }
        for t in &self.tags {
            text.push_str(&format!("tag={}\n", t.as_str()));
        }
        for v in &self.verdicts {
            text.push_str(&format!("verdict={}\n", v.as_str()));
        }
        text.push_str(&format!("expires={}\n", self.expires));
        let digest = Digest::sha256_of(text.as_bytes()).to_string();
        digest["sha256:".len().."sha256:".len() + 16].to_owned()
    }
}

/// The answer of [`Exceptions::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// No entry covers the subject.
    None,
    /// This entry (the first in file order) covers it and has not expired.
    Applies(&'a Exception),
    /// Only expired entries cover it; this is the first.
    Expired(&'a Exception),
}

impl<'a> Lookup<'a> {
    pub fn applies(self) -> Option<&'a Exception> {
        match self {
            Lookup::Applies(e) => Some(e),
            _ => None,
        }
    }
}

/// Every loaded entry, files in load order, entries in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exceptions {
    entries: Vec<Exception>,
}

impl Exceptions {
    pub fn new(entries: Vec<Exception>) -> Exceptions {
        Exceptions { entries }
    }

    pub fn entries(&self) -> &[Exception] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an alerting verdict about `subject` is excepted on `today`.
    /// Verdicts that do not alert are never excepted (nothing to silence).
    pub fn lookup(&self, subject: &Subject<'_>, today: Date) -> Lookup<'_> {
        if !subject.verdict.alerts() {
            return Lookup::None;
        }
        let mut expired = None;
        for e in self.entries.iter().filter(|e| e.covers(subject)) {
            if !e.is_expired(today) {
                return Lookup::Applies(e);
            }
            expired.get_or_insert(e);
        }
        expired.map_or(Lookup::None, Lookup::Expired)
    }

    /// Entries expired on `today`.
    pub fn expired(&self, today: Date) -> impl Iterator<Item = &Exception> {
        self.entries.iter().filter(move |e| e.is_expired(today))
    }
}

/// Where exceptions are read from: `exceptions.yaml` at a manifest root
/// that is a directory (tree content: regular files only), then the local
/// file, if any (it must exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: std::path::PathBuf,
    /// In the manifest tree: a symlink is refused, a missing file is none.
    pub in_tree: bool,
}

impl Source {
    pub fn all(manifest_root: &Path, local: Option<&Path>) -> Vec<Source> {
        let mut out = Vec::new();
        if manifest_root.is_dir() {
            out.push(Source {
                path: manifest_root.join(FILE_NAME),
                in_tree: true,
            });
        }
        if let Some(local) = local {
            out.push(Source {
                path: local.to_path_buf(),
                in_tree: false,
            });
        }
        out
    }

    /// This source's entries: an error for a local file that is missing.
    pub fn read(&self, limits: Limits) -> Result<Vec<Exception>, Vec<crate::manifest::Problem>> {
        match read(&self.path, self.in_tree, limits)? {
            Some(entries) => Ok(entries),
            None if self.in_tree => Ok(Vec::new()),
            None => Err(vec![crate::manifest::Problem {
                severity: crate::manifest::Severity::Error,
                file: self.path.as_path().into(),
                line: None,
                project: None,
                message: "does not exist (exceptions.file / --exceptions)".into(),
            }]),
        }
    }
}

/// Every source's entries, for one-shot commands: all problems of all
/// files, or the exceptions.
pub fn load_all(
    sources: &[Source],
    limits: Limits,
) -> Result<Exceptions, Vec<crate::manifest::Problem>> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for source in sources {
        match source.read(limits) {
            Ok(mut e) => entries.append(&mut e),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(Exceptions::new(entries))
    } else {
        Err(problems)
    }
}

/// How `check` and `POST /v1/check` show an exception.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// `applies`, or `expired` (it would apply, but has expired: the
    /// finding alerts).
    pub state: &'static str,
    /// `file:line`.
    pub excepted_by: String,
    pub reason: String,
    pub owner: String,
    pub expires: String,
}

impl Shown {
    pub fn of(lookup: Lookup<'_>) -> Option<Shown> {
        let (state, e) = match lookup {
            Lookup::None => return None,
            Lookup::Applies(e) => ("applies", e),
            Lookup::Expired(e) => ("expired", e),
        };
        Some(Shown {
            state,
            excepted_by: e.location(),
            reason: e.reason.clone(),
            owner: e.owner.clone(),
            expires: e.expires.to_string(),
        })
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            "applies" => write!(
                f,
                "excepted by {} (owner {}, expires {}: {})",
                self.excepted_by, self.owner, self.expires, self.reason
            ),
            _ => write!(
                f,
                "exception {} expired on {} (owner {}): renew or remove it",
                self.excepted_by, self.expires, self.owner
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::fixtures::d;

    fn entry() -> Exception {
        Exception {
            file: Path::new("exceptions.yaml").into(),
            line: 3,
            registry: None,
            image: None,
            digests: Vec::new(),
            tags: Vec::new(),
            verdicts: Vec::new(),
            reason: "legacy".into(),
            owner: "team-a".into(),
            expires: "2025-06-30".parse().unwrap(),
        }
    }

    /// Test-only setters, so that a table row states its entry in one line.
    impl Exception {
        fn with_registry(mut self, prefix: &str) -> Exception {
            self.registry = Some(prefix.parse().unwrap());
            self
        }
        fn with_image(mut self, image: &str) -> Exception {
            self.image = Some(image.into());
            self
        }
        fn with_digests(mut self, digests: &[u8]) -> Exception {
            self.digests = digests.iter().copied().map(d).collect();
            self
        }
        fn with_tags(mut self, tags: &[&str]) -> Exception {
            self.tags = tags.iter().map(|t| t.parse().unwrap()).collect();
            self
        }
        fn with_verdicts(mut self, verdicts: &[VerdictKind]) -> Exception {
            self.verdicts = verdicts.to_vec();
            self
        }
    }

    /// One row: an entry, the finding (repository, digest, tag, verdict),
    /// and whether the entry covers it.
    struct Row {
        name: &'static str,
        entry: Exception,
        finding: (&'static str, Option<u8>, Option<&'static str>, VerdictKind),
        covered: bool,
    }

    #[test]
    fn entries_cover_exactly_what_their_fields_say() {
        use VerdictKind::*;
        let prod = "r.example/prod";
        let rows = [
            Row {
                name: "registry prefix takes repositories below it",
                entry: entry().with_registry(prod),
                finding: ("r.example/prod/team/app", Some(1), Some("v1"), Unpromoted),
                covered: true,
            },
            Row {
                name: "registry prefix is split at / only",
                entry: entry().with_registry(prod),
                finding: ("r.example/production/app", Some(1), None, Unpromoted),
                covered: false,
            },
            Row {
                name: "registry prefix of another host",
                entry: entry().with_registry(prod),
                finding: ("s.example/prod/app", Some(1), None, Unpromoted),
                covered: false,
            },
            Row {
                name: "image alone takes it below any prefix",
                entry: entry().with_image("team/app"),
                finding: ("eu.r.example/prod/team/app", Some(1), None, Unpromoted),
                covered: true,
            },
            Row {
                name: "image is whole path components",
                entry: entry().with_image("app"),
                finding: ("r.example/prod/my-app", Some(1), None, Unpromoted),
                covered: false,
            },
            Row {
                name: "registry and image name one repository",
                entry: entry().with_registry(prod).with_image("app"),
                finding: ("r.example/prod/app", Some(1), None, Unpromoted),
                covered: true,
            },
            Row {
                name: "registry and image: not a deeper repository",
                entry: entry().with_registry(prod).with_image("app"),
                finding: ("r.example/prod/team/app", Some(1), None, Unpromoted),
                covered: false,
            },
            Row {
                name: "digest listed",
                entry: entry().with_digests(&[2, 1]),
                finding: ("r.example/prod/app", Some(1), Some("v1"), Unpromoted),
                covered: true,
            },
            Row {
                name: "digest not listed: a new push still alerts",
                entry: entry().with_digests(&[2]),
                finding: ("r.example/prod/app", Some(1), Some("v1"), Unpromoted),
                covered: false,
            },
            Row {
                name: "digests set, finding without a digest",
                entry: entry().with_digests(&[1]),
                finding: ("r.example/prod/app", None, Some("v1"), TagMoved),
                covered: false,
            },
            Row {
                name: "tag listed",
                entry: entry().with_tags(&["v1"]),
                finding: ("r.example/prod/app", Some(1), Some("v1"), UnlistedTag),
                covered: true,
            },
            Row {
                name: "tags set, finding without a tag",
                entry: entry().with_tags(&["v1"]),
                finding: ("r.example/prod/app", Some(1), None, Unpromoted),
                covered: false,
            },
            Row {
                name: "verdict listed",
                entry: entry()
                    .with_image("app")
                    .with_verdicts(&[Unpromoted, Missing]),
                finding: ("r.example/prod/app", Some(1), None, Missing),
                covered: true,
            },
            Row {
                name: "verdict not listed",
                entry: entry().with_image("app").with_verdicts(&[Unpromoted]),
                finding: ("r.example/prod/app", Some(1), Some("v1"), TagMoved),
                covered: false,
            },
            Row {
                name: "every field must match",
                entry: entry()
                    .with_registry(prod)
                    .with_image("app")
                    .with_digests(&[1])
                    .with_tags(&["v1"])
                    .with_verdicts(&[Unpromoted]),
                finding: ("r.example/prod/app", Some(1), Some("v2"), Unpromoted),
                covered: false,
            },
        ];
        for row in &rows {
            let (repository, digest, tag, verdict) = row.finding;
            let repository: Repository = repository.parse().unwrap();
            let digest = digest.map(d);
            let tag: Option<Tag> = tag.map(|t| t.parse().unwrap());
            let subject = Subject {
                repository: &repository,
                digest: digest.as_ref(),
                tag: tag.as_ref(),
                verdict,
            };
            assert_eq!(row.entry.covers(&subject), row.covered, "{}", row.name);
        }
    }

    #[test]
    fn lookup_takes_the_first_unexpired_entry_and_names_an_expired_one() {
        let repository: Repository = "r.example/prod/app".parse().unwrap();
        let digest = d(1);
        let subject = Subject {
            repository: &repository,
            digest: Some(&digest),
            tag: None,
            verdict: VerdictKind::Unpromoted,
        };
        let mut old = entry().with_image("app");
        old.line = 3;
        old.expires = "2025-01-31".parse().unwrap();
        let mut new = old.clone();
        new.line = 9;
        new.expires = "2025-03-31".parse().unwrap();
        let set = Exceptions::new(vec![old.clone(), new.clone()]);
        let day = |s: &str| s.parse::<Date>().unwrap();

        assert_eq!(
            set.lookup(&subject, day("2025-01-31")),
            Lookup::Applies(&old)
        );
        // The last day applies; the day after, the next entry takes over.
        assert_eq!(
            set.lookup(&subject, day("2025-02-01")),
            Lookup::Applies(&new)
        );
        assert_eq!(
            set.lookup(&subject, day("2025-04-01")),
            Lookup::Expired(&old)
        );
        assert_eq!(set.expired(day("2025-02-01")).count(), 1);
        assert_eq!(set.expired(day("2025-04-01")).count(), 2);

        // A verdict that does not alert is never excepted.
        let promoted = Subject {
            verdict: VerdictKind::Promoted,
            ..subject
        };
        assert_eq!(set.lookup(&promoted, day("2025-01-01")), Lookup::None);
        assert_eq!(
            Exceptions::default().lookup(&subject, day("2025-01-01")),
            Lookup::None
        );
    }

    #[test]
    fn the_key_ignores_where_the_entry_is_but_not_what_it_accepts() {
        let a = entry();
        let mut moved = a.clone();
        moved.line = 40;
        moved.file = Path::new("/elsewhere/exceptions.yaml").into();
        moved.reason = "reworded".into();
        assert_eq!(a.key(), moved.key());
        let mut renewed = a.clone();
        renewed.expires = "2025-12-31".parse().unwrap();
        assert_ne!(a.key(), renewed.key());
        assert_ne!(a.key(), a.clone().with_digests(&[1]).key());
        assert_eq!(a.key().len(), 16);
    }
}
