//! Reading and validating exceptions files, in the manner of the manifests:
//! unknown and duplicate keys are errors, every problem names its file and
//! line, and a file with any error is refused whole (its last good version
//! stays in use: see `reload`), because half a file could silence what its
//! author meant to keep, or page for what they meant to accept.
//!
//! Over 500 lines for its table of every validation problem and its line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Date, Exception};
use crate::audit::VerdictKind;
use crate::manifest::{Problem, Severity, YamlError, check_file_size, parse_yaml};
use crate::reference::{Digest, RegistryPrefix, Tag, check_image_name};

/// Larger files are refused: a baseline of a registry with years of content
/// is a few MB; reading without a bound would let one commit exhaust memory.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// The default of `exceptions.max_ahead`, in days.
pub const DEFAULT_MAX_AHEAD_DAYS: u64 = 180;

/// `exceptions` in the service configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExceptionsConfig {
    /// A local exceptions file, read in addition to `exceptions.yaml` at the
    /// manifest root (for deviations not reviewed in the manifest
    /// repository). It must exist when set.
    pub file: Option<PathBuf>,
    /// How far ahead an entry's `expires` may be: exceptions are reviewed
    /// again at least this often. Whole days; default 180 days.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
}

impl Default for ExceptionsConfig {
    fn default() -> Self {
        Self {
            file: None,
            max_ahead: Duration::from_secs(DEFAULT_MAX_AHEAD_DAYS * 86_400),
        }
    }
}

impl ExceptionsConfig {
    pub fn limits(&self, today: Date) -> Limits {
        Limits {
            today,
            max_ahead_days: (self.max_ahead.as_secs() / 86_400) as i64,
        }
    }
}

/// What validation judges `expires` against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub today: Date,
    /// `expires` may be at most this many days after `today`.
    pub max_ahead_days: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    exceptions: Option<Spanned<Vec<EntryDoc>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    registry: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    digest: Option<Spanned<String>>,
    digests: Option<Spanned<Vec<Spanned<String>>>>,
    tag: Option<Spanned<String>>,
    tags: Option<Spanned<Vec<Spanned<String>>>>,
    verdict: Option<Spanned<String>>,
    verdicts: Option<Spanned<Vec<Spanned<String>>>>,
    reason: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    expires: Option<Spanned<String>>,
}

fn line<T>(s: &Spanned<T>) -> u32 {
    s.referenced.line() as u32
}

/// Reads `path` and parses it; a missing file is `Ok(None)`. With
/// `regular_only` (the file inside a manifest tree, which anyone with merge
/// rights writes) a symlink is refused, so the file cannot point the
/// service at a file outside the tree.
pub fn read(
    path: &Path,
    regular_only: bool,
    limits: Limits,
) -> Result<Option<Vec<Exception>>, Vec<Problem>> {
    match read_text(path, regular_only)? {
        None => Ok(None),
        Some(text) => parse(&path.into(), &text, limits).map(Some),
    }
}

/// The text of `path` within [`MAX_FILE_BYTES`]; a missing file is `Ok(None)`.
pub fn read_text(path: &Path, regular_only: bool) -> Result<Option<String>, Vec<Problem>> {
    let problem = |message: String| {
        vec![Problem {
            severity: Severity::Error,
            file: path.into(),
            line: None,
            project: None,
            message,
        }]
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(problem(format!("cannot read: {e}"))),
    };
    if regular_only && !meta.is_file() {
        return Err(problem(
            "must be a regular file (not a symlink or directory)".into(),
        ));
    }
    check_file_size(path, MAX_FILE_BYTES)
        .and_then(|()| std::fs::read_to_string(path))
        .map(Some)
        .map_err(|e| problem(format!("cannot read: {e}")))
}

