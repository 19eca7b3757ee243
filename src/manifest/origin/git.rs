//! Following a branch of a git repository: the blocking sync on its own
//! thread under a deadline, and the manifest tree of the tip written out as
//! files (a remote one first fetched through [`super::wire`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gix::ObjectId;

use super::wire::{ByteBudget, Wire};
use super::{GitConfig, OriginError, describe, shown_url};

/// Below the checkout: the written-out manifest tree and the commit it was
/// written from.
pub(super) const TREE_DIR: &str = "tree";
const TREE_COMMIT: &str = "tree.commit";

/// A sync abandoned at its deadline may still be running: each sync
/// writes to its own scratch directories, and swaps the tree in only if it
/// was not abandoned.
fn scratch_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "scratch-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the blocking sync on its own thread under the deadline. Past the
/// deadline the sync is told to stop and abandoned; its sockets time out
/// shortly after, so a server that never answers cannot keep it forever.
pub(super) async fn sync(config: &GitConfig, checkout: &Path) -> Result<String, OriginError> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let task = {
        let (config, checkout, interrupt) =
            (config.clone(), checkout.to_path_buf(), interrupt.clone());
        tokio::task::spawn_blocking(move || sync_blocking(&config, &checkout, &interrupt))
    };
    match tokio::time::timeout(config.command_timeout, task).await {
        Ok(joined) => joined.map_err(|e| git_error(config, describe(&e)))?,
        Err(_) => {
            interrupt.store(true, Ordering::Relaxed);
            Err(OriginError::Timeout {
                url: shown_url(&config.url),
                timeout: config.command_timeout,
            })
        }
    }
}

fn git_error(config: &GitConfig, message: impl std::fmt::Display) -> OriginError {
    OriginError::Git {
        url: shown_url(&config.url),
        message: message.to_string(),
    }
}

