//! A deterministic synthetic corpus of promotion manifests shaped like
//! kubernetes/k8s.io's `registry.k8s.io` tree, for benchmarks (docs/design.md §10).
//!
//! Included with `#[path]` by benches, `examples/gen_corpus.rs` and
//! `tests/synthetic_corpus.rs`; each uses a different part, hence the
//! `dead_code` allowance below.
//!
//! Output, in the thin layout of docs/design.md §4.1:
//!
//! ```text
//! <dir>/manifests/k8s-staging-<short>/promoter-manifest.yaml
//! <dir>/images/k8s-staging-<short>/images.yaml
//! ```
//!
//! The shape follows `docs/reference/k8s-io-corpus.md`: project sizes fall off
//! like a power law (a few projects with thousands of digests, many with a
//! handful, about 1% comment-only), some images have legacy per-arch siblings
//! (`<name>-amd64` …), some names have a `group/` prefix, tags are semver-ish
//! or date-stamped, about 1.5% of semver releases carry a second tag, a few
//! digests are tagless (`[]`), some image names repeat in a second list item,
//! and comments, blank lines, CRLF line endings and unquoted digest keys occur
//! about as often as in the real files.
//!
//! Guarantees (checked by `tests/synthetic_corpus.rs`):
//! - the output is a pure function of the [`Scale`];
//! - the digests written are exactly [`digest_of`]`(n)` for `n` in
//!   `0..stats.digests`, each once, in file order;
//! - every tag matches `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//! - no two digests claim the same (project, image, tag);
//! - unquoted files (no quotes around keys or tags) may hold tags such as
//!   `1.10` that a schema-less YAML reader would take for floats.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// Seed of the one PRNG stream everything is drawn from.
const SEED: u64 = 0x5eed_83f5_4424_2026;

/// The most destinations [`Scale::destinations`] can ask for: 22 Artifact
/// Registry locations and 3 GCR hosts.
pub const MAX_DESTINATIONS: usize = AR_LOCATIONS.len() + GCR_HOSTS.len();

const SERVICE_ACCOUNT: &str = "k8s-infra-gcr-promoter@k8s-artifacts-prod.iam.gserviceaccount.com";

/// In the order the real manifests list them.
const AR_LOCATIONS: [&str; 22] = [
    "asia-east1",
    "asia-south1",
    "asia-northeast1",
    "asia-northeast2",
    "australia-southeast1",
    "europe-north1",
    "europe-southwest1",
    "europe-west1",
    "europe-west2",
    "europe-west3",
    "europe-west4",
    "europe-west8",
    "europe-west9",
    "europe-west10",
    "southamerica-west1",
    "us-central1",
    "us-east1",
    "us-east4",
    "us-east5",
    "us-south1",
    "us-west1",
    "us-west2",
];

const GCR_HOSTS: [&str; 3] = ["us.gcr.io", "eu.gcr.io", "asia.gcr.io"];

const ARCHES: [&str; 5] = ["amd64", "arm", "arm64", "ppc64le", "s390x"];

const WORDS: &[&str] = &[
    "addon",
    "agent",
    "api",
    "apiserver",
    "apisnoop",
    "audit",
    "autoscaler",
    "batch",
    "bom",
    "boskos",
    "build",
    "builder",
    "cdi",
    "cert",
    "cloud",
    "cluster",
    "conformance",
    "controller",
    "coredns",
    "cri",
    "csi",
    "dashboard",
    "descheduler",
    "device",
    "dns",
    "dra",
    "driver",
    "e2e",
    "etcd",
    "etcdadm",
    "event",
    "exporter",
    "gateway",
    "git",
    "gpu",
    "headlamp",
    "image",
    "inference",
    "ingress",
    "ipam",
    "jobset",
    "kind",
    "kms",
    "kops",
    "kube",
    "kueue",
    "kwok",
    "lb",
    "logging",
    "lws",
    "manager",
    "metrics",
    "monitor",
    "multitenancy",
    "nat64",
    "network",
    "nfd",
    "node",
    "npd",
    "operator",
    "perf",
    "plugin",
    "policy",
    "provider",
    "proxy",
    "publishing",
    "registry",
    "release",
    "resizer",
    "sample",
    "scheduler",
    "secrets",
    "sidecar",
    "snapshot",
    "storage",
    "sync",
    "test",
    "tools",
    "topology",
    "volume",
    "webhook",
    "zeitgeist",
];

