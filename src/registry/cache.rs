//! The content-addressed manifest cache on disk, laid out as an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/<algorithm>/<hex>`) so that
//! skopeo, oras and umoci can read it.
//!
//! Digests are immutable, so an entry is valid forever; the only reasons to
//! drop one are corruption (detected on every read) and the size bound.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;

use super::stats::{Counter, Stats};
use crate::reference::Digest;

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
// Entries are addressed by digest only; an index listing every cached
// manifest would be rewritten on each insert for no reader's benefit.
const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

pub(crate) struct ManifestCache {
    root: PathBuf,
    /// Files larger than this cannot be manifests we wrote.
    max_entry_bytes: u64,
    bound: Option<Mutex<Lru>>,
    tmp_seq: AtomicU64,
}

/// Sizes and recency of the cached files, kept only when the cache is bounded.
struct Lru {
    max_bytes: u64,
    total: u64,
    tick: u64,
    entries: HashMap<Digest, (u64, u64)>,
}

impl ManifestCache {
    /// Opens (creating if needed) the layout at `root`, removes temporary
    /// files left by a crash, and, when bounded, measures what is there.
    pub(crate) fn open(
        root: &Path,
        max_entry_bytes: u64,
        max_bytes: Option<u64>,
    ) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs").join("sha256"))?;
        fs::create_dir_all(root.join("blobs").join("sha512"))?;
        write_if_missing(&root.join("oci-layout"), OCI_LAYOUT)?;
        write_if_missing(&root.join("index.json"), EMPTY_INDEX)?;
        let tmp = root.join(".tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let bound = match max_bytes {
            Some(max_bytes) => Some(Mutex::new(Lru::scan(root, max_bytes)?)),
            None => None,
        };
        Ok(Self {
            root: root.to_owned(),
            max_entry_bytes,
            bound,
            tmp_seq: AtomicU64::new(0),
        })
    }

    pub(crate) fn path_of(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// The cached manifest for `digest`, verified against it. A file whose
    /// content does not hash to its name is counted, logged, deleted and
    /// reported as a miss, so the caller refetches it.
    pub(crate) fn get(&self, digest: &Digest, stats: &Stats) -> Option<Bytes> {
        let path = self.path_of(digest);
        let bytes = match read_bounded(&path, self.max_entry_bytes) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                stats.bump(Counter::CacheMiss);
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.discard_corrupt(digest, &path, stats, &e.to_string());
                return None;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "manifest cache read failed");
                stats.bump(Counter::CacheMiss);
                return None;
            }
        };
        if !digest.verifies(&bytes) {
            self.discard_corrupt(digest, &path, stats, "content does not match its digest");
            return None;
        }
        stats.bump(Counter::CacheHit);
        if let Some(lru) = &self.bound {
            lock(lru).touch(digest);
        }
        Some(Bytes::from(bytes))
    }

    fn discard_corrupt(&self, digest: &Digest, path: &Path, stats: &Stats, why: &str) {
        tracing::warn!(%digest, path = %path.display(), why, "corrupt manifest cache entry deleted");
        stats.bump(Counter::CacheCorruption);
        stats.bump(Counter::CacheMiss);
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete corrupt cache entry");
        }
        if let Some(lru) = &self.bound {
            lock(lru).forget(digest);
        }
    }

    /// Stores verified `bytes` under `digest`. The file appears complete or
    /// not at all (temporary file + rename). No fsync: a file torn by a power
    /// loss fails verification on its next read and is refetched.
    pub(crate) fn put(&self, digest: &Digest, bytes: &[u8], stats: &Stats) -> io::Result<()> {
        let size = bytes.len() as u64;
        if self
            .bound
            .as_ref()
            .is_some_and(|lru| size > lock(lru).max_bytes)
        {
            return Ok(());
        }
        let tmp = self.root.join(".tmp").join(format!(
            "{}-{}-{}",
            digest.hex(),
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, self.path_of(digest))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        stats.bump(Counter::CacheWrite);
        if let Some(lru) = &self.bound {
            let evicted = lock(lru).insert(digest.clone(), size, &self.root);
            stats.add(Counter::CacheEviction, evicted);
        }
        Ok(())
    }
}