/// Parses and validates one file's text: every entry, or every problem.
pub fn parse(file: &Arc<Path>, text: &str, limits: Limits) -> Result<Vec<Exception>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut error = |line: Option<u32>, message: String| {
        problems.push(Problem {
            severity: Severity::Error,
            file: file.clone(),
            line: line.filter(|&l| l > 0),
            project: None,
            message,
        });
    };
    let doc = match parse_yaml::<FileDoc>(text) {
        Ok(doc) => doc,
        Err(YamlError { line, message }) => {
            error(line, message);
            return Err(problems);
        }
    };
    let Some(entries) = doc.and_then(|d| d.exceptions) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(entries.value.len());
    for entry in entries.value {
        if let Some(e) = entry_of(file, entry, limits, &mut error) {
            out.push(e);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// One entry, or `None` after reporting what is wrong with it.
fn entry_of(
    file: &Arc<Path>,
    doc: EntryDoc,
    limits: Limits,
    error: &mut impl FnMut(Option<u32>, String),
) -> Option<Exception> {
    // The entry's line: its first key, whichever it is.
    let at = [
        doc.registry.as_ref().map(line),
        doc.image.as_ref().map(line),
        doc.digest.as_ref().map(line),
        doc.digests.as_ref().map(line),
        doc.tag.as_ref().map(line),
        doc.tags.as_ref().map(line),
        doc.verdict.as_ref().map(line),
        doc.verdicts.as_ref().map(line),
        doc.reason.as_ref().map(line),
        doc.owner.as_ref().map(line),
        doc.expires.as_ref().map(line),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(0);
    let failures = std::cell::Cell::new(0usize);
    let mut fail = |line: Option<u32>, message: String| {
        failures.set(failures.get() + 1);
        error(line.or(Some(at)), message);
    };

    let registry = doc
        .registry
        .and_then(|r| match r.value.parse::<RegistryPrefix>() {
            Ok(p) => Some(p),
            Err(e) => {
                fail(Some(line(&r)), format!("`registry`: {e}"));
                None
            }
        });
    let image = doc.image.and_then(|i| match check_image_name(&i.value) {
        Ok(()) => Some(i.value),
        Err(e) => {
            fail(Some(line(&i)), format!("`image`: {e}"));
            None
        }
    });
    let digests: Vec<Digest> = parse_each(
        "digests",
        one_or_many("digest", doc.digest, doc.digests, &mut fail),
        &mut fail,
    );
    let tags: Vec<Tag> = parse_each(
        "tags",
        one_or_many("tag", doc.tag, doc.tags, &mut fail),
        &mut fail,
    );
    let verdicts: Vec<VerdictKind> = one_or_many("verdict", doc.verdict, doc.verdicts, &mut fail)
        .into_iter()
        .filter_map(|(at, text)| match text.parse::<VerdictKind>() {
            Ok(v) if v.alerts() && v != VerdictKind::ExceptionExpired => Some(v),
            Ok(v) => {
                fail(
                    Some(at),
                    format!(
                        "`verdicts`: {} cannot be excepted (it {})",
                        v.as_str(),
                        if v.alerts() {
                            "is how expired exceptions are reported"
                        } else {
                            "never alerts"
                        }
                    ),
                );
                None
            }
            Err(e) => {
                fail(
                    Some(at),
                    format!(
                        "`verdicts`: {e}; one of {}",
                        VerdictKind::ALL
                            .into_iter()
                            .filter(|v| v.alerts() && *v != VerdictKind::ExceptionExpired)
                            .map(VerdictKind::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        })
        .collect();

    let mut required = |field: &str, value: Option<Spanned<String>>| -> Option<String> {
        match value {
            None => {
                fail(None, format!("`{field}` is required"));
                None
            }
            Some(v) if v.value.trim().is_empty() => {
                fail(Some(line(&v)), format!("`{field}` is empty"));
                None
            }
            Some(v) => Some(v.value),
        }
    };
    let reason = required("reason", doc.reason);
    let owner = required("owner", doc.owner);
    let expires_at = doc.expires.as_ref().map(line);
    let expires = required("expires", doc.expires).and_then(|text| match text.parse::<Date>() {
        Ok(date) => Some(date),
        Err(e) => {
            fail(expires_at, format!("`expires`: {e}"));
            None
        }
    });
    if let Some(date) = expires {
        let ahead = date.days_after(limits.today);
        if ahead > limits.max_ahead_days {
            fail(
                expires_at,
                format!(
                    "`expires` {date} is {ahead} days ahead; at most {} days are allowed \
                     (exceptions.max_ahead): exceptions are reviewed at least that often",
                    limits.max_ahead_days
                ),
            );
        }
    }
    // Only fields that parsed were kept above: a bad `registry` must not
    // leave an entry that matches more than written.
    if registry.is_none()
        && image.is_none()
        && digests.is_empty()
        && tags.is_empty()
        && failures.get() == 0
    {
        fail(
            None,
            "names nothing to match: set at least one of `registry`, `image`, `digests`, `tags` \
             (verdicts alone would silence them everywhere)"
                .into(),
        );
    }
    if failures.get() > 0 {
        return None;
    }
    Some(Exception {
        file: file.clone(),
        line: at,
        registry,
        image,
        digests,
        tags,
        verdicts,
        reason: reason?,
        owner: owner?,
        expires: expires?,
    })
}

/// `field: x` or `fields: [x, y]`, not both; each value with its line.
/// Each `(line, text)` of the list `field` parsed; a value that does not
/// parse is reported at its line and left out.
fn parse_each<T: FromStr>(
    field: &str,
    items: Vec<(u32, String)>,
    fail: &mut impl FnMut(Option<u32>, String),
) -> Vec<T>
where
    T::Err: fmt::Display,
{
    items
        .into_iter()
        .filter_map(|(at, text)| match text.parse::<T>() {
            Ok(value) => Some(value),
            Err(e) => {
                fail(Some(at), format!("`{field}`: {e}"));
                None
            }
        })
        .collect()
}

fn one_or_many(
    field: &str,
    one: Option<Spanned<String>>,
    many: Option<Spanned<Vec<Spanned<String>>>>,
    fail: &mut impl FnMut(Option<u32>, String),
) -> Vec<(u32, String)> {
    match (one, many) {
        (Some(one), Some(many)) => {
            fail(
                Some(line(&many).max(line(&one))),
                format!("set `{field}` or `{field}s`, not both"),
            );
            Vec::new()
        }
        (Some(one), None) => vec![(line(&one), one.value)],
        (None, Some(many)) => {
            if many.value.is_empty() {
                fail(
                    Some(line(&many)),
                    format!("`{field}s` is empty (leave it out to match any {field})"),
                );
            }
            many.value
                .into_iter()
                .map(|v| (line(&v), v.value))
                .collect()
        }
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn limits() -> Limits {
        Limits {
            today: "2025-01-01".parse().unwrap(),
            max_ahead_days: 180,
        }
    }

    fn problems(text: &str) -> Vec<String> {
        let file: Arc<Path> = Path::new("ex.yaml").into();
        match parse(&file, text, limits()) {
            Ok(entries) => panic!("accepted {entries:?}"),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_file_loads_every_field_with_its_line() {
        let text = format!(
            "# accepted deviations\n\
             exceptions:\n\
             - registry: r.example/prod\n\
             \x20 image: team/app\n\
             \x20 digests: [\"{D1}\"]\n\
             \x20 tags: [\"1.10\", v2]\n\
             \x20 verdicts: [unpromoted, tag_moved]\n\
             \x20 reason: hotfix reviewed in INC-42\n\
             \x20 owner: team-a@example.com\n\
             \x20 expires: 2025-06-30\n\
             - image: legacy\n\
             \x20 digest: \"{D1}\"\n\
             \x20 tag: v1\n\
             \x20 verdict: unlisted_tag\n\
             \x20 reason: legacy\n\
             \x20 owner: team-b\n\
             \x20 expires: 2025-01-01\n"
        );
        let file: Arc<Path> = Path::new("ex.yaml").into();
        let entries = parse(&file, &text, limits()).unwrap();
        assert_eq!(entries.len(), 2);
        let e = &entries[0];
        assert_eq!(e.location(), "ex.yaml:3");
        assert_eq!(e.registry.as_ref().unwrap().as_str(), "r.example/prod");
        assert_eq!(e.image.as_deref(), Some("team/app"));
        assert_eq!(e.digests[0].to_string(), D1);
        let tags: Vec<&str> = e.tags.iter().map(Tag::as_str).collect();
        assert_eq!(tags, ["1.10", "v2"], "strings stay strings");
        assert_eq!(e.verdicts, [VerdictKind::Unpromoted, VerdictKind::TagMoved]);
        assert_eq!(e.expires.to_string(), "2025-06-30");
        assert_eq!(entries[1].location(), "ex.yaml:11");
        assert_eq!(entries[1].verdicts, [VerdictKind::UnlistedTag]);
        assert_eq!(entries[1].tags.len(), 1);
        // Empty files and an empty list are no exceptions.
        for empty in ["", "# nothing\n", "exceptions: []\n", "exceptions:\n"] {
            assert_eq!(parse(&file, empty, limits()).unwrap(), vec![], "{empty:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_file_and_line() {
        let entry = |extra: &str| {
            format!(
                "exceptions:\n- image: app\n  reason: r\n  owner: o\n  expires: 2025-03-01\n{extra}"
            )
        };
        let cases: Vec<(String, Vec<&str>)> = vec![
            (entry("  colour: red\n"), vec!["ex.yaml:6: error: unknown field `colour`"]),
            (entry("  image: other\n"), vec!["ex.yaml:6: error: duplicate mapping key"]),
            ("exception: []\n".into(), vec!["ex.yaml:1: error: unknown field `exception`"]),
            (
                "exceptions:\n- image: app\n  owner: o\n".into(),
                vec![
                    "ex.yaml:2: error: `reason` is required",
                    "ex.yaml:2: error: `expires` is required",
                ],
            ),
            (
                "exceptions:\n- image: app\n  reason: \" \"\n  owner: o\n  expires: 2025-02-01\n"
                    .into(),
                vec!["ex.yaml:3: error: `reason` is empty"],
            ),
            (
                "exceptions:\n- image: app\n  reason: r\n  owner: o\n  expires: 2025-02-30\n"
                    .into(),
                vec!["ex.yaml:5: error: `expires`: \"2025-02-30\" is not a date: no such day"],
            ),
            (
                "exceptions:\n- image: app\n  reason: r\n  owner: o\n  expires: 2026-01-01\n"
                    .into(),
                vec![
                    "ex.yaml:5: error: `expires` 2026-01-01 is 365 days ahead; at most 180 days",
                ],
            ),
            (
                "exceptions:\n- verdicts: [unpromoted]\n  reason: r\n  owner: o\n  expires: 2025-02-01\n"
                    .into(),
                vec!["ex.yaml:2: error: names nothing to match"],
            ),
            (
                entry("  digests:\n  - sha256:abc\n  - \"sha256:zz\"\n"),
                vec!["ex.yaml:7: error: `digests`:", "ex.yaml:8: error: `digests`:"],
            ),
            (entry("  tag: \"-bad\"\n"), vec!["ex.yaml:6: error: `tags`:"]),
            (entry("  digest: x\n  digests: []\n"), vec!["ex.yaml:7: error: set `digest` or `digests`, not both"]),
            (entry("  tags: []\n"), vec!["ex.yaml:6: error: `tags` is empty"]),
            (
                entry("  verdicts: [promoted, exception_expired, nonsense]\n"),
                vec![
                    "ex.yaml:6: error: `verdicts`: promoted cannot be excepted (it never alerts)",
                    "ex.yaml:6: error: `verdicts`: exception_expired cannot be excepted",
                    "ex.yaml:6: error: `verdicts`: unknown verdict \"nonsense\"; one of malformed,",
                ],
            ),
            (entry("  registry: not a prefix\n"), vec!["ex.yaml:6: error: `registry`:"]),
            (
                "exceptions:\n- registry: r.example/prod\n  image: Bad/Name\n  reason: r\n  \
                 owner: o\n  expires: 2025-02-01\n"
                    .into(),
                vec!["ex.yaml:3: error: `image`:"],
            ),
            // Two bad entries: both reported.
            (
                "exceptions:\n- image: a\n  owner: o\n  expires: 2025-02-01\n\
                 - image: b\n  reason: r\n  expires: 2025-02-01\n"
                    .into(),
                vec![
                    "ex.yaml:2: error: `reason` is required",
                    "ex.yaml:5: error: `owner` is required",
                ],
            ),
        ];
        for (text, want) in &cases {
            let got = problems(text);
            assert_eq!(got.len(), want.len(), "{text}\n{got:#?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.starts_with(w), "{text}\nwant {w}\ngot  {g}");
            }
        }
    }

    #[test]
    fn a_file_in_the_tree_must_be_a_regular_file_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.yaml");
        std::fs::write(&outside, "exceptions: []\n").unwrap();
        let link = dir.path().join("exceptions.yaml");
        assert!(matches!(read(&link, true, limits()), Ok(None)));
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let err = read(&link, true, limits()).unwrap_err();
        assert!(
            err[0].to_string().contains("must be a regular file"),
            "{err:?}"
        );
        // The operator's own file may be a symlink (a mounted secret).
        assert!(matches!(read(&link, false, limits()), Ok(Some(e)) if e.is_empty()));
    }
}
