//! The validation rules of docs/design.md §4.3, applied while turning parsed YAML into
//! [`Manifest`](super::Manifest)s.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::path::Path;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::schema::{ImageDoc, RegistryDoc};
use super::{Image, ManifestSet, Problem, Promotion, Severity};
use crate::reference::{Digest, RegistryPrefix, Tag, check_image_name, segment_splits};

/// Collects the problems of one project.
pub(super) struct Report<'a> {
    project: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Report<'a> {
    pub(super) fn new(project: &'a str, problems: &'a mut Vec<Problem>) -> Self {
        Self { project, problems }
    }

    pub(super) fn error(&mut self, file: &Arc<Path>, line: Option<u32>, message: String) {
        self.push(Severity::Error, file, line, message);
    }

    fn warning(&mut self, file: &Arc<Path>, line: Option<u32>, message: String) {
        self.push(Severity::Warning, file, line, message);
    }

    fn push(&mut self, severity: Severity, file: &Arc<Path>, line: Option<u32>, message: String) {
        self.problems.push(Problem {
            severity,
            file: file.clone(),
            line,
            project: Some(self.project.to_string()),
            message,
        });
    }
}

fn line<T>(s: &Spanned<T>) -> Option<u32> {
    Some(s.referenced.line() as u32).filter(|&l| l > 0)
}

#[derive(Default)]
pub(super) struct Registries {
    /// `None` when there is not exactly one valid source.
    pub source: Option<RegistryPrefix>,
    pub destinations: Vec<RegistryPrefix>,
}

pub(super) fn registries(
    file: &Arc<Path>,
    doc: Option<Spanned<Vec<RegistryDoc>>>,
    report: &mut Report,
) -> Registries {
    let mut out = Registries {
        source: None,
        destinations: Vec::new(),
    };
    let Some(doc) = doc else {
        report.error(file, None, "`registries` is missing or empty".into());
        return out;
    };
    if doc.value.is_empty() {
        report.error(file, line(&doc), "`registries` is empty".into());
        return out;
    }
    let mut sources = Vec::new();
    let mut seen: HashMap<RegistryPrefix, u32> = HashMap::new();
    for registry in &doc.value {
        let at = line(&registry.name);
        let is_source = registry.src.as_ref().is_some_and(|s| s.value);
        if registry.name.value.is_empty() {
            report.error(file, at, "registry `name` is empty".into());
            continue;
        }
        let name = match registry.name.value.parse::<RegistryPrefix>() {
            Ok(name) => name,
            Err(e) => {
                report.error(file, at, e.to_string());
                continue;
            }
        };
        if is_source {
            sources.push((name, at));
        } else if let Some(first) = seen.get(&name) {
            // Real manifests do this (k8s.io boskos); harmless, so not an error.
            report.warning(
                file,
                at,
                format!("destination {name} is listed twice (first at line {first})"),
            );
        } else {
            seen.insert(name.clone(), at.unwrap_or(0));
            out.destinations.push(name);
        }
    }
    match sources.len() {
        1 => out.source = sources.pop().map(|(name, _)| name),
        0 => report.error(
            file,
            line(&doc),
            "no registry has `src: true`: exactly one source registry is required".into(),
        ),
        n => {
            let lines: Vec<String> = sources
                .iter()
                .map(|(_, l)| l.map_or("?".into(), |l| l.to_string()))
                .collect();
            report.error(
                file,
                sources[1].1,
                format!(
                    "{n} registries have `src: true` (lines {}): exactly one source registry is required",
                    lines.join(", ")
                ),
            );
        }
    }
    out
}

pub(super) fn images(file: &Arc<Path>, docs: Vec<ImageDoc>, report: &mut Report) -> Vec<Image> {
    // Repeated list items of one image name are merged (k8s.io etcdadm does it).
    let mut images: Vec<Image> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    // Images listed in more than one item; only those can repeat a digest
    // (a repeat inside one `dmap` is already a duplicate-key error).
    let mut repeated: Vec<usize> = Vec::new();
    for doc in docs {
        let name_line = line(&doc.name);
        let name = doc.name.value;
        if name.is_empty() {
            report.error(file, name_line, "image `name` is empty".into());
            continue;
        }
        if let Err(e) = check_image_name(&name) {
            report.error(file, name_line, e.to_string());
            continue;
        }
        let image = match by_name.get(&name) {
            Some(&image) => {
                repeated.push(image);
                image
            }
            None => {
                by_name.insert(name.clone(), images.len());
                images.push(Image {
                    name: name.clone(),
                    promotions: Vec::new(),
                });
                images.len() - 1
            }
        };
        for (digest_text, tag_texts) in doc.dmap.unwrap_or_default().0 {
            let at = line(&digest_text);
            let digest = match digest_text.value.parse::<Digest>() {
                Ok(d) => d,
                Err(e) => {
                    report.error(file, at, format!("image {name}: {e}"));
                    continue;
                }
            };
            let mut tags = Vec::with_capacity(tag_texts.len());
            for tag in tag_texts {
                match tag.value.parse::<Tag>() {
                    Ok(t) if !tags.contains(&t) => tags.push(t),
                    Ok(_) => {}
                    Err(e) => report.error(
                        file,
                        line(&tag).or(at),
                        format!("image {name}, digest {digest}: {e}"),
                    ),
                }
            }
            images[image].promotions.push(Promotion {
                digest,
                tags,
                line: at.unwrap_or(0),
            });
        }
    }
    repeated.sort_unstable();
    repeated.dedup();
    for image in repeated {
        merge_repeated_digests(&mut images[image]);
    }
    for image in &images {
        tag_conflicts_within(file, image, report);
    }
    images
}

