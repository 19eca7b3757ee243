//! Walking a manifest root within a budget.
//!
//! Whoever can commit to the manifest repository controls this tree, so the
//! walk treats it as hostile input: a symlink is followed only when its
//! target stays inside the root, a directory is entered at most once
//! (identified by device and inode, so symlink cycles and several links to
//! one directory end at the first visit), and the number of entries, the
//! bytes of YAML and the nesting depth are bounded. Going over a bound fails
//! the whole walk: a partial set would silently drop projects.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How much of a manifest tree one load may visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Most files and directories visited below the root.
    pub max_entries: usize,
    /// Most bytes of `.yaml`/`.yml` files below the root (what a load reads).
    pub max_bytes: u64,
    /// Deepest directory nesting below the root.
    pub max_depth: usize,
}

impl Default for Budget {
    /// Far above the k8s.io set (about 1 000 files, 2 MB of YAML, depth 3),
    /// far below what exhausts a small container.
    fn default() -> Self {
        Budget {
            max_entries: 100_000,
            max_bytes: 512 * 1024 * 1024,
            max_depth: 32,
        }
    }
}

impl Budget {
    fn over(&self, root: &Path, which: Limit) -> WalkError {
        let (limit, what, key) = match which {
            Limit::Entries => (
                self.max_entries as u64,
                "files and directories",
                "max_entries",
            ),
            Limit::Bytes => (self.max_bytes, "bytes of YAML", "max_bytes"),
            Limit::Depth => (self.max_depth as u64, "levels of directories", "max_depth"),
        };
        WalkError::OverBudget(OverBudget {
            root: root.to_path_buf(),
            which,
            limit,
            what,
            key,
        })
    }
}

/// Which bound a tree went over; also the `reason` it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Entries,
    Bytes,
    Depth,
}

impl Limit {
    /// The `rejected_requests_total` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::Entries => "manifest_entries",
            Limit::Bytes => "manifest_bytes",
            Limit::Depth => "manifest_depth",
        }
    }
}

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("cannot read manifests at {}: {error}", path.display())]
    Io {
        path: PathBuf,
        // Not named `source`, which would make it the error's source: the
        // message already says it, and error chains would print it twice.
        error: std::io::Error,
    },
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
}

/// A tree over one bound of its [`Budget`]. The message names the bound,
/// not the count reached, so a tree that stays over budget reads the same at
/// every reload (and is reported once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} has more than {limit} {what} (`reload.limits.{key}`); not loaded",
    root.display()
)]
pub struct OverBudget {
    pub root: PathBuf,
    pub which: Limit,
    pub limit: u64,
    what: &'static str,
    key: &'static str,
}

/// A regular file found by the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub len: u64,
    /// Modification time in Unix nanoseconds (0 when unknown).
    pub modified_ns: u128,
}

/// An entry the walk did not follow, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: &'static str,
}

/// What a walk found. Paths are relative to the root and use the names
/// walked (a file reached through a symlink inside the root keeps the
/// symlink's path). Directories and files whose name starts with `.` below
/// the root (`.git`, editor state) are not visited.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// The root as given.
    pub root: PathBuf,
    /// The root is a single file (a plain manifest); `files` then holds it
    /// under an empty relative path.
    pub single_file: bool,
    pub files: BTreeMap<PathBuf, FileInfo>,
    pub dirs: BTreeSet<PathBuf>,
    pub skipped: Vec<Skipped>,
    /// Files and directories visited (what `max_entries` bounds).
    pub entries: usize,
    /// Bytes of YAML files (what `max_bytes` bounds).
    pub yaml_bytes: u64,
}

impl Tree {
    /// Whether `relative` is a regular file of the tree.
    pub fn is_file(&self, relative: &Path) -> bool {
        self.files.contains_key(relative)
    }

    /// Whether `relative` is a directory of the tree (the root is `""`).
    pub fn is_dir(&self, relative: &Path) -> bool {
        relative.as_os_str().is_empty() || self.dirs.contains(relative)
    }

