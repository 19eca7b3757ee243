//! Finding the manifest files of a root and reading them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::schema::{self, ImageDoc, PlainManifestDoc, RegistryDoc, ThinManifestDoc};
use super::validate::{self, Report};
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
    #[error("cannot read manifests at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no promotion manifests under {0} (expected manifests/<project>/promoter-manifest.yaml, \
         or YAML files with `registries:` and `images:`)"
    )]
    Empty(PathBuf),
}

/// Loads and validates every manifest under `root`, detecting the layout.
pub fn load(root: &Path) -> Result<ManifestSet, LoadError> {
    let io = |source| LoadError::Io {
        path: root.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(io)?;
    let layout = if meta.is_dir() && root.join("manifests").is_dir() {
        Layout::Thin
    } else {
        Layout::Plain
    };
    let mut loader = Loader::default();
    let found = match layout {
        Layout::Thin => loader.thin(root)?,
        Layout::Plain => loader.plain(root)?,
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

#[derive(Default)]
struct Loader {
    manifests: Vec<super::Manifest>,
    excluded: Vec<Excluded>,
    problems: Vec<super::Problem>,
}

impl Loader {
    /// Returns how many projects were found.
    fn thin(&mut self, root: &Path) -> Result<usize, LoadError> {
        let manifests_dir = root.join("manifests");
        let mut projects = Vec::new();
        for entry in sorted_entries(&manifests_dir)? {
            if !entry.is_dir() {
                continue;
            }
            self.report_nested(&entry, 0)?;
            let manifest_file = entry.join("promoter-manifest.yaml");
            if !manifest_file.is_file() {
                continue;
            }
            let project = file_name(&entry);
            let images_file = root.join("images").join(&project).join("images.yaml");
            projects.push((project, manifest_file, images_file));
        }
        let found = projects.len();
        for loaded in parallel_map(&projects, |(project, manifest_file, images_file)| {
            thin_project(project.clone(), manifest_file, images_file)
        }) {
            self.add(loaded);
        }
        Ok(found)
    }

    /// A `promoter-manifest.yaml` below `manifests/<project>/` would be silently
    /// ignored by the promoter's pairing rule, so it is an error here.
    fn report_nested(&mut self, dir: &Path, depth: usize) -> Result<(), LoadError> {
        for entry in sorted_entries(dir)? {
            if entry.is_dir() {
                if entry.join("promoter-manifest.yaml").is_file() {
                    self.problems.push(super::Problem {
                        severity: super::Severity::Error,
                        file: entry.join("promoter-manifest.yaml").into(),
                        line: None,
                        project: None,
                        message: "unexpected manifest path: a promoter-manifest.yaml must sit \
                                  directly in manifests/<project>/, this one is ignored"
                            .into(),
                    });
                }
                // Bounded so a symlink loop cannot recurse forever.
                if depth < 16 {
                    self.report_nested(&entry, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// A single file, or every `.yaml`/`.yml` file below a directory.
    fn plain(&mut self, root: &Path) -> Result<usize, LoadError> {
        let mut files = Vec::new();
        if root.is_dir() {
            collect_yaml(root, &mut files, 0)?;
        } else {
            files.push(root.to_path_buf());
        }
        for loaded in parallel_map(&files, |file| plain_file(root, file)) {
            self.add(loaded);
        }
        Ok(files.len())
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

fn thin_project(project: String, manifest_file: &Path, images_file: &Path) -> Loaded {
    let manifest_file: Arc<Path> = manifest_file.into();
    let images_file: Arc<Path> = images_file.into();
    let mut problems = Vec::new();
    let mut report = Report::new(&project, &mut problems);
    let (registries, _) = read_manifest(&manifest_file, &mut report, |d: &mut ThinManifestDoc| {
        d.registries.take()
    });
    let images = if images_file.is_file() {
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
    let (registries, doc) = read_manifest(&file, &mut report, |d: &mut PlainManifestDoc| {
        d.registries.take()
    });
    let images = doc.and_then(|d| d.images).unwrap_or_default();
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

/// Reads one YAML file as text, reporting failures against it.
fn read_text(path: &Arc<Path>, report: &mut Report) -> Option<String> {
    let bytes = match std::fs::metadata(path).and_then(|m| {
        if m.len() > MAX_FILE_BYTES {
            Err(std::io::Error::other(format!(
                "file is {} bytes, the limit is {MAX_FILE_BYTES}",
                m.len()
            )))
        } else {
            std::fs::read(path)
        }
    }) {
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

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), LoadError> {
    for entry in sorted_entries(dir)? {
        if entry.is_dir() {
            if depth < 16 && !file_name(&entry).starts_with('.') {
                collect_yaml(&entry, out, depth + 1)?;
            }
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
