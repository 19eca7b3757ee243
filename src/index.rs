//! The digest index: everything the auditor knows about promotions, built
//! once per manifest set and never mutated (docs/design.md §5).
//!
//! Readers share one `Arc<Index>` (behind arc-swap in the service) and never
//! lock. The promotions part and the resolved-children part live in separate
//! `Arc`s, so the resolver can publish new children without copying the
//! promotions.
//!
//! Over 500 lines on purpose: `build` and the read accessors share the
//! private layout (`Core`, interned symbols, promotion ranges per image), and
//! keeping them in one file keeps that layout private to the one place that
//! relies on it. `Children` is the part that could move out if it grows.

// foldhash: several times faster than SipHash on these short keys and still
// seeded per process, so hostile event paths cannot aim at one bucket.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::path::Path;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::manifest::{Excluded, ManifestSet};
use crate::reference::{Digest, RegistryPrefix, Repository, Tag};

/// What the resolver must read to learn whether one image's promoted digests
/// are manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParentsToResolve {
    pub project: Arc<str>,
    pub image: Arc<str>,
    /// Where to read from: the source registry first, then the destinations.
    pub repositories: Vec<Repository>,
    /// Promoted digests not read yet.
    pub digests: Vec<Digest>,
}

/// An interned string: registry prefixes, image names and tags repeat across
/// thousands of digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sym(u32);

#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.ids.get(s) {
            return sym;
        }
        let sym = Sym(self.strings.len() as u32);
        let s: Arc<str> = s.into();
        self.strings.push(s.clone());
        self.ids.insert(s, sym);
        sym
    }

    fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    fn resolve(&self, sym: Sym) -> &Arc<str> {
        &self.strings[sym.0 as usize]
    }
}

pub type ManifestId = u32;
pub type ImageId = u32;
pub type PromotionId = u32;

#[derive(Debug)]
pub struct ManifestInfo {
    pub project: Arc<str>,
    pub manifest_file: Arc<Path>,
    pub images_file: Arc<Path>,
    pub source: RegistryPrefix,
    pub destinations: Vec<RegistryPrefix>,
}

#[derive(Debug)]
struct ImageInfo {
    manifest: ManifestId,
    name: Sym,
    promotions: std::ops::Range<PromotionId>,
}

#[derive(Debug)]
struct PromotionRec {
    digest: Digest,
    image: ImageId,
    line: u32,
    tags: Box<[Sym]>,
}

/// Who owns a destination prefix.
#[derive(Debug, Default)]
struct PrefixOwners {
    live: SmallVec<[ManifestId; 1]>,
    /// Indexes into `Core::excluded`.
    excluded: SmallVec<[u32; 1]>,
}

/// The promotions of one manifest set.
#[derive(Debug)]
struct Core {
    strings: Interner,
    manifests: Vec<ManifestInfo>,
    excluded: Vec<Excluded>,
    images: Vec<ImageInfo>,
    image_by_name: HashMap<(ManifestId, Sym), ImageId>,
    promotions: Vec<PromotionRec>,
    by_digest: HashMap<Digest, SmallVec<[PromotionId; 1]>>,
    tag_owner: HashMap<(ImageId, Sym), PromotionId>,
    prefixes: HashMap<Sym, PrefixOwners>,
    commit: Option<String>,
}

/// What the resolver has learnt: which promoted digests are lists, and their
/// children. Digests are immutable, so this only ever grows.
#[derive(Debug, Default, Clone)]
pub struct Children {
    parents: HashMap<Digest, SmallVec<[Digest; 1]>>,
    /// Promoted digests whose manifest has been read (list or not).
    resolved: HashSet<Digest>,
}

impl Children {
    /// Records that `parent` was read, and lists `children` (empty for an
    /// image manifest). Nested lists are recorded by calling this per level.
    pub fn record(&mut self, parent: &Digest, children: impl IntoIterator<Item = Digest>) {
        self.resolved.insert(parent.clone());
        for child in children {
            let parents = self.parents.entry(child).or_default();
            if !parents.contains(parent) {
                parents.push(parent.clone());
            }
        }
    }

    pub fn is_resolved(&self, digest: &Digest) -> bool {
        self.resolved.contains(digest)
    }

    pub fn parents_of(&self, digest: &Digest) -> &[Digest] {
        self.parents.get(digest).map_or(&[], |p| p.as_slice())
    }

    pub fn child_count(&self) -> usize {
        self.parents.len()
    }

