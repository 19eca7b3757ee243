//! Promotion manifests: loading a manifest set from disk and validating it.
//!
//! Two layouts are detected automatically (docs/design.md §4): *thin*
//! (`manifests/<project>/promoter-manifest.yaml` + `images/<project>/images.yaml`)
//! and *plain* (files holding both `registries:` and `images:`). Every problem
//! is collected with its file and line; a project with an error is excluded
//! while the others load, so one bad project never blinds the auditor.

mod layout;
pub mod origin;
mod schema;
mod validate;
pub mod walk;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reference::{Digest, RegistryPrefix, Tag};

/// The size check before a file is read, shared with `exceptions`.
pub(crate) use layout::check_file_size;
pub use layout::{Layout, LoadError, load, load_within};
/// The manifests' YAML reading (strings stay strings, duplicate keys are
/// errors, messages without library jargon), shared with `exceptions`.
pub(crate) use schema::{YamlError, parse as parse_yaml};
pub use walk::Budget;

/// All promotion manifests loaded from one root.
#[derive(Debug, Clone)]
pub struct ManifestSet {
    pub root: PathBuf,
    pub layout: Layout,
    /// The git commit the files were read at, when known.
    pub commit: Option<String>,
    /// Manifests that passed validation.
    pub manifests: Vec<Manifest>,
    /// Manifests left out because of an error. Their destinations are still
    /// known where they parsed, so events there are not mistaken for out of scope.
    pub excluded: Vec<Excluded>,
    /// Every problem found, errors and warnings, in file order.
    pub problems: Vec<Problem>,
}

impl ManifestSet {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }
}

/// One project: a source registry, its destinations and the images it promotes.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The project directory name (thin) or the file stem (plain).
    pub project: String,
    /// The file that lists the registries.
    pub manifest_file: Arc<Path>,
    /// The file that lists the images (the same file for plain manifests).
    pub images_file: Arc<Path>,
    pub source: RegistryPrefix,
    /// Distinct destinations, in file order.
    pub destinations: Vec<RegistryPrefix>,
    /// Images by name; repeated list items of one name are merged.
    pub images: Vec<Image>,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub promotions: Vec<Promotion>,
}

/// One `dmap` entry: a digest and the tags it is promoted with.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub digest: Digest,
    /// Empty means promoted without a tag.
    pub tags: Vec<Tag>,
    /// Line of the digest key in `images_file`.
    pub line: u32,
}

/// A project left out of the index because it failed validation.
#[derive(Debug, Clone)]
pub struct Excluded {
    pub project: String,
    pub manifest_file: Arc<Path>,
    pub destinations: Vec<RegistryPrefix>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The project is excluded.
    Error,
    /// Reported only; the project loads.
    Warning,
}

/// One thing wrong with the manifests, pointing at a file and line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    #[serde(serialize_with = "serialize_path")]
    pub file: Arc<Path>,
    pub line: Option<u32>,
    /// The project the problem excludes, if it belongs to one.
    pub project: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {level}: {}", self.message)
    }
}

fn serialize_path<S: serde::Serializer>(path: &Arc<Path>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.display())
}
