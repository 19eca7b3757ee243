//! The decision (docs/design.md §6): a pure function from an index and an event to a
//! verdict. No I/O here. When the index cannot decide yet — the event's
//! digest may be the child of a promoted list that has not been read — the
//! verdict is provisional and [`Audit::pending`] says what to resolve before
//! auditing again.
//!
//! Over 500 lines: the verdict table is one function whose rows must be read
//! together, with its evidence types; the tests of each row are here too.

use std::fmt;

use serde::Serialize;

use crate::event::{Action, Event, Malformed};
use crate::index::{Claims, How, ImageId, Index, Placement};
use crate::reference::{Digest, Repository, Tag};
use std::path::Path;
use std::sync::Arc;

/// Policy knobs of the decision.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Row 6 of the verdict table: a digest promoted by the same manifest
    /// under another of its image names (per-arch `-amd64` names) is
    /// `promoted` by default; strict mode calls it `wrong_repository`.
    pub strict_repository: bool,
    /// Deleting content that was never promoted raises no alert.
    pub allow_unpromoted_deletes: bool,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Malformed,
    OutOfScope,
    Deleted,
    DeletedUnpromoted,
    Promoted,
    PromotedChild,
    WrongRepository,
    TagMoved,
    UnlistedTag,
    PromotedAttachment,
    UnpromotedAttachment,
    Unpromoted,
    Undecided,
    Unverifiable,
    /// The inventory sweep did not find promised content (a tag or a digest)
    /// at a destination repository.
    Missing,
    /// An entry of an exceptions file has expired: it no longer excepts
    /// anything and must be renewed or removed. Reported once per entry
    /// (source `manifests`), never about an event.
    ExceptionExpired,
}

impl VerdictKind {
    pub const ALL: [VerdictKind; 16] = [
        VerdictKind::Malformed,
        VerdictKind::OutOfScope,
        VerdictKind::Deleted,
        VerdictKind::DeletedUnpromoted,
        VerdictKind::Promoted,
        VerdictKind::PromotedChild,
        VerdictKind::WrongRepository,
        VerdictKind::TagMoved,
        VerdictKind::UnlistedTag,
        VerdictKind::PromotedAttachment,
        VerdictKind::UnpromotedAttachment,
        VerdictKind::Unpromoted,
        VerdictKind::Undecided,
        VerdictKind::Unverifiable,
        VerdictKind::Missing,
        VerdictKind::ExceptionExpired,
    ];

    /// Whether a manifest merged after the index was built could overturn
    /// this verdict: what is refreshed before it becomes a finding.
    pub fn may_be_a_late_promotion(self) -> bool {
        use VerdictKind::*;
        matches!(
            self,
            Unpromoted | TagMoved | UnlistedTag | WrongRepository | UnpromotedAttachment
        )
    }

    /// Whether this verdict needs a human (becomes a finding and an alert).
    pub fn alerts(self) -> bool {
        use VerdictKind::*;
        match self {
            Malformed | Deleted | WrongRepository | TagMoved | UnlistedTag
            | UnpromotedAttachment | Unpromoted | Unverifiable | Missing | ExceptionExpired => true,
            OutOfScope | DeletedUnpromoted | Promoted | PromotedChild | PromotedAttachment
            | Undecided => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        use VerdictKind::*;
        match self {
            Malformed => "malformed",
            OutOfScope => "out_of_scope",
            Deleted => "deleted",
            DeletedUnpromoted => "deleted_unpromoted",
            Promoted => "promoted",
            PromotedChild => "promoted_child",
            WrongRepository => "wrong_repository",
            TagMoved => "tag_moved",
            UnlistedTag => "unlisted_tag",
            PromotedAttachment => "promoted_attachment",
            UnpromotedAttachment => "unpromoted_attachment",
            Unpromoted => "unpromoted",
            Undecided => "undecided",
            Unverifiable => "unverifiable",
            Missing => "missing",
            ExceptionExpired => "exception_expired",
        }
    }
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict name that is not one of [`VerdictKind::as_str`]'s (an
/// excerpt of it: the name may come from a query string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verdict {0:?}")]
pub struct UnknownVerdict(pub String);

/// The inverse of [`VerdictKind::as_str`]: how stored rows and query
/// parameters name a verdict.
impl std::str::FromStr for VerdictKind {
    type Err = UnknownVerdict;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VerdictKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVerdict(crate::event::excerpt(s)))
    }
}