fn too_large(config: &GitConfig) -> OriginError {
    OriginError::TooLarge {
        url: shown_url(&config.url),
        limit: config.max_bytes,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OriginError + '_ {
    move |error| OriginError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn sync_blocking(
    config: &GitConfig,
    checkout: &Path,
    interrupt: &AtomicBool,
) -> Result<String, OriginError> {
    let url = gix::url::parse(gix::bstr::BStr::new(config.url.as_bytes()))
        .map_err(|e| git_error(config, describe(&e)))?;
    // A checkout left by the former `git clone` implementation.
    if checkout.join(".git").exists() {
        std::fs::remove_dir_all(checkout).map_err(io_error(checkout))?;
    }
    std::fs::create_dir_all(checkout).map_err(io_error(checkout))?;
    remove_stale_scratch(checkout);
    let written = std::fs::read_to_string(checkout.join(TREE_COMMIT))
        .ok()
        .filter(|_| checkout.join(TREE_DIR).is_dir())
        .and_then(|c| ObjectId::from_hex(c.trim().as_bytes()).ok());
    if url.scheme == gix::url::Scheme::File {
        let repo = open(&url.path.to_string()).map_err(|e| git_error(config, describe(&e)))?;
        let tip = branch_tip(&repo, &format!("refs/heads/{}", config.branch))
            .map_err(|e| git_error(config, describe(&e)))?
            .ok_or_else(|| git_error(config, format!("no branch {}", config.branch)))?;
        if written != Some(tip) {
            write_tree(config, checkout, &repo, tip, config.max_bytes, interrupt)?;
        }
        return Ok(tip.to_string());
    }
    let mut wire = Wire::connect(config, &url).map_err(|e| git_error(config, e))?;
    let mut budget = ByteBudget::new(config.max_bytes);
    let tip = wire.tip(&config.branch).map_err(|e| git_error(config, e))?;
    if written == Some(tip) {
        return Ok(tip.to_string());
    }
    // Objects are fetched into a scratch repository that lives only until
    // the tree is written out: nothing accumulates between syncs.
    let scratch = checkout.join(scratch_name());
    let result = init_bare(&scratch)
        .map_err(|e| super::wire::WireError::of(&e))
        .and_then(|repo| {
            wire.fetch_manifest_tree(&repo, tip, &config.path, &mut budget, interrupt)?;
            Ok(repo)
        })
        .map_err(|e| {
            if budget.spent {
                too_large(config)
            } else {
                git_error(config, e)
            }
        })
        .and_then(|repo| write_tree(config, checkout, &repo, tip, config.max_bytes, interrupt));
    let _ = std::fs::remove_dir_all(&scratch);
    result.map(|()| tip.to_string())
}

/// Scratch directories another process (a crash) left behind.
fn remove_stale_scratch(checkout: &Path) {
    let ours = format!("scratch-{}-", std::process::id());
    for entry in std::fs::read_dir(checkout).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("scratch-") && !name.starts_with(&ours) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn open(path: &dyn AsRef<Path>) -> gix::Result<gix::Repository> {
    // Isolated: no system or user git configuration (finding it would run
    // the `git` program), no credential helpers.
    gix::open_opts(path.as_ref(), gix::open::Options::isolated())
}

fn init_bare(path: &Path) -> gix::Result<gix::Repository> {
    Ok(gix::ThreadSafeRepository::init_opts(
        path,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )?
    .to_thread_local())
}

fn branch_tip(repo: &gix::Repository, name: &str) -> gix::Result<Option<ObjectId>> {
    Ok(repo
        .try_find_reference(name)?
        .and_then(|r| r.target().try_id().map(ToOwned::to_owned)))
}

/// Writes the manifest `path` of commit `tip` below `checkout/tree`. The new tree is written aside and swapped
/// in, so a failure leaves the previous one.
fn write_tree(
    config: &GitConfig,
    checkout: &Path,
    repo: &gix::Repository,
    tip: ObjectId,
    max_bytes: u64,
    interrupt: &AtomicBool,
) -> Result<(), OriginError> {
    let marker = checkout.join(TREE_COMMIT);
    let tree_dir = checkout.join(TREE_DIR);
    let staging = checkout.join(scratch_name());
    let target = staging.join(&config.path);
    let tree = repo
        .find_commit(tip)
        .and_then(|c| c.tree())
        .map_err(|e| git_error(config, format!("commit {tip}: {e}")))?;
    let tree = if config.path.as_os_str().is_empty() {
        tree
    } else {
        tree.lookup_entry_by_path(&config.path)
            .map_err(|e| git_error(config, describe(&e)))?
            .ok_or_else(|| {
                git_error(
                    config,
                    format!("commit {tip} has no {}", config.path.display()),
                )
            })?
            .object()
            .map_err(|e| git_error(config, format!("{}: {e}", config.path.display())))?
            .try_into_tree()
            .map_err(|e| git_error(config, format!("{}: {e}", config.path.display())))?
    };
    let written = write_subtree(
        config,
        repo,
        &tree,
        &target,
        &mut ByteBudget::new(max_bytes),
    );
    if written.is_err() || interrupt.load(Ordering::Relaxed) {
        let _ = std::fs::remove_dir_all(&staging);
        return written;
    }
    let _ = std::fs::remove_dir_all(&tree_dir);
    std::fs::rename(&staging, &tree_dir).map_err(io_error(&tree_dir))?;
    std::fs::write(&marker, tip.to_string()).map_err(io_error(&marker))
}

fn write_subtree(
    config: &GitConfig,
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    dir: &Path,
    budget: &mut ByteBudget,
) -> Result<(), OriginError> {
    use gix::object::tree::EntryKind;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    for entry in tree.iter() {
        let entry = entry.map_err(|e| git_error(config, format!("{}: {e}", dir.display())))?;
        let name = entry.filename().to_string();
        // Names come from the repository: never let one leave `dir`.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(git_error(
                config,
                format!("{}: unsafe name {name:?}", dir.display()),
            ));
        }
        let path = dir.join(&name);
        let object = || {
            entry
                .object()
                .map_err(|e| git_error(config, format!("{}: {e}", path.display())))
        };
        match entry.mode().kind() {
            EntryKind::Tree => {
                let subtree = object()?
                    .try_into_tree()
                    .map_err(|e| git_error(config, format!("{}: {e}", path.display())))?;
                write_subtree(config, repo, &subtree, &path, budget)?;
            }
            EntryKind::Blob | EntryKind::BlobExecutable => {
                // Sized before it is inflated into memory.
                let size = repo
                    .find_header(entry.object_id())
                    .map_err(|e| git_error(config, format!("{}: {e}", path.display())))?
                    .size();
                budget.spend(usize::try_from(size).unwrap_or(usize::MAX));
                if budget.spent {
                    return Err(too_large(config));
                }
                std::fs::write(&path, &object()?.data).map_err(io_error(&path))?;
            }
            // Symbolic links could point outside the tree, and submodules
            // hold no manifests: neither is written.
            EntryKind::Link | EntryKind::Commit => {}
        }
    }
    Ok(())
}
