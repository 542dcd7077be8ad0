//! The ingest area: one private scratch directory per process, where blobs and files are
//! assembled before they are renamed into the store. A process holds a lock on its
//! scratch directory for as long as it lives; directories whose lock is free belong to
//! processes that are gone (crashed or killed) and are removed by the next one, with
//! the directory outside the store the process noted it was creating (a new space's
//! temporary, [`Scratch::own_dir`]).
//!
//! Every process with a scratch directory also holds the shared *writers* lock: `check
//! --repair` removes unreferenced blobs and CAS files only when it can take that lock
//! exclusively, so never a blob a running pull has committed but not tagged yet.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Error, Result, Store};
use crate::fsutil::{remove_any, FileLock};

/// The directory in the ingest area holding interrupted downloads, by blob digest.
pub const PARTIAL_DIR: &str = "partial";

/// The note in a scratch directory naming the directory its owner is creating outside
/// the store.
const OWNED_NOTE: &str = "owned-dir";

/// What names a directory [`Scratch::own_dir`] may note: a space's temporary
/// (`.<name>.envoci-<hex>`, see `space::temp`). Nothing else is ever removed for a
/// dead process.
const OWNED_MARK: &str = ".envoci-";

/// A private scratch directory in the store's ingest area, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    lock: Option<FileLock>,
    _writers: FileLock,
}

/// The scratch directory of a process that is gone, as `check` reports it.
#[derive(Clone, Debug)]
pub struct StaleScratch {
    /// The directory.
    pub dir: PathBuf,
    /// Bytes in it.
    pub bytes: u64,
    /// The directory outside the store the process was creating (a new space's
    /// temporary), if it is still there, and its bytes.
    pub owned: Option<(PathBuf, u64)>,
}

impl Scratch {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Notes that this process is about to create `dir` outside the store (a new space's
    /// temporary, named `.<name>.envoci-<hex>`): if the process dies, whoever removes
    /// its scratch directory removes `dir` too.
    pub fn own_dir(&self, dir: &Path) -> Result<()> {
        let note = self.dir.join(OWNED_NOTE);
        crate::fsutil::write_atomic(&note, dir.as_os_str().as_encoded_bytes())
            .map_err(Error::io("write", note))
    }

    /// A new, uniquely named temporary file in the scratch directory.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("tmp-")
            .tempfile_in(&self.dir)
            .map_err(Error::io("create a file in", &self.dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove_any(&self.dir);
        if let Some(lock) = self.lock.take() {
            let path = lock.path().to_path_buf();
            let _ = fs::remove_file(&path);
            drop(lock);
        }
    }
}

impl Store {
    /// Creates this process's scratch directory, first removing those of dead processes.
    pub fn scratch(&self) -> Result<Scratch> {
        let writers = self.lock_path("writers");
        let writers = FileLock::shared(&writers).map_err(Error::io("lock", writers))?;
        self.clean_stale_scratch();
        let name = format!("{}-{:016x}", std::process::id(), rand_u64());
        let lock = self.lock(&format!("ingest-{name}"))?;
        let dir = self.ingest_dir().join(&name);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        Ok(Scratch {
            dir,
            lock: Some(lock),
            _writers: writers,
        })
    }

    /// Where an interrupted download of blob `digest` is kept for resuming.
    pub(super) fn partial_path(&self, digest: &crate::digest::Digest) -> PathBuf {
        self.ingest_dir().join(PARTIAL_DIR).join(digest.hex())
    }

    /// Takes the exclusive lock of the interrupted download of blob `digest`, held while
    /// one process continues it.
    pub(super) fn lock_partial(&self, digest: &crate::digest::Digest) -> Result<FileLock> {
        self.lock(&format!("partial-{}", digest.hex()))
    }

    /// Removes scratch directories whose owner is gone, and the directory each noted
    /// it was creating. Returns how many were removed.
    pub fn clean_stale_scratch(&self) -> usize {
        let mut removed = 0;
        self.each_stale_scratch(|dir, owned| {
            if let Some(owned) = owned {
                let _ = remove_any(&owned);
            }
            if remove_any(dir).is_ok() {
                removed += 1;
            }
            true
        });
        removed
    }

    /// The scratch directories whose owner is gone, with their sizes (nothing removed).
    pub fn stale_scratch(&self) -> Vec<StaleScratch> {
        let mut stale = Vec::new();
        self.each_stale_scratch(|dir, owned| {
            stale.push(StaleScratch {
                dir: dir.to_path_buf(),
                bytes: tree_size(dir),
                owned: owned.map(|o| {
                    let bytes = tree_size(&o);
                    (o, bytes)
                }),
            });
            false
        });
        stale.sort_by(|a, b| a.dir.cmp(&b.dir));
        stale
    }

    /// Calls `visit(dir, owned)` for each scratch directory whose owner is gone, with its
    /// lock held; the lock file is removed when `visit` returns true (it removed `dir`).
    fn each_stale_scratch(&self, mut visit: impl FnMut(&Path, Option<PathBuf>) -> bool) {
        let Ok(entries) = fs::read_dir(self.ingest_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == PARTIAL_DIR {
                continue; // interrupted downloads are kept for resuming
            }
            let lock_path = self.lock_path(&format!("ingest-{name}"));
            if let Ok(Some(_lock)) = FileLock::try_exclusive(&lock_path) {
                let dir = entry.path();
                if visit(&dir, owned_dir(&dir)) {
                    let _ = fs::remove_file(&lock_path);
                }
            }
        }
    }

    /// Takes the writers lock exclusively if no process is writing to the store (none
    /// holds a scratch directory), without waiting.
    pub fn try_lock_writers(&self) -> Result<Option<FileLock>> {
        let path = self.lock_path("writers");
        FileLock::try_exclusive(&path).map_err(Error::io("lock", path))
    }
}

/// The directory a dead process's scratch `dir` notes it was creating, if it is one
/// [`Scratch::own_dir`] may name and it is still there.
fn owned_dir(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let bytes = fs::read(dir.join(OWNED_NOTE)).ok()?;
    let owned = PathBuf::from(std::ffi::OsString::from_vec(bytes));
    let name = owned.file_name()?.to_string_lossy().into_owned();
    let is_dir = fs::symlink_metadata(&owned).is_ok_and(|m| m.is_dir());
    (owned.is_absolute() && name.starts_with('.') && name.contains(OWNED_MARK) && is_dir)
        .then_some(owned)
}

/// Bytes in the regular files below `dir` (links not followed).
pub(super) fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .fold(0u64, |sum, m| sum.saturating_add(m.len()))
}

/// A random number for unique names (no need for a crypto RNG).
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