    /// The directories directly below `relative`, in name order.
    pub fn subdirs<'a>(&'a self, relative: &'a Path) -> impl Iterator<Item = &'a Path> + 'a {
        self.dirs
            .range::<Path, _>((
                std::ops::Bound::Excluded(relative),
                std::ops::Bound::Unbounded,
            ))
            .map(PathBuf::as_path)
            .take_while(move |d| d.starts_with(relative))
            .filter(move |d| d.parent() == Some(relative))
    }
}

/// Whether `path` names a YAML file by its extension.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Walks `root` (a directory or a single file) within `budget`.
pub fn walk(root: &Path, budget: &Budget) -> Result<Tree, WalkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| WalkError::Io { path, error }
    };
    let meta = std::fs::metadata(root).map_err(io(root))?;
    let mut tree = Tree {
        root: root.to_path_buf(),
        ..Tree::default()
    };
    if !meta.is_dir() {
        if meta.len() > budget.max_bytes {
            return Err(budget.over(root, Limit::Bytes));
        }
        tree.single_file = true;
        tree.entries = 1;
        tree.yaml_bytes = meta.len();
        tree.files.insert(PathBuf::new(), info(&meta));
        return Ok(tree);
    }
    let mut walker = Walker {
        budget,
        canonical_root: std::fs::canonicalize(root).map_err(io(root))?,
        visited: HashSet::from([(meta.dev(), meta.ino())]),
        tree,
    };
    walker.dir(Path::new(""), 0)?;
    Ok(walker.tree)
}

struct Walker<'b> {
    budget: &'b Budget,
    canonical_root: PathBuf,
    /// (device, inode) of every directory entered.
    visited: HashSet<(u64, u64)>,
    tree: Tree,
}

impl Walker<'_> {
    fn over(&self, which: Limit) -> WalkError {
        self.budget.over(&self.tree.root, which)
    }

    fn skip(&mut self, path: PathBuf, reason: &'static str) {
        self.tree.skipped.push(Skipped { path, reason });
    }

    fn dir(&mut self, relative: &Path, depth: usize) -> Result<(), WalkError> {
        if depth > self.budget.max_depth {
            return Err(self.over(Limit::Depth));
        }
        let absolute = self.tree.root.join(relative);
        let io = |error| WalkError::Io {
            path: absolute.clone(),
            error,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&absolute).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            self.tree.entries += 1;
            if self.tree.entries > self.budget.max_entries {
                return Err(self.over(Limit::Entries));
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            let child = relative.join(&name);
            let path = absolute.join(&name);
            let Some(meta) = self.follow(&path)? else {
                continue;
            };
            if meta.is_dir() {
                if !self.visited.insert((meta.dev(), meta.ino())) {
                    self.skip(
                        path,
                        "symlink to a directory already walked (a cycle or a second link); \
                         not followed",
                    );
                    continue;
                }
                self.tree.dirs.insert(child.clone());
                self.dir(&child, depth + 1)?;
            } else if meta.is_file() {
                if is_yaml(&child) {
                    self.tree.yaml_bytes += meta.len();
                    if self.tree.yaml_bytes > self.budget.max_bytes {
                        return Err(self.over(Limit::Bytes));
                    }
                }
                self.tree.files.insert(child, info(&meta));
            } else {
                self.skip(path, "not a regular file or directory; ignored");
            }
        }
        Ok(())
    }

    /// The metadata of `path`, through a symlink only when its target is
    /// inside the root; `None` when the entry is not followed.
    fn follow(&mut self, path: &Path) -> Result<Option<std::fs::Metadata>, WalkError> {
        let io = |error| WalkError::Io {
            path: path.to_path_buf(),
            error,
        };
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        if !meta.file_type().is_symlink() {
            return Ok(Some(meta));
        }
        let Ok(target) = std::fs::canonicalize(path) else {
            self.skip(
                path.to_path_buf(),
                "symlink to nothing (or a loop); not followed",
            );
            return Ok(None);
        };
        if !target.starts_with(&self.canonical_root) {
            self.skip(
                path.to_path_buf(),
                "symlink to a path outside the manifest root; not followed",
            );
            return Ok(None);
        }
        std::fs::metadata(path).map(Some).map_err(io)
    }
}

fn info(meta: &std::fs::Metadata) -> FileInfo {
    FileInfo {
        len: meta.len(),
        modified_ns: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
    }
}