impl Lru {
    fn scan(root: &Path, max_bytes: u64) -> io::Result<Self> {
        let mut found = Vec::new();
        for algorithm in ["sha256", "sha512"] {
            for entry in fs::read_dir(root.join("blobs").join(algorithm))? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| format!("{algorithm}:{hex}").parse::<Digest>().ok())
                else {
                    continue;
                };
                let meta = entry.metadata()?;
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, digest, meta.len()));
            }
        }
        // File times order what was there before this process; reads since
        // then are ordered by the in-memory clock.
        found.sort();
        let mut lru = Lru {
            max_bytes,
            total: 0,
            tick: 0,
            entries: HashMap::new(),
        };
        for (_, digest, size) in found {
            lru.tick += 1;
            lru.total += size;
            lru.entries.insert(digest, (size, lru.tick));
        }
        Ok(lru)
    }

    fn touch(&mut self, digest: &Digest) {
        self.tick += 1;
        if let Some(e) = self.entries.get_mut(digest) {
            e.1 = self.tick;
        }
    }

    fn forget(&mut self, digest: &Digest) {
        if let Some((size, _)) = self.entries.remove(digest) {
            self.total -= size;
        }
    }

    /// Records an entry and evicts the least recently used ones beyond the
    /// bound, down to 90% of it so that eviction runs once per batch of
    /// inserts rather than on every one. Returns how many were evicted.
    fn insert(&mut self, digest: Digest, size: u64, root: &Path) -> u64 {
        self.forget(&digest);
        self.tick += 1;
        self.total += size;
        self.entries.insert(digest.clone(), (size, self.tick));
        if self.total <= self.max_bytes {
            return 0;
        }
        let low_water = self.max_bytes / 10 * 9;
        let mut by_age: Vec<(u64, Digest)> = self
            .entries
            .iter()
            .filter(|(d, _)| **d != digest)
            .map(|(d, (_, tick))| (*tick, d.clone()))
            .collect();
        by_age.sort();
        let mut evicted = 0;
        for (_, old) in by_age {
            if self.total <= low_water {
                break;
            }
            let path = root.join("blobs").join(old.algorithm()).join(old.hex());
            match fs::remove_file(&path) {
                Ok(()) => evicted += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cache eviction failed");
                    continue;
                }
            }
            self.forget(&old);
        }
        evicted
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The LRU bookkeeping is advisory; after a panic elsewhere it is still
    // good enough to keep using.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_if_missing(path: &Path, content: &str) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut f) => f.write_all(content.as_bytes()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads `path` unless it is absent (`None`) or larger than `max` (an
/// `InvalidData` error: nothing that large was ever written there).
fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes, more than any manifest", meta.len()),
        ));
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: Option<u64>) -> ManifestCache {
        ManifestCache::open(dir, 1 << 20, max).unwrap()
    }

    #[test]
    fn layout_files_exist_and_round_trip_works() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let cache = open(dir.path(), None);
        assert_eq!(
            fs::read_to_string(dir.path().join("oci-layout")).unwrap(),
            OCI_LAYOUT
        );
        assert!(dir.path().join("index.json").is_file());
        let body = b"{\"schemaVersion\":2}";
        let digest = Digest::sha256_of(body);
        assert_eq!(cache.get(&digest, &stats), None);
        cache.put(&digest, body, &stats).unwrap();
        assert!(dir.path().join("blobs/sha256").join(digest.hex()).is_file());
        assert_eq!(cache.get(&digest, &stats).as_deref(), Some(&body[..]));
        let s = stats.snapshot();
        assert_eq!((s.cache_hits, s.cache_misses, s.cache_writes), (1, 1, 1));
        assert!(
            fs::read_dir(dir.path().join(".tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn tampered_truncated_and_oversized_files_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let cache = open(dir.path(), None);
        let body = b"original manifest";
        let digest = Digest::sha256_of(body);
        for bad in [
            b"tampered manifest".to_vec(),
            b"orig".to_vec(),
            vec![b' '; 2 << 20],
        ] {
            fs::write(cache.path_of(&digest), &bad).unwrap();
            assert_eq!(cache.get(&digest, &stats), None);
            assert!(!cache.path_of(&digest).exists());
        }
        let s = stats.snapshot();
        assert_eq!(
            (s.cache_corruptions, s.cache_misses, s.cache_hits),
            (3, 3, 0)
        );
    }

    #[test]
    fn reopening_cleans_temporary_files_and_keeps_entries() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let body = b"kept";
        let digest = Digest::sha256_of(body);
        open(dir.path(), None).put(&digest, body, &stats).unwrap();
        fs::write(dir.path().join(".tmp/leftover"), b"half").unwrap();
        let cache = open(dir.path(), None);
        assert!(!dir.path().join(".tmp/leftover").exists());
        assert!(cache.get(&digest, &stats).is_some());
    }

    #[test]
    fn bound_evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let cache = open(dir.path(), Some(100));
        let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 40]).collect();
        let digests: Vec<Digest> = bodies.iter().map(|b| Digest::sha256_of(b)).collect();
        cache.put(&digests[0], &bodies[0], &stats).unwrap();
        cache.put(&digests[1], &bodies[1], &stats).unwrap();
        // Reading 0 makes 1 the oldest.
        assert!(cache.get(&digests[0], &stats).is_some());
        cache.put(&digests[2], &bodies[2], &stats).unwrap();
        assert!(!cache.path_of(&digests[1]).exists());
        assert!(cache.path_of(&digests[0]).exists());
        assert!(cache.path_of(&digests[2]).exists());
        assert_eq!(stats.snapshot().cache_evictions, 1);
        // A reopened cache measures what is on disk.
        let cache = open(dir.path(), Some(100));
        cache.put(&digests[3], &bodies[3], &stats).unwrap();
        assert_eq!(stats.snapshot().cache_evictions, 2);
        // An entry larger than the whole bound is not stored.
        let big = vec![9u8; 101];
        cache.put(&Digest::sha256_of(&big), &big, &stats).unwrap();
        assert!(!cache.path_of(&Digest::sha256_of(&big)).exists());
    }
}