const CLOUDS: &[&str] = &[
    "aws",
    "azure",
    "gcp",
    "ibm",
    "openstack",
    "vsphere",
    "alibaba",
    "oci",
    "kubevirt",
    "digitalocean",
    "nutanix",
    "cloudstack",
    "hetzner",
];

const CLOUD_PREFIXES: &[&str] = &["provider", "cluster-api", "capi", "cloud-provider"];

const SUFFIXES: &[&str] = &[
    "controller",
    "manager",
    "webhook",
    "operator",
    "agent",
    "server",
    "proxy",
    "sidecar",
    "exporter",
    "cli",
    "init",
    "plugin",
    "driver",
    "installer",
    "scheduler",
];

const GROUPS: &[&str] = &[
    "charts",
    "volume",
    "node-perf",
    "pets",
    "e2e",
    "tools",
    "addons",
    "experimental",
];

/// How big a corpus to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Staging projects: one promoter-manifest.yaml and one images.yaml each.
    pub projects: usize,
    /// Distinct digests over all images.yaml files.
    pub digests: usize,
    /// Destination registries per manifest, 1 to [`MAX_DESTINATIONS`].
    pub destinations: usize,
}

impl Scale {
    /// Ten times registry.k8s.io, which the corpus statistics put at about 110
    /// projects and 19k–27k digests in 1.9–2.6 MB of images.yaml.
    pub fn k8s_io_x10() -> Self {
        Scale {
            projects: 1100,
            digests: 250_000,
            destinations: 25,
        }
    }

    /// Small enough for `cargo test`, large enough to hold every feature of the
    /// big corpus (CRLF, unquoted and comment-only files, per-arch siblings,
    /// `group/` names, two-tag and tagless digests, repeated image names).
    pub fn small() -> Self {
        Scale {
            projects: 16,
            digests: 1_500,
            destinations: 25,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub projects: usize,
    /// Distinct image names, summed over projects.
    pub images: usize,
    /// `- name:` list items; more than `images` because some names repeat
    /// (the loader merges them).
    pub image_entries: usize,
    /// Distinct digests; also the number of `dmap` entries, as no digest repeats.
    pub digests: usize,
    /// (digest, tag) pairs: the lengths of all tag lists, summed.
    pub tag_pairs: usize,
    /// Digests promoted with an empty tag list `[]`.
    pub tagless_digests: usize,
    /// Destination registry entries, summed over manifests.
    pub destinations: usize,
    pub images_yaml_bytes: u64,
    /// images.yaml plus promoter-manifest.yaml bytes.
    pub total_bytes: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "projects           {}", self.projects)?;
        writeln!(f, "images             {}", self.images)?;
        writeln!(f, "image entries      {}", self.image_entries)?;
        writeln!(f, "digests            {}", self.digests)?;
        writeln!(f, "(digest, tag)      {}", self.tag_pairs)?;
        writeln!(f, "tagless digests    {}", self.tagless_digests)?;
        writeln!(f, "destinations       {}", self.destinations)?;
        writeln!(f, "images.yaml bytes  {}", self.images_yaml_bytes)?;
        write!(f, "total bytes        {}", self.total_bytes)
    }
}

/// The `n`-th digest the generator writes: the sha256 of the text
/// `image-auditor synthetic digest <n>`, so benchmarks can name known digests
/// without reading the corpus back.
pub fn digest_of(n: u64) -> String {
    let sum = Sha256::digest(format!("image-auditor synthetic digest {n}").as_bytes());
    format!("sha256:{}", hex::encode(sum))
}