/// Where a promotion is written down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub project: Arc<str>,
    /// The `images.yaml` (or plain manifest) holding the `dmap` entry.
    #[serde(serialize_with = "serialize_path")]
    pub file: Arc<Path>,
    pub line: u32,
    /// The image name the digest is promoted as.
    pub image: Arc<str>,
    /// The digest of the `dmap` entry: the parent when `parent` is set.
    pub digest: Digest,
    pub tags: Vec<Arc<str>>,
    /// Set when the event's digest is a child of this promoted list.
    pub parent: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// One sentence for people.
    pub reason: String,
    pub evidence: Vec<Evidence>,
    /// What the pushed manifest lists, when the resolver read it and it is
    /// an index or manifest list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_list: Option<PushedList>,
}

/// The entries of a pushed OCI image index or Docker manifest list, as the
/// resolver read them. Not evidence about a promotion but about the push:
/// the platform images of an unpromoted index are usually pushed just
/// before it, each a finding of its own, and this is what lets the alert
/// dispatcher tell them apart from unrelated pushes (docs/design.md §8.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PushedList {
    /// The manifests the list names directly, in its order.
    pub children: Vec<ListedChild>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ListedChild {
    pub digest: Digest,
    /// `os/architecture[/variant]`, when the list says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One entry of the evidence recorded with a decision (a finding's
/// `evidence` JSON array): a manifest entry, or — once, last — what the
/// pushed list names, as `{"pushed_list": {"children": [...]}}`. Carrying
/// the list inside the evidence keeps the stored row's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EvidenceEntry {
    Promotion(Evidence),
    PushedList { pushed_list: PushedList },
}

impl EvidenceEntry {
    /// The entries recorded for `verdict`: its manifest entries, then its
    /// pushed list.
    pub fn of(verdict: &Verdict) -> Vec<EvidenceEntry> {
        let promotions = verdict.evidence.iter().cloned().map(Self::Promotion);
        let list = verdict
            .pushed_list
            .iter()
            .cloned()
            .map(|pushed_list| Self::PushedList { pushed_list });
        promotions.chain(list).collect()
    }
}

impl From<Evidence> for EvidenceEntry {
    fn from(e: Evidence) -> Self {
        Self::Promotion(e)
    }
}

impl Verdict {
    /// Cannot be decided now; asking again later may succeed.
    pub fn undecided(reason: String) -> Verdict {
        Verdict {
            kind: VerdictKind::Undecided,
            reason,
            evidence: Vec::new(),
            pushed_list: None,
        }
    }

    pub fn malformed(m: &Malformed) -> Verdict {
        Verdict {
            kind: VerdictKind::Malformed,
            reason: m.reason.clone(),
            evidence: Vec::new(),
            pushed_list: None,
        }
    }
}

fn serialize_path<S: serde::Serializer>(path: &Arc<Path>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.display())
}

/// What must be read from registries before a provisional verdict is final.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Pending {
    /// Images at the event's repository with promoted digests not read yet:
    /// any of those may be a list that has the event's digest as a child.
    /// Expand with [`Index::parents_to_resolve`] on the same index.
    pub parents: Vec<ImageId>,
    /// Read the event's own manifest: an OCI `subject` makes it an attachment.
    pub event_manifest: bool,
    /// The event names only a tag; which digest it points to must be read.
    pub tag_target: bool,
}

