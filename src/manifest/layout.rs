//! Finding the manifest files of a root and reading them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::schema::{self, ImageDoc, PlainManifestDoc, RegistryDoc, ThinManifestDoc};
use super::validate::{self, Report};
use super::walk::{Budget, OverBudget, Tree, WalkError, is_yaml, walk};
use super::{Excluded, ManifestSet};

/// Files larger than this are refused: no real manifest comes close, and
/// reading without a bound would let one bad file exhaust memory.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `manifests/<project>/promoter-manifest.yaml` + `images/<project>/images.yaml`.
    Thin,
    /// YAML files that each hold `registries:` and `images:`.
    Plain,
}

/// Why a root could not be loaded at all (as opposed to a problem in one
/// project, which is reported in [`ManifestSet::problems`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read manifests at {}: {error}", path.display())]
    Io {
        path: PathBuf,
        // Not named `source`: error chains would print it twice.
        error: std::io::Error,
    },
    #[error(transparent)]
    OverBudget(OverBudget),
    #[error(
        "no promotion manifests under {0} (expected manifests/<project>/promoter-manifest.yaml, \
         or YAML files with `registries:` and `images:`)"
    )]
    Empty(PathBuf),
    /// A directory above a thin root would load the thin files as plain
    /// manifests: projects without images, every push `unpromoted`.
    #[error(
        "{} is not a manifest root: {} below it is a thin-layout root \
         (manifests/<project>/promoter-manifest.yaml); use that instead",
        root.display(), thin.display()
    )]
    ThinRootBelow { root: PathBuf, thin: PathBuf },
}

impl From<WalkError> for LoadError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { path, error } => LoadError::Io { path, error },
            WalkError::OverBudget(over) => LoadError::OverBudget(over),
        }
    }
}

/// Loads and validates every manifest under `root` within the default
/// [`Budget`], detecting the layout.
pub fn load(root: &Path) -> Result<ManifestSet, LoadError> {
    load_within(root, &Budget::default())
}

/// [`load`] within `budget`: a tree over it is not loaded at all.
pub fn load_within(root: &Path, budget: &Budget) -> Result<ManifestSet, LoadError> {
    let tree = walk(root, budget)?;
    let layout = if tree.is_dir(Path::new("manifests")) {
        Layout::Thin
    } else {
        Layout::Plain
    };
    let mut loader = Loader::default();
    for skipped in &tree.skipped {
        loader.problems.push(super::Problem {
            severity: super::Severity::Warning,
            file: skipped.path.as_path().into(),
            line: None,
            project: None,
            message: skipped.reason.into(),
        });
    }
    let found = match layout {
        Layout::Thin => loader.thin(&tree),
        Layout::Plain => {
            if let Some(thin) = thin_root_below(&tree) {
                return Err(LoadError::ThinRootBelow {
                    root: root.to_path_buf(),
                    thin: root.join(thin),
                });
            }
            loader.plain(&tree)
        }
    };
    if found == 0 {
        return Err(LoadError::Empty(root.to_path_buf()));
    }
    let mut set = ManifestSet {
        root: root.to_path_buf(),
        layout,
        commit: None,
        manifests: loader.manifests,
        excluded: loader.excluded,
        problems: loader.problems,
    };
    validate::overlaps(&mut set);
    Ok(set)
}

const THIN_MANIFEST: &str = "promoter-manifest.yaml";

/// The shallowest directory below the root that holds
/// `manifests/<project>/promoter-manifest.yaml`.
fn thin_root_below(tree: &Tree) -> Option<&Path> {
    tree.files
        .keys()
        .filter(|f| f.file_name().is_some_and(|n| n == THIN_MANIFEST))
        .filter_map(|f| {
            let manifests = f.parent()?.parent()?;
            (manifests.file_name()? == "manifests").then_some(manifests.parent()?)
        })
        .min_by_key(|d| d.components().count())
}

#[derive(Default)]
struct Loader {
    manifests: Vec<super::Manifest>,
    excluded: Vec<Excluded>,
    problems: Vec<super::Problem>,
}

