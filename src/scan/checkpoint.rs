//! Where a sweep's checkpoint lives: nowhere (not resumable), a file in a
//! state directory (one process, or `scan` beside `serve` on one data
//! directory), or the findings store (replicas sharing one store, so that
//! any of them resumes what another started).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CHECKPOINT_FILE, Checkpoint, SWEEP_LOCK, ScanError};
use crate::findings::{Backend, Store, now_ms, off_thread};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CheckpointAt {
    /// No checkpoint: an interrupted sweep starts again.
    #[default]
    Nowhere,
    /// [`CHECKPOINT_FILE`] in this directory.
    Dir(PathBuf),
    /// The findings store the sweep records in.
    Store,
}

impl CheckpointAt {
    /// Where `serve` keeps it: in a store shared by replicas, else in
    /// `<data_dir>/scan`.
    pub fn for_store(backend: Backend, data_dir: &Path) -> CheckpointAt {
        match backend {
            Backend::Postgres => CheckpointAt::Store,
            Backend::Sqlite => CheckpointAt::Dir(data_dir.join("scan")),
        }
    }

    pub(super) async fn read(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<Option<Checkpoint>, ScanError> {
        match self {
            CheckpointAt::Nowhere => Ok(None),
            CheckpointAt::Dir(dir) => read_checkpoint(dir),
            CheckpointAt::Store => {
                let body = off_thread(store, |s| s.scan_checkpoint(SWEEP_LOCK))
                    .await
                    .map_err(ScanError::CheckpointStore)?;
                Ok(body.and_then(|body| parse(&body, "the findings store")))
            }
        }
    }

    pub(super) async fn write(
        &self,
        store: &Arc<dyn Store>,
        checkpoint: &Checkpoint,
    ) -> Result<(), ScanError> {
        match self {
            CheckpointAt::Nowhere => Ok(()),
            CheckpointAt::Dir(dir) => write_checkpoint(dir, checkpoint),
            CheckpointAt::Store => {
                // Plain data: serialising cannot fail.
                let body = serde_json::to_string(checkpoint).expect("a checkpoint serialises");
                off_thread(store, move |s| {
                    s.set_scan_checkpoint(SWEEP_LOCK, Some(&body), now_ms())
                })
                .await
                .map_err(ScanError::CheckpointStore)
            }
        }
    }

    pub(super) async fn remove(&self, store: &Arc<dyn Store>) -> Result<(), ScanError> {
        match self {
            CheckpointAt::Nowhere => Ok(()),
            CheckpointAt::Dir(dir) => remove_checkpoint(dir),
            CheckpointAt::Store => {
                off_thread(store, |s| s.set_scan_checkpoint(SWEEP_LOCK, None, now_ms()))
                    .await
                    .map_err(ScanError::CheckpointStore)
            }
        }
    }
}

/// An unreadable checkpoint only costs a fresh sweep.
fn parse(bytes: &str, place: &str) -> Option<Checkpoint> {
    match serde_json::from_str(bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(place, error = %e, "ignoring an unreadable scan checkpoint");
            None
        }
    }
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, ScanError> {
    let path = checkpoint_path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(parse(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ScanError::Checkpoint { path, source }),
    }
}

fn write_checkpoint(dir: &Path, checkpoint: &Checkpoint) -> Result<(), ScanError> {
    let path = checkpoint_path(dir);
    let fail = |source| ScanError::Checkpoint {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(checkpoint).map_err(|e| fail(e.into()))?;
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, &path).map_err(fail)
}

fn remove_checkpoint(dir: &Path) -> Result<(), ScanError> {
    let path = checkpoint_path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ScanError::Checkpoint { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::SqliteStore;

    fn sample() -> Checkpoint {
        Checkpoint {
            sweep_id: "s".into(),
            targets: vec!["r/p".into()],
            catalog: false,
            completed: vec!["r/p/a".into()],
        }
    }

    #[test]
    fn checkpoint_round_trips_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), None);
        let c = sample();
        write_checkpoint(dir.path(), &c).unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), Some(c));
        std::fs::write(checkpoint_path(dir.path()), b"not json").unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), None);
        remove_checkpoint(dir.path()).unwrap();
        remove_checkpoint(dir.path()).unwrap();
        assert!(!checkpoint_path(dir.path()).exists());
    }

    #[tokio::test]
    async fn a_checkpoint_in_the_store_round_trips_and_is_removed() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let at = CheckpointAt::Store;
        assert_eq!(at.read(&store).await.unwrap(), None);
        at.write(&store, &sample()).await.unwrap();
        assert_eq!(at.read(&store).await.unwrap(), Some(sample()));
        store
            .set_scan_checkpoint(SWEEP_LOCK, Some("not json"), 1)
            .unwrap();
        assert_eq!(at.read(&store).await.unwrap(), None);
        at.remove(&store).await.unwrap();
        assert_eq!(store.scan_checkpoint(SWEEP_LOCK).unwrap(), None);
    }
}