impl Pending {
    /// What is still unread, in words, for a verdict shown before it is
    /// final (the CLI without registry access).
    pub fn describe(&self, index: &Index) -> String {
        let mut missing = Vec::new();
        if self.tag_target {
            missing.push("the digest the tag points to has not been read".to_owned());
        }
        let unread: usize = self
            .parents
            .iter()
            .map(|&image| index.parents_to_resolve(image).digests.len())
            .sum();
        if unread > 0 {
            missing.push(format!(
                "{unread} promoted digests at this repository have not been read as possible \
                 manifest lists"
            ));
        }
        if self.event_manifest {
            missing.push(
                "the pushed manifest has not been read (an OCI subject would make it an \
                 attachment)"
                    .to_owned(),
            );
        }
        missing.join("; ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub verdict: Verdict,
    /// `Some` when the verdict is provisional.
    pub pending: Option<Pending>,
}

/// Decides `event` against `index`.
pub fn audit(index: &Index, event: &Event, policy: &Policy) -> Audit {
    let claims = index.claims(&event.repository);
    let ctx = Ctx {
        index,
        event,
        claims,
        policy,
    };
    if !ctx.claims.in_scope() && ctx.claims.excluded.is_empty() {
        return ctx.done(
            VerdictKind::OutOfScope,
            format!("no manifest promotes to {} or a prefix of it", ctx.repo()),
            &[],
        );
    }
    let result = match event.action {
        Action::Delete => ctx.delete(),
        Action::Absent => ctx.absent(),
        Action::Insert => match &event.digest {
            Some(digest) => ctx.insert(digest),
            None => ctx.insert_tag_only(),
        },
    };
    ctx.blame_excluded(result)
}

/// Decides `event` as an attachment of `subject`: what the resolver calls
/// once the pushed manifest turns out to carry an OCI `subject`.
pub fn audit_attachment(index: &Index, event: &Event, subject: &Digest, policy: &Policy) -> Audit {
    let ctx = Ctx {
        index,
        event,
        claims: index.claims(&event.repository),
        policy,
    };
    let result = ctx.attachment(subject);
    ctx.blame_excluded(result)
}

/// How a digest relates to the event's repository.
enum Found {
    /// Promoted at exactly this repository (directly or as a child).
    Here(Vec<Placement>),
    /// Promoted by a manifest that claims this repository, under another of
    /// its image names (verdict row 6).
    OtherName(Vec<Placement>),
    /// Promoted, but only at other repositories.
    Elsewhere(Vec<Placement>),
    Nowhere,
}

struct Ctx<'a> {
    index: &'a Index,
    event: &'a Event,
    claims: Claims,
    policy: &'a Policy,
}

impl Ctx<'_> {
    fn verdict(&self, kind: VerdictKind, reason: String, placements: &[Placement]) -> Verdict {
        Verdict {
            kind,
            reason,
            evidence: placements.iter().map(|p| self.evidence(p)).collect(),
            pushed_list: None,
        }
    }

    fn done(&self, kind: VerdictKind, reason: String, placements: &[Placement]) -> Audit {
        Audit {
            verdict: self.verdict(kind, reason, placements),
            pending: None,
        }
    }

    fn evidence(&self, p: &Placement) -> Evidence {
        let index = self.index;
        let image = index.promotion_image(p.promotion);
        let manifest = index.manifest(index.image_manifest(image));
        Evidence {
            project: manifest.project.clone(),
            file: manifest.images_file.clone(),
            line: index.promotion_line(p.promotion),
            image: index.image_name(image).clone(),
            digest: index.promotion_digest(p.promotion).clone(),
            tags: index.promotion_tags(p.promotion).cloned().collect(),
            parent: match &p.how {
                How::Direct => None,
                How::Child { parent } => Some(parent.clone()),
            },
        }
    }

    fn repo(&self) -> &Repository {
        &self.event.repository
    }

    /// A project that claims this repository failed validation, so its
    /// promotions are unknown: a push that nothing else explains cannot be
    /// called a violation until that project loads again.
    fn blame_excluded(&self, result: Audit) -> Audit {
        let Some(&x) = self.claims.excluded.first() else {
            return result;
        };
        // A missing promotion of a loaded project is missing whatever another
        // project's validation says.
        if matches!(self.event.action, Action::Delete | Action::Absent)
            || !result.verdict.kind.alerts()
        {
            return result;
        }
        let excluded = self.index.excluded(x);
        Audit {
            verdict: Verdict {
                kind: VerdictKind::Undecided,
                reason: format!(
                    "{} is a destination of project {}, whose manifests failed validation ({})",
                    self.repo(),
                    excluded.project,
                    excluded.manifest_file.display()
                ),
                evidence: result.verdict.evidence,
                pushed_list: result.verdict.pushed_list,
            },
            pending: None,
        }
    }