/// Writes a corpus of `scale` under `dir` (created if missing) and reports what
/// it wrote. Refuses a `dir` that already holds `manifests` or `images`, so a
/// stale corpus never mixes with a new one and a real one is never overwritten.
pub fn generate(dir: &Path, scale: &Scale) -> io::Result<Stats> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if scale.projects == 0 {
        return Err(invalid("scale needs at least one project".into()));
    }
    if scale.destinations == 0 || scale.destinations > MAX_DESTINATIONS {
        return Err(invalid(format!(
            "destinations must be 1 to {MAX_DESTINATIONS}, not {}",
            scale.destinations
        )));
    }
    let empty = comment_only_projects(scale.projects);
    let filled = scale.projects - empty;
    if scale.digests < filled {
        return Err(invalid(format!(
            "{} digests cannot fill {filled} non-empty projects",
            scale.digests
        )));
    }
    for sub in ["manifests", "images"] {
        if dir.join(sub).exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; remove it or choose another directory",
                    dir.join(sub).display()
                ),
            ));
        }
    }

    let mut rng = Rng::new(SEED);
    let sizes = project_sizes(&mut rng, scale.projects, empty, scale.digests);
    let mut taken = HashSet::new();
    let destinations = destinations(scale.destinations);
    let mut stats = Stats {
        projects: scale.projects,
        ..Stats::default()
    };
    let mut next_digest = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let short = project_name(&mut rng, &mut taken);
        let project = format!("k8s-staging-{short}");

        let manifest = render_manifest(&mut rng, &short, &destinations);
        stats.destinations += destinations.len();
        let file_style = FileStyle {
            crlf: i % 37 == 5,
            unquoted: i % 41 == 3,
        };
        let images = if size == 0 {
            comment_only(&mut rng, &short)
        } else {
            let families = plan_project(&mut rng, &short, size);
            render_images(
                &mut rng,
                &short,
                &families,
                file_style,
                &mut next_digest,
                &mut stats,
            )
        };

        let manifest_dir = dir.join("manifests").join(&project);
        let images_dir = dir.join("images").join(&project);
        fs::create_dir_all(&manifest_dir)?;
        fs::create_dir_all(&images_dir)?;
        fs::write(manifest_dir.join("promoter-manifest.yaml"), &manifest)?;
        fs::write(images_dir.join("images.yaml"), &images)?;
        stats.images_yaml_bytes += images.len() as u64;
        stats.total_bytes += (manifest.len() + images.len()) as u64;
    }
    stats.digests = usize::try_from(next_digest).expect("digest count fits usize");
    debug_assert_eq!(stats.digests, scale.digests);
    Ok(stats)
}

/// About 1% of projects have a comment-only images.yaml, like
/// k8s-staging-llm-instance-gateway (1 of 92 real files).
fn comment_only_projects(projects: usize) -> usize {
    if projects > 1 {
        projects.div_ceil(100)
    } else {
        0
    }
}

/// A tiny xorshift64* generator: deterministic, dependency-free, plenty for
/// shaping test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // One splitmix64 step so that any seed (even 0) gives a good state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

/// Splits `total` into integer parts proportional to `weights`, each at least
/// `min`, summing exactly to `total`.
fn apportion(total: usize, weights: &[f64], min: usize) -> Vec<usize> {
    let n = weights.len();
    assert!(
        n > 0 && total >= n * min,
        "cannot apportion {total} over {n}"
    );
    let spare = total - n * min;
    let sum: f64 = weights.iter().sum();
    let mut parts: Vec<usize> = weights
        .iter()
        .map(|w| min + (spare as f64 * w / sum).floor() as usize)
        .collect();
    let mut given: usize = parts.iter().sum();
    // Rounding leftovers go to (or, after float error, come from) the largest.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut k = 0;
    while given < total {
        parts[order[k % n]] += 1;
        given += 1;
        k += 1;
    }
    while given > total {
        let i = order[k % n];
        if parts[i] > min {
            parts[i] -= 1;
            given -= 1;
        }
        k += 1;
    }
    parts
}