/// One digest listed in several items of the same image name: one
/// promotion with the union of the tags, at the first line.
fn merge_repeated_digests(image: &mut Image) {
    let mut first: HashMap<Digest, usize> = HashMap::new();
    let mut merged: Vec<Promotion> = Vec::with_capacity(image.promotions.len());
    for promotion in image.promotions.drain(..) {
        match first.get(&promotion.digest) {
            Some(&i) => {
                for tag in promotion.tags {
                    if !merged[i].tags.contains(&tag) {
                        merged[i].tags.push(tag);
                    }
                }
            }
            None => {
                first.insert(promotion.digest.clone(), merged.len());
                merged.push(promotion);
            }
        }
    }
    image.promotions = merged;
}

/// One image promising one tag to two digests (possible once repeated names
/// are merged).
fn tag_conflicts_within(file: &Arc<Path>, image: &Image, report: &mut Report) {
    let mut owner: HashMap<&Tag, &Promotion> = HashMap::new();
    for promotion in &image.promotions {
        for tag in &promotion.tags {
            if let Some(first) = owner.insert(tag, promotion)
                && first.digest != promotion.digest
            {
                report.error(
                    file,
                    Some(promotion.line),
                    format!(
                        "image {}: tag {tag} is promised to {} here and to {} at line {}",
                        image.name, promotion.digest, first.digest, first.line
                    ),
                );
            }
        }
    }
}

/// (manifest, image) indexes into a [`ManifestSet`].
type Claimant = (usize, usize);

/// The overlap rule across manifests: one destination `repository:tag`
/// promised to two different digests. Both projects are excluded, since
/// nothing says which of them is wrong.
pub(super) fn overlaps(set: &mut ManifestSet) {
    // Which manifests promote to each destination prefix.
    let mut at_prefix: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (m, manifest) in set.manifests.iter().enumerate() {
        for dest in &manifest.destinations {
            at_prefix.entry(dest.as_str()).or_default().push(m);
        }
    }
    let image_index: Vec<HashMap<&str, usize>> = set
        .manifests
        .iter()
        .map(|m| {
            m.images
                .iter()
                .enumerate()
                .map(|(i, img)| (img.name.as_str(), i))
                .collect()
        })
        .collect();

    // Pairs of (manifest, image) that claim the same destination repository,
    // with one example repository. Two claimants either share a prefix and an
    // image name, or one prefix is an ancestor of the other (a root-level
    // destination plus a nested one, as k8s.io etcd has).
    let mut claims: BTreeMap<(Claimant, Claimant), String> = BTreeMap::new();
    let mut claim = |a: Claimant, b: Claimant, repo: String| {
        if a != b {
            claims.entry((a.min(b), a.max(b))).or_insert(repo);
        }
    };
    for (&prefix, owners) in &at_prefix {
        for (x, &m1) in owners.iter().enumerate() {
            for &m2 in &owners[x + 1..] {
                for (name, &i1) in &image_index[m1] {
                    if let Some(&i2) = image_index[m2].get(name) {
                        claim((m1, i1), (m2, i2), format!("{prefix}/{name}"));
                    }
                }
            }
        }
        for (ancestor, rest) in segment_splits(prefix) {
            let Some(upper) = at_prefix.get(ancestor) else {
                continue;
            };
            for &m_up in upper {
                for (name_up, &i_up) in &image_index[m_up] {
                    let Some(tail) = name_up.strip_prefix(rest).and_then(|t| t.strip_prefix('/'))
                    else {
                        continue;
                    };
                    for &m in owners {
                        if let Some(&i) = image_index[m].get(tail) {
                            claim((m_up, i_up), (m, i), format!("{prefix}/{tail}"));
                        }
                    }
                }
            }
        }
    }

    let mut bad = vec![false; set.manifests.len()];
    for (((m1, i1), (m2, i2)), repo) in claims {
        let (a, b) = (&set.manifests[m1], &set.manifests[m2]);
        let (img_a, img_b) = (&a.images[i1], &b.images[i2]);
        let tags_b: HashMap<&Tag, &Promotion> = img_b
            .promotions
            .iter()
            .flat_map(|p| p.tags.iter().map(move |t| (t, p)))
            .collect();
        for pa in &img_a.promotions {
            for tag in &pa.tags {
                let Some(pb) = tags_b.get(tag) else { continue };
                if pa.digest == pb.digest {
                    continue;
                }
                bad[m1] = true;
                bad[m2] = true;
                for (mine, other, mine_p, other_p) in [(a, b, pa, *pb), (b, a, *pb, pa)] {
                    set.problems.push(Problem {
                        severity: Severity::Error,
                        file: mine.images_file.clone(),
                        line: Some(mine_p.line),
                        project: Some(mine.project.clone()),
                        message: format!(
                            "overlapping promotion: {repo}:{tag} is promised to {} here and to {} \
                             at {}:{}",
                            mine_p.digest,
                            other_p.digest,
                            other.images_file.display(),
                            other_p.line
                        ),
                    });
                }
            }
        }
    }
    if bad.iter().any(|&b| b) {
        let manifests = std::mem::take(&mut set.manifests);
        for (manifest, bad) in manifests.into_iter().zip(bad) {
            if bad {
                set.excluded.push(super::Excluded {
                    project: manifest.project,
                    manifest_file: manifest.manifest_file,
                    destinations: manifest.destinations,
                });
            } else {
                set.manifests.push(manifest);
            }
        }
    }
}