    fn find(&self, digest: &Digest) -> Found {
        let placements = self.index.placements(digest);
        if placements.is_empty() {
            return Found::Nowhere;
        }
        let here: Vec<Placement> = placements
            .iter()
            .filter(|p| {
                self.claims
                    .images
                    .contains(&self.index.promotion_image(p.promotion))
            })
            .cloned()
            .collect();
        if !here.is_empty() {
            return Found::Here(here);
        }
        // Only manifests that list this repository's image name may explain
        // it under another name; a root-level destination must not explain a
        // digest pushed under a path that is none of its image names.
        let other_name: Vec<Placement> = placements
            .iter()
            .filter(|p| {
                let manifest = self
                    .index
                    .image_manifest(self.index.promotion_image(p.promotion));
                self.claims
                    .images
                    .iter()
                    .any(|&i| self.index.image_manifest(i) == manifest)
            })
            .cloned()
            .collect();
        if !other_name.is_empty() {
            return Found::OtherName(other_name);
        }
        Found::Elsewhere(placements)
    }

    fn insert(&self, digest: &Digest) -> Audit {
        match self.find(digest) {
            Found::Here(placements) => self.promoted_here(digest, &placements),
            Found::OtherName(placements) => {
                let name = self
                    .index
                    .image_name(self.index.promotion_image(placements[0].promotion));
                // Row 6 explains why the digest is here, never a tag: whoever
                // pulls R:T gets what R promised for T, so T is judged against
                // R's promises alone (the other name's tags are not R's).
                if let Some(tag) = &self.event.tag {
                    return self.tag_mismatch(digest, tag, &placements, Some(name));
                }
                if self.policy.strict_repository {
                    return self.done(
                        VerdictKind::WrongRepository,
                        format!(
                            "{digest} is promoted by the same manifest as {name}, not as {} \
                             (strict repository mode)",
                            self.repo()
                        ),
                        &placements,
                    );
                }
                self.promoted(&placements, Some(name))
            }
            Found::Elsewhere(placements) => {
                let repo = self.repo();
                let mut reason = format!("{digest} is promoted, but not to {repo}");
                if let Some((tag, promised)) = self.tag_promise() {
                    reason.push_str(&format!(
                        "; promised tag {tag} of {repo} now points at it, and {tag} is promised \
                         to {}",
                        self.promised_to(&promised)
                    ));
                }
                self.provisional(
                    self.verdict(VerdictKind::WrongRepository, reason, &placements),
                    false,
                )
            }
            Found::Nowhere => match self.event.tag.as_ref().and_then(Tag::attachment_subject) {
                Some(subject) => self.attachment(&subject),
                None => self.provisional(self.unpromoted(digest), true),
            },
        }
    }

    /// A digest no manifest promotes. Under a tag R promises, what people
    /// pull as R:T has changed, so the verdict names the promise it broke.
    fn unpromoted(&self, digest: &Digest) -> Verdict {
        let repo = self.repo();
        let Some((tag, promised)) = self.tag_promise() else {
            return self.verdict(
                VerdictKind::Unpromoted,
                format!("{digest} is not promoted to {repo} by any manifest"),
                &[],
            );
        };
        self.verdict(
            VerdictKind::Unpromoted,
            format!(
                "promised tag {tag} of {repo} now points at unpromoted content: {digest} is \
                 promoted by no manifest, and {tag} is promised to {}",
                self.promised_to(&promised)
            ),
            &[promised],
        )
    }

    /// The event's tag and its promise at R, when R promises it.
    fn tag_promise(&self) -> Option<(&Tag, Placement)> {
        let tag = self.event.tag.as_ref()?;
        Some((tag, self.promise(tag)?))
    }

    /// "<digest> (<file>:<line>)": what a promise is and where it is written.
    fn promised_to(&self, promised: &Placement) -> String {
        let e = self.evidence(promised);
        format!("{} ({}:{})", e.digest, e.file.display(), e.line)
    }

    /// The promotion that lists `tag` at the event's repository, if any.
    fn promise(&self, tag: &Tag) -> Option<Placement> {
        let promotion = self
            .claims
            .images
            .iter()
            .find_map(|&image| self.index.tag_owner(image, tag))?;
        Some(Placement {
            promotion,
            how: How::Direct,
        })
    }