    pub fn resolved_count(&self) -> usize {
        self.resolved.len()
    }
}

/// An immutable, shareable digest index.
#[derive(Debug, Clone)]
pub struct Index {
    core: Arc<Core>,
    children: Arc<Children>,
    /// Per image: every promoted digest has been read. Derived from
    /// `children` once per publication so the hot path does not recount.
    resolved_images: Arc<Vec<bool>>,
    generation: u64,
}

/// One way a digest is promoted: by which manifest, as which image, how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub promotion: PromotionId,
    pub how: How,
}

/// One placement with its manifest file and line, tags and destination
/// repositories: what a person asking "where is this digest promoted?"
/// reads.
#[derive(Debug, serde::Serialize)]
pub struct PlacementReport {
    pub project: Arc<str>,
    pub file: String,
    pub line: u32,
    pub image: Arc<str>,
    /// The promoted digest: the asked one, or for a child its parent's.
    pub digest: Digest,
    pub tags: Vec<Arc<str>>,
    /// The promoted list or index the asked digest is a child of.
    pub parent: Option<Digest>,
    pub repositories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// Listed in a `dmap`.
    Direct,
    /// Listed by a promoted manifest list or index, itself listed as `parent`.
    Child { parent: Digest },
}

/// The (manifest, image) pairs whose destinations include one repository.
#[derive(Debug, Default)]
pub struct Claims {
    /// Manifests with a destination prefix above the repository.
    pub manifests: SmallVec<[ManifestId; 2]>,
    /// Images of those manifests whose name is the rest of the repository.
    pub images: SmallVec<[ImageId; 2]>,
    /// Excluded projects with a destination prefix above the repository.
    pub excluded: SmallVec<[u32; 1]>,
}

impl Claims {
    pub fn in_scope(&self) -> bool {
        !self.manifests.is_empty()
    }
}

/// Sizes, for `index stats` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub generation: u64,
    pub commit: Option<String>,
    pub projects: usize,
    pub excluded_projects: usize,
    pub images: usize,
    pub promotions: usize,
    pub digests: usize,
    pub tags: usize,
    pub destinations: usize,
    pub resolved_digests: usize,
    pub children: usize,
}

impl Index {
    /// Builds the index of a validated manifest set.
    pub fn build(set: &ManifestSet, generation: u64) -> Index {
        // Sized up front: rehashing 250k-entry maps was a fifth of build time.
        let image_count: usize = set.manifests.iter().map(|m| m.images.len()).sum();
        let promotion_count: usize = set
            .manifests
            .iter()
            .flat_map(|m| &m.images)
            .map(|i| i.promotions.len())
            .sum();
        let mut strings = Interner::default();
        let mut core_manifests = Vec::with_capacity(set.manifests.len());
        let mut images = Vec::with_capacity(image_count);
        let mut image_by_name = HashMap::with_capacity(image_count);
        let mut promotions = Vec::with_capacity(promotion_count);
        let mut by_digest: HashMap<Digest, SmallVec<[PromotionId; 1]>> =
            HashMap::with_capacity(promotion_count);
        let mut tag_owner = HashMap::with_capacity(promotion_count);
        let mut prefixes: HashMap<Sym, PrefixOwners> = HashMap::new();

        for (m, manifest) in set.manifests.iter().enumerate() {
            let m = m as ManifestId;
            for dest in &manifest.destinations {
                let owners = prefixes.entry(strings.intern(dest.as_str())).or_default();
                if !owners.live.contains(&m) {
                    owners.live.push(m);
                }
            }
            for image in &manifest.images {
                let id = images.len() as ImageId;
                let name = strings.intern(&image.name);
                let first = promotions.len() as PromotionId;
                for promotion in &image.promotions {
                    let pid = promotions.len() as PromotionId;
                    let tags: Box<[Sym]> = promotion
                        .tags
                        .iter()
                        .map(|t| strings.intern(t.as_str()))
                        .collect();
                    for &tag in tags.iter() {
                        tag_owner.insert((id, tag), pid);
                    }
                    by_digest
                        .entry(promotion.digest.clone())
                        .or_default()
                        .push(pid);
                    promotions.push(PromotionRec {
                        digest: promotion.digest.clone(),
                        image: id,
                        line: promotion.line,
                        tags,
                    });
                }
                images.push(ImageInfo {
                    manifest: m,
                    name,
                    promotions: first..promotions.len() as PromotionId,
                });
                image_by_name.insert((m, name), id);
            }
            core_manifests.push(ManifestInfo {
                project: manifest.project.as_str().into(),
                manifest_file: manifest.manifest_file.clone(),
                images_file: manifest.images_file.clone(),
                source: manifest.source.clone(),
                destinations: manifest.destinations.clone(),
            });
        }
        for (x, excluded) in set.excluded.iter().enumerate() {
            for dest in &excluded.destinations {
                let owners = prefixes.entry(strings.intern(dest.as_str())).or_default();
                owners.excluded.push(x as u32);
            }
        }
        Index {
            core: Arc::new(Core {
                strings,
                manifests: core_manifests,
                excluded: set.excluded.clone(),
                images,
                image_by_name,
                promotions,
                by_digest,
                tag_owner,
                prefixes,
                commit: set.commit.clone(),
            }),
            children: Arc::default(),
            resolved_images: Arc::default(),
            generation,
        }
        .with_children(Arc::default())
    }

