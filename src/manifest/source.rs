//! Where a manifest set comes from: a local directory, or a git repository
//! kept in a local clone. `sync` brings the files up to date and says which
//! version they are, so that a reload can tell whether anything changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::walk::{Budget, OverBudget, WalkError, walk};

/// `manifests_git` in the service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// What `git clone` accepts: `https://…`, `ssh://…`, `file:///…`.
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
    /// Longest time one `git` command may run before it is killed.
    /// Default `2m`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
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
pub enum SourceError {
    #[error("git {args}: {message}")]
    Git { args: String, message: String },
    #[error("git {args}: no answer within {timeout:?}; killed")]
    Timeout { args: String, timeout: Duration },
    // Not named `source`, so error chains do not print it twice.
    #[error("reading {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    OverBudget(OverBudget),
}

impl From<WalkError> for SourceError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { path, error } => SourceError::Io { path, error },
            WalkError::OverBudget(over) => SourceError::OverBudget(over),
        }
    }
}

pub enum ManifestSource {
    /// Files on disk, checked for changes by their fingerprint.
    Directory(PathBuf),
    /// A branch of a git repository, cloned into `checkout`.
    Git {
        config: GitConfig,
        checkout: PathBuf,
    },
}

impl ManifestSource {
    /// The manifest root to load.
    pub fn root(&self) -> PathBuf {
        match self {
            ManifestSource::Directory(path) => path.clone(),
            ManifestSource::Git { config, checkout } => checkout.join(&config.path),
        }
    }

    pub fn is_git(&self) -> bool {
        matches!(self, ManifestSource::Git { .. })
    }

    /// Brings the files up to date (clone or fetch for git) and returns
    /// their version. A directory is walked within `budget`.
    pub async fn sync(&self, budget: &Budget) -> Result<Version, SourceError> {
        match self {
            ManifestSource::Directory(path) => {
                let (path, budget) = (path.clone(), *budget);
                tokio::task::spawn_blocking(move || fingerprint(&path, &budget))
                    .await
                    .map_err(|e| SourceError::Io {
                        path: PathBuf::new(),
                        error: std::io::Error::other(e),
                    })?
                    .map(Version::Files)
            }
            ManifestSource::Git { config, checkout } => {
                sync_git(config, checkout).await.map(Version::Commit)
            }
        }
    }
}

async fn sync_git(config: &GitConfig, checkout: &Path) -> Result<String, SourceError> {
    let timeout = config.command_timeout;
    if !checkout.join(".git").exists() {
        if let Some(parent) = checkout.parent() {
            std::fs::create_dir_all(parent).map_err(|error| SourceError::Io {
                path: parent.to_path_buf(),
                error,
            })?;
        }
        // A half-finished clone from a crash would make `clone` refuse.
        let _ = std::fs::remove_dir_all(checkout);
        let target = checkout.to_string_lossy().into_owned();
        git(
            None,
            &[
                "clone",
                "--quiet",
                "--single-branch",
                "--branch",
                &config.branch,
                &config.url,
                &target,
            ],
            timeout,
        )
        .await?;
    } else {
        git(
            Some(checkout),
            &["fetch", "--quiet", "origin", &config.branch],
            timeout,
        )
        .await?;
        git(
            Some(checkout),
            &["reset", "--quiet", "--hard", "FETCH_HEAD"],
            timeout,
        )
        .await?;
    }
    let head = git(Some(checkout), &["rev-parse", "HEAD"], timeout).await?;
    Ok(head.trim().to_owned())
}

/// Runs `git` with no terminal prompts, killed after `timeout`.
async fn git(cwd: Option<&Path>, args: &[&str], timeout: Duration) -> Result<String, SourceError> {
    let shown = args.join(" ");
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => {
            return Err(SourceError::Timeout {
                args: shown,
                timeout,
            });
        }
        Ok(Err(e)) => {
            return Err(SourceError::Git {
                args: shown,
                message: format!("cannot run git: {e}"),
            });
        }
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SourceError::Git {
            args: shown,
            message: format!("{}: {}", output.status, stderr.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A digest over every file a load would walk below `root`: relative path,
/// size and modification time, in path order. Any edit, addition, removal or
/// rename changes it.
fn fingerprint(root: &Path, budget: &Budget) -> Result<String, SourceError> {
    let tree = walk(root, budget)?;
    let mut hash = Sha256::new();
    for (path, file) in &tree.files {
        hash.update(format!("{}\t{}\t{}\n", path.display(), file.len, file.modified_ns).as_bytes());
    }
    Ok(hex::encode(hash.finalize()))
}