    /// The digest is promoted at exactly this repository; the tag, if any,
    /// must be listed for it there.
    fn promoted_here(&self, digest: &Digest, placements: &[Placement]) -> Audit {
        let Some(tag) = &self.event.tag else {
            return self.promoted(placements, None);
        };
        let listed = placements
            .iter()
            .any(|p| p.how == How::Direct && self.index.promotion_has_tag(p.promotion, tag));
        if listed {
            self.promoted(placements, None)
        } else {
            self.tag_mismatch(digest, tag, placements, None)
        }
    }

    /// `promoted` (or `promoted_child` when only lists hold the digest), the
    /// tag already judged; `as_name` is the other image name of row 6.
    fn promoted(&self, placements: &[Placement], as_name: Option<&str>) -> Audit {
        let direct: Vec<Placement> = placements
            .iter()
            .filter(|p| p.how == How::Direct)
            .cloned()
            .collect();
        let as_name = as_name.map_or(String::new(), |n| format!(" as {n}"));
        if !direct.is_empty() {
            let e = self.evidence(&direct[0]);
            return self.done(
                VerdictKind::Promoted,
                format!(
                    "promoted by {}{as_name} ({}:{})",
                    e.project,
                    e.file.display(),
                    e.line
                ),
                &direct,
            );
        }
        let e = self.evidence(&placements[0]);
        self.done(
            VerdictKind::PromotedChild,
            format!(
                "child of {} promoted by {}{as_name} ({}:{})",
                e.digest,
                e.project,
                e.file.display(),
                e.line
            ),
            placements,
        )
    }

    /// The digest is explained (here, or under `as_name` by row 6), but the
    /// repository does not list this tag for it.
    fn tag_mismatch(
        &self,
        digest: &Digest,
        tag: &Tag,
        placements: &[Placement],
        as_name: Option<&str>,
    ) -> Audit {
        let repo = self.repo();
        let explained = match as_name {
            None => format!("{digest} is promoted to {repo}"),
            Some(name) => format!("{digest} is promoted by the same manifest as {name}"),
        };
        let Some(promised) = self.promise(tag) else {
            return self.done(
                VerdictKind::UnlistedTag,
                format!("{explained}, but tag {tag} is listed for no digest at {repo}"),
                placements,
            );
        };
        self.done(
            VerdictKind::TagMoved,
            format!(
                "tag {tag} of {repo} is promised to {}, not {digest}",
                self.promised_to(&promised)
            ),
            &[promised],
        )
    }

    fn insert_tag_only(&self) -> Audit {
        let Some(tag) = &self.event.tag else {
            // Sources never build such an event; decide safely if one does.
            return self.done(
                VerdictKind::Undecided,
                "the event names neither a digest nor a tag".into(),
                &[],
            );
        };
        if let Some(subject) = tag.attachment_subject() {
            return self.attachment(&subject);
        }
        let Some(promised) = self.promise(tag) else {
            return self.done(
                VerdictKind::UnlistedTag,
                format!("tag {tag} is listed for no digest at {}", self.repo()),
                &[],
            );
        };
        Audit {
            verdict: self.verdict(
                VerdictKind::Undecided,
                format!(
                    "tag {tag} of {} is promised to {}, but the event does not say which \
                     digest the tag points to now, and that digest has not been read",
                    self.repo(),
                    self.promised_to(&promised)
                ),
                &[promised],
            ),
            pending: Some(Pending {
                tag_target: true,
                ..Pending::default()
            }),
        }
    }

    /// An attachment (signature, attestation, SBOM) is fine when its subject
    /// is promoted here.
    fn attachment(&self, subject: &Digest) -> Audit {
        match self.find(subject) {
            Found::Here(placements) => self.done(
                VerdictKind::PromotedAttachment,
                format!(
                    "attachment of {subject}, which is promoted to {}",
                    self.repo()
                ),
                &placements,
            ),
            Found::OtherName(placements) if !self.policy.strict_repository => self.done(
                VerdictKind::PromotedAttachment,
                format!(
                    "attachment of {subject}, which is promoted by the same manifest under \
                     another image name"
                ),
                &placements,
            ),
            _ => self.provisional(
                self.verdict(
                    VerdictKind::UnpromotedAttachment,
                    format!(
                        "attachment of {subject}, which is not promoted to {}",
                        self.repo()
                    ),
                    &[],
                ),
                false,
            ),
        }
    }