impl Loader {
    /// Returns how many projects were found.
    fn thin(&mut self, tree: &Tree) -> usize {
        let mut projects = Vec::new();
        for dir in tree.subdirs(Path::new("manifests")) {
            self.report_nested(tree, dir);
            let manifest_file = dir.join(THIN_MANIFEST);
            if !tree.is_file(&manifest_file) {
                continue;
            }
            let project = file_name(dir);
            let images_file = Path::new("images").join(&project).join("images.yaml");
            let images_exist = tree.is_file(&images_file);
            projects.push((
                project,
                tree.root.join(manifest_file),
                tree.root.join(images_file),
                images_exist,
            ));
        }
        let found = projects.len();
        for loaded in parallel_map(
            &projects,
            |(project, manifest_file, images_file, images_exist)| {
                thin_project(project.clone(), manifest_file, images_file, *images_exist)
            },
        ) {
            self.add(loaded);
        }
        found
    }

    /// A `promoter-manifest.yaml` below `manifests/<project>/` would be silently
    /// ignored by the promoter's pairing rule, so it is an error here.
    fn report_nested(&mut self, tree: &Tree, project_dir: &Path) {
        let nested = tree
            .files
            .range::<Path, _>((
                std::ops::Bound::Excluded(project_dir),
                std::ops::Bound::Unbounded,
            ))
            .map(|(f, _)| f)
            .take_while(|f| f.starts_with(project_dir))
            .filter(|f| {
                f.file_name().is_some_and(|n| n == THIN_MANIFEST) && f.parent() != Some(project_dir)
            });
        for file in nested {
            self.problems.push(super::Problem {
                severity: super::Severity::Error,
                file: tree.root.join(file).into(),
                line: None,
                project: None,
                message: "unexpected manifest path: a promoter-manifest.yaml must sit \
                          directly in manifests/<project>/, this one is ignored"
                    .into(),
            });
        }
    }

    /// A single file, or every `.yaml`/`.yml` file below a directory.
    fn plain(&mut self, tree: &Tree) -> usize {
        let files: Vec<PathBuf> = if tree.single_file {
            vec![tree.root.clone()]
        } else {
            tree.files
                .keys()
                .filter(|f| is_yaml(f))
                // The exceptions file beside the manifests is not one.
                .filter(|f| *f != Path::new(crate::exceptions::FILE_NAME))
                .map(|f| tree.root.join(f))
                .collect()
        };
        for loaded in parallel_map(&files, |file| plain_file(&tree.root, file)) {
            self.add(loaded);
        }
        files.len()
    }

    fn add(&mut self, loaded: Loaded) {
        let failed = loaded
            .problems
            .iter()
            .any(|p| p.severity == super::Severity::Error);
        self.problems.extend(loaded.problems);
        match loaded.registries.source {
            Some(source) if !failed => self.manifests.push(super::Manifest {
                project: loaded.project,
                manifest_file: loaded.manifest_file,
                images_file: loaded.images_file,
                source,
                destinations: loaded.registries.destinations,
                images: loaded.images,
            }),
            _ => self.excluded.push(Excluded {
                project: loaded.project,
                manifest_file: loaded.manifest_file,
                destinations: loaded.registries.destinations,
            }),
        }
    }
}

/// One project read and validated, before it joins the set.
struct Loaded {
    project: String,
    manifest_file: Arc<Path>,
    images_file: Arc<Path>,
    registries: validate::Registries,
    images: Vec<super::Image>,
    problems: Vec<super::Problem>,
}

fn thin_project(
    project: String,
    manifest_file: &Path,
    images_file: &Path,
    images_exist: bool,
) -> Loaded {
    let manifest_file: Arc<Path> = manifest_file.into();
    let images_file: Arc<Path> = images_file.into();
    let mut problems = Vec::new();
    let mut report = Report::new(&project, &mut problems);
    let (registries, _) = read_manifest(&manifest_file, &mut report, |d: &mut ThinManifestDoc| {
        d.registries.take()
    });
    let images = if images_exist {
        read_text(&images_file, &mut report)
            .and_then(|text| parse_reported::<Vec<ImageDoc>>(&images_file, &text, &mut report).ok())
            .flatten()
            .unwrap_or_default()
    } else {
        report.error(
            &images_file,
            None,
            format!(
                "does not exist: every manifests/{project}/promoter-manifest.yaml needs \
                 images/{project}/images.yaml"
            ),
        );
        Vec::new()
    };
    let images = validate::images(&images_file, images, &mut report);
    Loaded {
        project,
        manifest_file,
        images_file: images_file.clone(),
        registries,
        images,
        problems,
    }
}