    /// The same promotions with newly resolved children; cheap, shares the
    /// promotions with `self`.
    pub fn with_children(&self, children: Arc<Children>) -> Index {
        let core = &*self.core;
        let resolved_images = core
            .images
            .iter()
            .map(|image| {
                core.promotions[image.promotions.start as usize..image.promotions.end as usize]
                    .iter()
                    .all(|p| children.is_resolved(&p.digest))
            })
            .collect();
        Index {
            core: self.core.clone(),
            children,
            resolved_images: Arc::new(resolved_images),
            generation: self.generation,
        }
    }

    /// Every image of every loaded manifest.
    pub fn images(&self) -> impl Iterator<Item = ImageId> + use<> {
        0..self.core.images.len() as ImageId
    }

    /// Whether every digest `image` promotes has been read by the resolver.
    pub fn image_resolved(&self, image: ImageId) -> bool {
        self.resolved_images[image as usize]
    }

    pub fn children(&self) -> &Arc<Children> {
        &self.children
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn commit(&self) -> Option<&str> {
        self.core.commit.as_deref()
    }

    /// Which manifests and images have `repo` as a destination repository.
    /// Split only at `/`, so `…/kube-state-metrics` never falls under a prefix
    /// `…/kube-state`, and a root-level destination claims only the image
    /// names its own manifest lists.
    pub fn claims(&self, repo: &Repository) -> Claims {
        let core = &*self.core;
        let mut claims = Claims::default();
        for (prefix, name) in repo.splits() {
            let Some(owners) = core.strings.get(prefix).and_then(|p| core.prefixes.get(&p)) else {
                continue;
            };
            claims.excluded.extend(owners.excluded.iter().copied());
            let name = core.strings.get(name);
            for &m in &owners.live {
                if !claims.manifests.contains(&m) {
                    claims.manifests.push(m);
                }
                if let Some(&image) = name.and_then(|n| core.image_by_name.get(&(m, n)))
                    && !claims.images.contains(&image)
                {
                    claims.images.push(image);
                }
            }
        }
        claims
    }

    /// The part of `repo` below the longest destination prefix (live or
    /// excluded project) above it: the image name, whatever the region.
    pub fn image_path<'r>(&self, repo: &'r Repository) -> Option<&'r str> {
        let core = &*self.core;
        repo.splits()
            .find(|(prefix, _)| {
                core.strings
                    .get(prefix)
                    .is_some_and(|p| core.prefixes.contains_key(&p))
            })
            .map(|(_, name)| name)
    }

    /// Every placement of `digest`: direct ones, then as a child of each
    /// promoted parent (recursively through nested lists).
    pub fn placements(&self, digest: &Digest) -> Vec<Placement> {
        let mut out: Vec<Placement> = self
            .direct(digest)
            .iter()
            .map(|&promotion| Placement {
                promotion,
                how: How::Direct,
            })
            .collect();
        let mut seen = HashSet::new();
        let mut stack: Vec<&Digest> = self.children.parents_of(digest).iter().collect();
        while let Some(parent) = stack.pop() {
            if !seen.insert(parent) {
                continue;
            }
            for &promotion in self.direct(parent) {
                out.push(Placement {
                    promotion,
                    how: How::Child {
                        parent: parent.clone(),
                    },
                });
            }
            stack.extend(self.children.parents_of(parent));
        }
        out
    }

    /// [`Self::placements`] spelled out, as `GET /v1/digests/{digest}` and
    /// `lookup` show them.
    pub fn placement_reports(&self, digest: &Digest) -> Vec<PlacementReport> {
        self.placements(digest)
            .into_iter()
            .map(|p| {
                let image = self.promotion_image(p.promotion);
                let manifest = self.manifest(self.image_manifest(image));
                let name = self.image_name(image);
                PlacementReport {
                    project: manifest.project.clone(),
                    file: manifest.images_file.display().to_string(),
                    line: self.promotion_line(p.promotion),
                    image: name.clone(),
                    digest: self.promotion_digest(p.promotion).clone(),
                    tags: self.promotion_tags(p.promotion).cloned().collect(),
                    parent: match p.how {
                        How::Direct => None,
                        How::Child { parent } => Some(parent),
                    },
                    repositories: manifest
                        .destinations
                        .iter()
                        .map(|d| format!("{d}/{name}"))
                        .collect(),
                }
            })
            .collect()
    }

    fn direct(&self, digest: &Digest) -> &[PromotionId] {
        self.core
            .by_digest
            .get(digest)
            .map_or(&[], |p| p.as_slice())
    }

    /// The promotion that `tag` of `image` is promised to.
    pub fn tag_owner(&self, image: ImageId, tag: &Tag) -> Option<PromotionId> {
        let core = &*self.core;
        let tag = core.strings.get(tag.as_str())?;
        core.tag_owner.get(&(image, tag)).copied()
    }

    pub fn promotion_digest(&self, p: PromotionId) -> &Digest {
        &self.core.promotions[p as usize].digest
    }

    pub fn promotion_image(&self, p: PromotionId) -> ImageId {
        self.core.promotions[p as usize].image
    }

    pub fn promotion_line(&self, p: PromotionId) -> u32 {
        self.core.promotions[p as usize].line
    }

    pub fn promotion_has_tag(&self, p: PromotionId, tag: &Tag) -> bool {
        let core = &*self.core;
        core.strings
            .get(tag.as_str())
            .is_some_and(|t| core.promotions[p as usize].tags.contains(&t))
    }

    pub fn promotion_tags(&self, p: PromotionId) -> impl Iterator<Item = &Arc<str>> {
        let core = &*self.core;
        core.promotions[p as usize]
            .tags
            .iter()
            .map(|&t| core.strings.resolve(t))
    }

    pub fn image_manifest(&self, image: ImageId) -> ManifestId {
        self.core.images[image as usize].manifest
    }

    pub fn image_name(&self, image: ImageId) -> &Arc<str> {
        self.core
            .strings
            .resolve(self.core.images[image as usize].name)
    }

    /// The promotions of `image` (its `dmap` entries), in file order.
    pub fn image_promotions(&self, image: ImageId) -> std::ops::Range<PromotionId> {
        self.core.images[image as usize].promotions.clone()
    }

    /// The digests `image` promotes, in file order.
    pub fn image_digests(&self, image: ImageId) -> impl Iterator<Item = &Digest> {
        let range = self.core.images[image as usize].promotions.clone();
        self.core.promotions[range.start as usize..range.end as usize]
            .iter()
            .map(|p| &p.digest)
    }

    /// The unread promoted digests of `image` and where to read them.
    pub fn parents_to_resolve(&self, image: ImageId) -> ParentsToResolve {
        let manifest = self.manifest(self.image_manifest(image));
        let name = self.image_name(image);
        ParentsToResolve {
            project: manifest.project.clone(),
            image: name.clone(),
            repositories: std::iter::once(&manifest.source)
                .chain(&manifest.destinations)
                .filter_map(|prefix| Repository::join(prefix, name).ok())
                .collect(),
            digests: self
                .image_digests(image)
                .filter(|d| !self.children.is_resolved(d))
                .cloned()
                .collect(),
        }
    }

    pub fn manifest(&self, m: ManifestId) -> &ManifestInfo {
        &self.core.manifests[m as usize]
    }

    pub fn excluded(&self, x: u32) -> &Excluded {
        &self.core.excluded[x as usize]
    }

    pub fn stats(&self) -> Stats {
        let core = &*self.core;
        Stats {
            generation: self.generation,
            commit: core.commit.clone(),
            projects: core.manifests.len(),
            excluded_projects: core.excluded.len(),
            images: core.images.len(),
            promotions: core.promotions.len(),
            digests: core.by_digest.len(),
            tags: core.promotions.iter().map(|p| p.tags.len()).sum(),
            destinations: core
                .prefixes
                .values()
                .filter(|o| !o.live.is_empty())
                .count(),
            resolved_digests: self.children.resolved_count(),
            children: self.children.child_count(),
        }
    }
}