    fn delete(&self) -> Audit {
        let event = self.event;
        let found = event.digest.as_ref().map(|d| self.find(d));
        let promoted_here = match &found {
            Some(Found::Here(_) | Found::OtherName(_)) => true,
            Some(_) => false,
            None => event
                .tag
                .as_ref()
                .is_some_and(|tag| self.promise(tag).is_some()),
        };
        let what = match (&event.digest, &event.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => format!("tag {t}"),
            (None, None) => "an unnamed manifest".into(),
        };
        let placements = match found {
            Some(Found::Here(p) | Found::OtherName(p)) => p,
            _ => Vec::new(),
        };
        if promoted_here || !self.policy.allow_unpromoted_deletes {
            return self.done(
                VerdictKind::Deleted,
                format!("{what} was deleted from {}", self.repo()),
                &placements,
            );
        }
        let verdict = self.verdict(
            VerdictKind::DeletedUnpromoted,
            format!(
                "{what} was deleted from {}; it was never promoted there",
                self.repo()
            ),
            &[],
        );
        // An unknown digest may still be the child of an unread list.
        if event.digest.is_some() {
            self.provisional(verdict, false)
        } else {
            Audit {
                verdict,
                pending: None,
            }
        }
    }

    /// The sweep did not find the event's digest (and tag, when set) at the
    /// repository: `missing` when a manifest promises exactly that there.
    /// Only direct promotions count: a child is present whenever its parent
    /// is, and the sweep reports the parent.
    fn absent(&self) -> Audit {
        let event = self.event;
        let promised: Vec<Placement> = match (&event.digest, &event.tag) {
            (Some(digest), tag) => match self.find(digest) {
                Found::Here(placements) => placements
                    .into_iter()
                    .filter(|p| p.how == How::Direct)
                    .filter(|p| {
                        tag.as_ref()
                            .is_none_or(|t| self.index.promotion_has_tag(p.promotion, t))
                    })
                    .collect(),
                _ => Vec::new(),
            },
            (None, Some(tag)) => self
                .claims
                .images
                .iter()
                .filter_map(|&image| self.index.tag_owner(image, tag))
                .map(|promotion| Placement {
                    promotion,
                    how: How::Direct,
                })
                .collect(),
            (None, None) => Vec::new(),
        };
        let what = match (&event.digest, &event.tag) {
            (Some(d), Some(t)) => format!("tag {t} ({d})"),
            (Some(d), None) => d.to_string(),
            (None, Some(t)) => format!("tag {t}"),
            (None, None) => "an unnamed manifest".into(),
        };
        if promised.is_empty() {
            return self.done(
                VerdictKind::OutOfScope,
                format!(
                    "{what} is not at {}, but no manifest promises it there",
                    self.repo()
                ),
                &[],
            );
        }
        self.done(
            VerdictKind::Missing,
            format!(
                "{what} is promised to {} but the scan did not find it there",
                self.repo()
            ),
            &promised,
        )
    }

    /// A negative verdict that reading the promoted lists at this repository
    /// (or the event's own manifest) could still overturn.
    fn provisional(&self, verdict: Verdict, event_manifest: bool) -> Audit {
        let parents = self.unresolved_parents();
        let pending = (!parents.is_empty() || event_manifest).then_some(Pending {
            parents,
            event_manifest,
            tag_target: false,
        });
        Audit { verdict, pending }
    }

    fn unresolved_parents(&self) -> Vec<ImageId> {
        self.claims
            .images
            .iter()
            .copied()
            .filter(|&image| !self.index.image_resolved(image))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_parse_back_and_unknown_names_are_refused() {
        for kind in VerdictKind::ALL {
            assert_eq!(kind.as_str().parse::<VerdictKind>(), Ok(kind));
        }
        let err = "Promoted".parse::<VerdictKind>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown verdict "Promoted""#);
        // A query string can carry any length; the error quotes a bounded part.
        let long = "x".repeat(10_000);
        let err = long.parse::<VerdictKind>().unwrap_err();
        assert!(
            err.0.len() < 300 && err.0.ends_with("[9800 more bytes]"),
            "{err}"
        );
    }
}