fn plain_file(root: &Path, file: &Path) -> Loaded {
    let project = file
        .strip_prefix(root)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new(file.file_name().unwrap_or_default()))
        .with_extension("")
        .to_string_lossy()
        .into_owned();
    let file: Arc<Path> = file.into();
    let mut problems = Vec::new();
    let mut report = Report::new(&project, &mut problems);
    let mut has_registries = false;
    let (registries, doc) = read_manifest(&file, &mut report, |d: &mut PlainManifestDoc| {
        has_registries = d.registries.is_some();
        d.registries.take()
    });
    let images = match doc {
        Some(PlainManifestDoc {
            images: Some(images),
            ..
        }) => images,
        // Without `images:` it is some other file (a thin layout's
        // promoter-manifest.yaml, say): loading it as a project that
        // promotes nothing would make every push to its destinations
        // `unpromoted`.
        Some(_) if has_registries => {
            report.error(
                &file,
                None,
                "not a plain manifest: it has `registries:` but no `images:`".into(),
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    let images = validate::images(&file, images, &mut report);
    Loaded {
        project,
        manifest_file: file.clone(),
        images_file: file,
        registries,
        images,
        problems,
    }
}

/// `f` over `items` on up to four threads, results in input order. Projects
/// are independent until the overlap rule, and parsing dominates a load, so
/// a reload finishes in a fraction of the single-threaded time.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    // Handed out one at a time: project sizes differ by three orders of magnitude.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("loader thread panicked"))
            .collect()
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Refuses the file at `path` when it is larger than `max` bytes, before
/// it is read: reading without a bound would let one commit exhaust memory.
pub(crate) fn check_file_size(path: &Path, max: u64) -> std::io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "file is {len} bytes, the limit is {max}"
        )));
    }
    Ok(())
}

/// Reads one YAML file as text, reporting failures against it.
fn read_text(path: &Arc<Path>, report: &mut Report) -> Option<String> {
    let bytes = match check_file_size(path, MAX_FILE_BYTES).and_then(|()| std::fs::read(path)) {
        Ok(bytes) => bytes,
        Err(e) => {
            report.error(path, None, format!("cannot read: {e}"));
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Some(match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        }),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            report.error(path, Some(line as u32), "not valid UTF-8".into());
            None
        }
    }
}

/// Parses one document; `Err` once the problem is reported.
fn parse_reported<T: for<'de> serde::Deserialize<'de>>(
    path: &Arc<Path>,
    text: &str,
    report: &mut Report,
) -> Result<Option<T>, ()> {
    schema::parse::<T>(text).map_err(|e| report.error(path, e.line, e.message))
}

/// Reads a manifest file and validates its registries. `take_registries`
/// moves the registries out of the parsed document, which is returned for
/// the caller's other fields. When the file fails the strict parse (a
/// misspelt key, say), its destinations are still recovered so the excluded
/// project keeps its prefixes and pushes there are not mistaken for out of
/// scope.
fn read_manifest<T: for<'de> serde::Deserialize<'de>>(
    path: &Arc<Path>,
    report: &mut Report,
    take_registries: impl FnOnce(&mut T) -> Option<Spanned<Vec<RegistryDoc>>>,
) -> (validate::Registries, Option<T>) {
    let Some(text) = read_text(path, report) else {
        return (validate::Registries::default(), None);
    };
    match parse_reported::<T>(path, &text, report) {
        Ok(mut doc) => {
            let registries = doc.as_mut().and_then(take_registries);
            (validate::registries(path, registries, report), doc)
        }
        Err(()) => (
            validate::Registries {
                source: None,
                destinations: schema::recover_destinations(&text),
            },
            None,
        ),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