/// Digests per project, in project order; the last `empty` are 0.
///
/// Project `i` stands at rank `r = 1 + 110·i/projects` of a 110-project
/// template (k8s.io has ~110), weighted `r^-1.7 · exp(-(r/70)^3)`: a power law
/// like the real sizes down to the median (~17 digests), then a steeper tail
/// (a quarter of real files hold under 5 digests). Below the top ranks each
/// weight is jittered by up to ±50%.
fn project_sizes(rng: &mut Rng, projects: usize, empty: usize, digests: usize) -> Vec<usize> {
    let filled = projects - empty;
    let mut sizes = if filled == 0 {
        Vec::new()
    } else {
        let weights: Vec<f64> = (0..filled)
            .map(|i| {
                let r = 1.0 + 110.0 * i as f64 / projects as f64;
                let jitter = if r > 3.0 {
                    rng.uniform(-0.4, 0.4).exp()
                } else {
                    1.0
                };
                r.powf(-1.7) * (-(r / 70.0).powi(3)).exp() * jitter
            })
            .collect();
        apportion(digests, &weights, 1)
    };
    sizes.resize(projects, 0);
    sizes
}

fn project_name(rng: &mut Rng, taken: &mut HashSet<String>) -> String {
    for attempt in 0usize.. {
        let mut name = match rng.below(10) {
            0..=2 => rng.pick(WORDS).to_string(),
            3..=6 => format!("{}-{}", rng.pick(WORDS), rng.pick(WORDS)),
            7 => format!("{}-{}", rng.pick(CLOUD_PREFIXES), rng.pick(CLOUDS)),
            8 => format!("sig-{}", rng.pick(WORDS)),
            _ => format!(
                "{}-{}-{}",
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.pick(WORDS)
            ),
        };
        let parts: Vec<&str> = name.split('-').collect();
        if (1..parts.len()).any(|j| parts[..j].contains(&parts[j])) {
            continue;
        }
        if attempt >= 100 {
            name = format!("{name}-{attempt}");
        }
        if taken.insert(name.clone()) {
            return name;
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// The destination prefixes for `n` destinations: the first `n` of the 22
/// Artifact Registry locations then the 3 GCR hosts, returned GCR first as in
/// the real manifests. `<short>` is filled in by the caller.
fn destinations(n: usize) -> Vec<Destination> {
    let pool: Vec<Destination> = AR_LOCATIONS
        .iter()
        .map(|&l| Destination::Ar(l))
        .chain(GCR_HOSTS.iter().map(|&h| Destination::Gcr(h)))
        .take(n)
        .collect();
    let (gcr, ar): (Vec<_>, Vec<_>) = pool
        .into_iter()
        .partition(|d| matches!(d, Destination::Gcr(_)));
    gcr.into_iter().chain(ar).collect()
}

#[derive(Clone, Copy)]
enum Destination {
    Ar(&'static str),
    Gcr(&'static str),
}

impl Destination {
    fn name(self, short: &str) -> String {
        match self {
            Destination::Ar(location) => {
                format!("{location}-docker.pkg.dev/k8s-artifacts-prod/images/{short}")
            }
            Destination::Gcr(host) => format!("{host}/k8s-artifacts-prod/{short}"),
        }
    }
}

fn render_manifest(rng: &mut Rng, short: &str, destinations: &[Destination]) -> String {
    let mut out = String::with_capacity(160 + destinations.len() * 140);
    if rng.chance(0.9) {
        let _ = writeln!(
            out,
            "# google group for gcr.io/k8s-staging-{short} is k8s-infra-staging-{short}@kubernetes.io"
        );
        if rng.chance(0.1) {
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "registries:\n- name: gcr.io/k8s-staging-{short}\n  src: true"
    );
    for d in destinations {
        let _ = writeln!(
            out,
            "- name: {}\n  service-account: {SERVICE_ACCOUNT}",
            d.name(short)
        );
    }
    out
}

fn comment_only(rng: &mut Rng, short: &str) -> String {
    if rng.chance(0.5) {
        "# TODO: add images\n".to_string()
    } else {
        format!(
            "# The images are at https://console.cloud.google.com/artifacts/docker/k8s-staging-images/us-central1/{short}.\n"
        )
    }
}

/// How tags of one image are spelled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TagStyle {
    /// `v1.2.3`, `v1.3.0-rc.1`
    SemverV,
    /// `1.2.3`
    Semver,
    /// `1.9`, `1.10`
    TwoPart,
    /// `v20250131-478cd5d`, `v20200625-g1813d1c56`
    DateSha,
    /// `v3.0.20230119`
    DateVersion,
    /// `v0.8.0` and `v0.8.0-minimal` as separate builds
    Variant,
}

impl TagStyle {
    fn pick(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..=44 => TagStyle::SemverV,
            45..=69 => TagStyle::Semver,
            70..=77 => TagStyle::TwoPart,
            78..=89 => TagStyle::DateSha,
            90..=94 => TagStyle::DateVersion,
            _ => TagStyle::Variant,
        }
    }
}

/// One `dmap` entry before its digest is known: 0, 1 or 2 tags.
type Slot = Vec<String>;

/// One image name of a project and its legacy per-arch siblings.
struct Family {
    name: String,
    /// Oldest first.
    slots: Vec<Slot>,
    arches: Vec<&'static str>,
    /// Each sibling has the primary tags of the newest `sibling_versions` slots.
    sibling_versions: usize,
    descending: bool,
    /// Write `slots[split..]` in a second list item of the same name, at the
    /// end of the file.
    split: Option<usize>,
}

fn plan_project(rng: &mut Rng, short: &str, digests: usize) -> Vec<Family> {
    let count = ((digests as f64).sqrt() * rng.uniform(0.2, 0.8)).round() as usize;
    let count = count.clamp(1, digests);
    let weights: Vec<f64> = (0..count)
        .map(|f| rng.uniform(0.5, 1.5) / (f + 1) as f64)
        .collect();
    let shares = apportion(digests, &weights, 1);
    let grouped = rng.chance(0.12);
    let project_style = TagStyle::pick(rng);
    let mut names = HashSet::new();

    shares
        .into_iter()
        .enumerate()
        .map(|(f, share)| {
            let mut arches: Vec<&'static str> = Vec::new();
            if share >= 6 && rng.chance(0.2) {
                arches = match rng.pick(&[5, 5, 5, 5, 4, 3, 3, 1, 1]) {
                    5 => ARCHES.to_vec(),
                    4 => ARCHES[..4].to_vec(),
                    3 => vec!["amd64", "arm64", "s390x"],
                    _ => vec!["amd64"],
                };
            }
            let name = family_name(rng, short, f == 0, grouped, &arches, &mut names);
            let sibling_versions = share / (1 + arches.len());
            let parent = share - arches.len() * sibling_versions;
            let style = if rng.chance(0.7) {
                project_style
            } else {
                TagStyle::pick(rng)
            };
            let slots = tag_slots(rng, style, parent);
            let split =
                (parent >= 12 && rng.chance(0.04)).then(|| parent / 3 + rng.below(parent / 3));
            Family {
                name,
                slots,
                arches,
                sibling_versions,
                descending: rng.chance(0.25),
                split,
            }
        })
        .collect()
}

fn family_name(
    rng: &mut Rng,
    short: &str,
    first: bool,
    grouped: bool,
    arches: &[&str],
    names: &mut HashSet<String>,
) -> String {
    for attempt in 0usize.. {
        let mut base = if first && attempt == 0 && rng.chance(0.5) {
            short.to_string()
        } else {
            match rng.below(10) {
                0..=2 => format!("{short}-{}", rng.pick(SUFFIXES)),
                3..=5 => format!("{}-{}", rng.pick(WORDS), rng.pick(SUFFIXES)),
                6..=7 => rng.pick(WORDS).to_string(),
                8 => format!("e2e-test-{}", rng.pick(WORDS)),
                _ => format!("{}-{}", rng.pick(WORDS), rng.pick(WORDS)),
            }
        };
        if attempt >= 50 {
            base = format!("{base}-{attempt}");
        }
        let name = if grouped && rng.chance(0.6) {
            format!("{}/{base}", rng.pick(GROUPS))
        } else {
            base
        };
        let all: Vec<String> = std::iter::once(name.clone())
            .chain(arches.iter().map(|a| format!("{name}-{a}")))
            .collect();
        if all.iter().all(|n| !names.contains(n)) {
            names.extend(all);
            return name;
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// `n` slots of distinct, increasing tags in `style`, oldest first. About
/// 1.5% of semver releases also carry the other spelling (`v1.2.3` and
/// `1.2.3`); about 0.25% of slots are tagless.
fn tag_slots(rng: &mut Rng, style: TagStyle, n: usize) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::with_capacity(n);
    let mut major = rng.pick(&[0, 0, 0, 1, 1, 1, 2, 3]);
    let mut minor = rng.below(12);
    let mut patch = rng.below(4);
    let mut date = Date::new(rng);
    let sha_g = rng.chance(0.3);
    let v = if style == TagStyle::Semver { "" } else { "v" };
    while slots.len() < n {
        if rng.chance(0.0025) {
            slots.push(Vec::new());
            continue;
        }
        match style {
            TagStyle::SemverV | TagStyle::Semver | TagStyle::Variant => {
                let release = format!("{major}.{minor}.{patch}");
                let mut slot = vec![format!("{v}{release}")];
                if style != TagStyle::Variant && rng.chance(0.015) {
                    let other = if v.is_empty() { "v" } else { "" };
                    slot.push(format!("{other}{release}"));
                }
                slots.push(slot);
                if style == TagStyle::Variant && slots.len() < n {
                    slots.push(vec![format!("v{release}-minimal")]);
                }
                // Advance, announcing new minors and majors with pre-releases.
                let r = rng.unit();
                if r < 0.22 {
                    if r < 0.02 {
                        major += 1;
                        minor = 0;
                    } else {
                        minor += 1;
                    }
                    patch = 0;
                    if style != TagStyle::Variant && rng.chance(0.3) {
                        for kind in ["alpha", "beta", "rc"] {
                            for k in 1..=1 + rng.below(2) {
                                if slots.len() + 1 < n {
                                    slots.push(vec![format!("{v}{major}.{minor}.0-{kind}.{k}")]);
                                }
                            }
                        }
                    }
                } else {
                    patch += 1;
                }
            }
            TagStyle::TwoPart => {
                slots.push(vec![format!("{major}.{minor}")]);
                if rng.chance(0.03) {
                    major += 1;
                    minor = 0;
                } else {
                    minor += 1;
                }
            }
            TagStyle::DateSha => {
                let sha = if sha_g {
                    format!("g{}", rng.hex(9))
                } else {
                    rng.hex(7)
                };
                slots.push(vec![format!("v{date}-{sha}")]);
                date.advance(1 + rng.below(40));
            }
            TagStyle::DateVersion => {
                slots.push(vec![format!("v{}.{}.{date}", major.max(1), minor % 3)]);
                date.advance(1 + rng.below(60));
            }
        }
    }
    slots
}

/// A calendar date, enough to spell build-date tags.
struct Date {
    year: u32,
    month: u32,
    day: u32,
}

impl Date {
    fn new(rng: &mut Rng) -> Self {
        Date {
            year: 2018 + rng.below(6) as u32,
            month: 1 + rng.below(12) as u32,
            day: 1 + rng.below(28) as u32,
        }
    }

    fn advance(&mut self, days: usize) {
        for _ in 0..days {
            let leap = self.year.is_multiple_of(4)
                && (!self.year.is_multiple_of(100) || self.year.is_multiple_of(400));
            let length = match self.month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            self.day += 1;
            if self.day > length {
                self.day = 1;
                self.month += 1;
                if self.month > 12 {
                    self.month = 1;
                    self.year += 1;
                }
            }
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

#[derive(Clone, Copy)]
struct FileStyle {
    crlf: bool,
    /// `sha256:…: [v1.2.3]` instead of `"sha256:…": ["v1.2.3"]`, like nfd's file.
    unquoted: bool,
}

/// One `- name:` list item, ready to write.
struct Item<'a> {
    name: String,
    /// Oldest first; written in `descending` order if asked.
    slots: Vec<&'a [String]>,
    descending: bool,
    comment: Option<String>,
}

fn render_images(
    rng: &mut Rng,
    short: &str,
    families: &[Family],
    style: FileStyle,
    next_digest: &mut u64,
    stats: &mut Stats,
) -> String {
    let mut items: Vec<Item> = Vec::new();
    let mut tail: Vec<Item> = Vec::new();
    for family in families {
        let (first, rest) = family
            .slots
            .split_at(family.split.unwrap_or(family.slots.len()));
        items.push(Item {
            name: family.name.clone(),
            slots: first.iter().map(Vec::as_slice).collect(),
            descending: family.descending,
            comment: None,
        });
        if !rest.is_empty() {
            // A later release written as a separate item, as etcdadm does.
            let comment = rest[0].first().map(|t| format!("# {t}"));
            tail.push(Item {
                name: family.name.clone(),
                slots: rest.iter().map(Vec::as_slice).collect(),
                descending: family.descending,
                comment,
            });
        }
        let newest = &family.slots[family.slots.len() - family.sibling_versions..];
        for arch in &family.arches {
            items.push(Item {
                name: format!("{}-{arch}", family.name),
                slots: newest.iter().map(|s| &s[..s.len().min(1)]).collect(),
                descending: family.descending,
                comment: None,
            });
        }
        stats.images += 1 + family.arches.len();
    }
    items.extend(tail);
    stats.image_entries += items.len();

    let mut out = String::with_capacity(
        families
            .iter()
            .map(|f| (f.slots.len() + f.arches.len() * f.sibling_versions) * 100)
            .sum::<usize>()
            + 256,
    );
    if rng.chance(0.35) {
        let _ = writeln!(out, "# {short} images");
        if rng.chance(0.5) {
            let _ = writeln!(
                out,
                "# https://github.com/kubernetes-sigs/{short}/tree/main/images"
            );
        }
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 && rng.chance(0.1) {
            out.push('\n');
        }
        if let Some(comment) = &item.comment {
            let _ = writeln!(out, "{comment}");
        } else if i > 0 && rng.chance(0.15) {
            if rng.chance(0.5) {
                let _ = writeln!(
                    out,
                    "# https://github.com/kubernetes-sigs/{short}/tree/main/images/{}",
                    item.name
                );
            } else {
                let _ = writeln!(out, "# {} image", item.name);
            }
        }
        let _ = writeln!(out, "- name: {}\n  dmap:", item.name);
        let mut write_slot = |out: &mut String, tags: &[String]| {
            if rng.chance(0.004) {
                match tags.first() {
                    Some(t) => {
                        let pr = 4000 + rng.below(4000);
                        let _ = writeln!(
                            out,
                            "    # {t} was rebuilt, see https://github.com/kubernetes/k8s.io/pull/{pr}"
                        );
                    }
                    None => {
                        let _ = writeln!(out, "    # untagged build kept for {short}");
                    }
                }
            }
            let digest = digest_of(*next_digest);
            *next_digest += 1;
            stats.tag_pairs += tags.len();
            stats.tagless_digests += usize::from(tags.is_empty());
            let q = if style.unquoted { "" } else { "\"" };
            let _ = write!(out, "    {q}{digest}{q}: [");
            for (k, tag) in tags.iter().enumerate() {
                let sep = if k == 0 { "" } else { ", " };
                let _ = write!(out, "{sep}{q}{tag}{q}");
            }
            out.push_str("]\n");
        };
        if item.descending {
            item.slots
                .iter()
                .rev()
                .for_each(|s| write_slot(&mut out, s));
        } else {
            item.slots.iter().for_each(|s| write_slot(&mut out, s));
        }
    }
    if style.crlf {
        out.replace('\n', "\r\n")
    } else {
        out
    }
}
