//! The ingest area: one private scratch directory per process, where blobs and files are
//! assembled before they are renamed into the store. A process holds a lock on its
//! scratch directory for as long as it lives; directories whose lock is free belong to
//! processes that are gone (crashed or killed) and are removed by the next one.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Error, Result, Store};
use crate::fsutil::{remove_any, FileLock};

/// The directory in the ingest area holding interrupted downloads, by blob digest.
pub const PARTIAL_DIR: &str = "partial";

/// A private scratch directory in the store's ingest area, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    lock: Option<FileLock>,
}

impl Scratch {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        self.clean_stale_scratch();
        let name = format!("{}-{:016x}", std::process::id(), rand_u64());
        let lock = self.lock(&format!("ingest-{name}"))?;
        let dir = self.ingest_dir().join(&name);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        Ok(Scratch {
            dir,
            lock: Some(lock),
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

    /// Removes scratch directories whose owner is gone. Returns how many were removed.
    pub fn clean_stale_scratch(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.ingest_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == PARTIAL_DIR {
                continue; // interrupted downloads are kept for resuming
            }
            let lock_path = self.lock_path(&format!("ingest-{name}"));
            if let Ok(Some(_lock)) = FileLock::try_exclusive(&lock_path) {
                if remove_any(&entry.path()).is_ok() {
                    removed += 1;
                }
                let _ = fs::remove_file(&lock_path);
            }
        }
        removed
    }
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
