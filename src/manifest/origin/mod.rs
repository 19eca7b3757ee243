//! Where a manifest set comes from: a local directory, or a branch of a git
//! repository followed in process (gitoxide; no `git` program is needed).
//! `sync` brings the files up to date and says which version they are, so
//! that a reload can tell whether anything changed.
//!
//! A remote branch is fetched shallow (the tip commit only) into a bare
//! repository, and only the manifest `path` of the tip is written out as
//! files; a poll that finds the tip unchanged stops after the reference
//! listing. A `file://` repository is read in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::walk::{Budget, OverBudget, WalkError, walk};

mod git;
mod wire;

/// `manifests_git` in the service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// `https://…`, `http://…`, `git://…` or `file:///…`.
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// The manifest root inside the repository (`registry.k8s.io` in
    /// kubernetes/k8s.io); empty for the repository root.
    #[serde(default)]
    pub path: PathBuf,
    /// How often the branch is fetched. Default `1m`.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Longest time one sync (connect, list, fetch, write out) may take;
    /// also the socket read/write timeout. Default `2m`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Name of an environment variable holding a token for a private
    /// repository over https (sent as `x-access-token:<token>`).
    pub token_env: Option<String>,
    /// A file holding that token, read at every sync so that a rotated
    /// token (GitHub app tokens live an hour) is picked up.
    pub token_file: Option<PathBuf>,
    /// The most one sync may receive from the server, and the most the
    /// manifest tree it writes out may hold. Default 256 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_branch() -> String {
    "main".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_bytes() -> u64 {
    256 << 20
}

/// A version of the files: the git commit, or for a directory a digest of
/// every file's path, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Commit(String),
    Files(String),
}

impl Version {
    pub fn commit(&self) -> Option<&str> {
        match self {
            Version::Commit(c) => Some(c),
            Version::Files(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("git {url}: {message}")]
    Git { url: String, message: String },
    #[error("git {url}: no answer within {timeout:?}; abandoned")]
    Timeout { url: String, timeout: Duration },
    #[error(
        "git {url}: more than {limit} bytes to fetch or write (manifests_git.max_bytes); refused"
    )]
    TooLarge { url: String, limit: u64 },
    // Not named `source`, so error chains do not print it twice.
    #[error("reading {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    OverBudget(OverBudget),
}

impl From<WalkError> for OriginError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { path, error } => OriginError::Io { path, error },
            WalkError::OverBudget(over) => OriginError::OverBudget(over),
        }
    }
}

pub enum ManifestOrigin {
    /// Files on disk, checked for changes by their fingerprint.
    Directory(PathBuf),
    /// A branch of a git repository; the manifest tree is written below
    /// `checkout`.
    Git {
        config: GitConfig,
        checkout: PathBuf,
    },
}

impl ManifestOrigin {
    /// The manifest root to load.
    pub fn root(&self) -> PathBuf {
        match self {
            ManifestOrigin::Directory(path) => path.clone(),
            ManifestOrigin::Git { config, checkout } => {
                checkout.join(git::TREE_DIR).join(&config.path)
            }
        }
    }

    pub fn is_git(&self) -> bool {
        matches!(self, ManifestOrigin::Git { .. })
    }

    /// Brings the files up to date (fetch for git) and returns their
    /// version. A directory is walked within `budget`.
    pub async fn sync(&self, budget: &Budget) -> Result<Version, OriginError> {
        match self {
            ManifestOrigin::Directory(path) => {
                let (path, budget) = (path.clone(), *budget);
                tokio::task::spawn_blocking(move || fingerprint(&path, &budget))
                    .await
                    .map_err(|e| OriginError::Io {
                        path: PathBuf::new(),
                        error: std::io::Error::other(e),
                    })?
                    .map(Version::Files)
            }
            ManifestOrigin::Git { config, checkout } => {
                git::sync(config, checkout).await.map(Version::Commit)
            }
        }
    }
}

impl GitConfig {
    /// The URL as errors and messages may show it (credentials masked).
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }
}

/// The URL without credentials written into it (`https://user:secret@…`):
/// errors end up in findings and logs.
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// An error with its causes: gitoxide's own text is often only the step
/// that failed.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A digest over every file a load would walk below `root`: relative path,
/// size and modification time, in path order. Any edit, addition, removal or
/// rename changes it.
fn fingerprint(root: &Path, budget: &Budget) -> Result<String, OriginError> {
    let tree = walk(root, budget)?;
    let mut hash = Sha256::new();
    for (path, file) in &tree.files {
        hash.update(format!("{}\t{}\t{}\n", path.display(), file.len, file.modified_ns).as_bytes());
    }
    Ok(hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn credentials_in_a_url_are_not_shown() {
        assert_eq!(
            shown_url("https://x-access-token:ghs_secret@github.com/org/repo"),
            "https://***@github.com/org/repo"
        );
        assert_eq!(
            shown_url("https://github.com/org/user@repo"),
            "https://github.com/org/user@repo"
        );
        assert_eq!(
            shown_url("git://127.0.0.1:9418/r"),
            "git://127.0.0.1:9418/r"
        );
    }
}
