//! Resumable downloads: a blob being fetched lives in `ingest/partial/<hex>` — outside
//! the blob directory, so nobody sees it — until it is complete and matches its digest.
//! An interrupted download leaves its bytes there and the next attempt (in this process
//! or a later one) continues after them. One process at a time holds a partial (a lock
//! keyed by the digest), and the partial hashes what it holds as it grows, so
//! [`Partial::commit`] checks size and digest without reading the file again.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use sha2::Digest as _;

use super::{Error, Result, Store};
use crate::digest::Digest;
use crate::fsutil::FileLock;

/// A blob being downloaded, held exclusively by this process.
pub struct Partial {
    store: Store,
    digest: Digest,
    path: PathBuf,
    file: File,
    hasher: sha2::Sha256,
    len: u64,
    _lock: FileLock,
}

impl Store {
    /// Takes the partial download of blob `digest` (waiting while another process holds
    /// it), with what earlier attempts left already hashed. Blocking: call it off the
    /// async workers.
    pub fn partial(&self, digest: &Digest) -> Result<Partial> {
        let path = self.partial_path(digest);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
        }
        let lock = self.lock_partial(digest)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        let mut hasher = sha2::Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(Error::io("read", &path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Partial {
            store: self.clone(),
            digest: *digest,
            path,
            file,
            hasher,
            len,
            _lock: lock,
        })
    }
}

impl Partial {
    /// The blob this partial is for.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// How many bytes it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds nothing yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of what it holds so far.
    pub fn digest_so_far(&self) -> Digest {
        Digest(self.hasher.clone().finalize().into())
    }

    /// Drops what it holds, to start over (a server that ignored a `Range`).
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(Error::io("truncate", &self.path))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(Error::io("seek", &self.path))?;
        self.hasher = sha2::Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Appends the next bytes of the blob.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(Error::io("write", &self.path))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Removes the partial: its bytes cannot be right.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Makes the complete blob visible in the store, after checking that it holds
    /// exactly `size` bytes hashing to its digest; a partial that does not is removed and
    /// the mismatch returned (nothing is committed). "Already in the store" is success.
    pub fn commit(self, size: u64) -> Result<()> {
        let actual = self.digest_so_far();
        if self.len != size || actual != self.digest {
            let _ = fs::remove_file(&self.path);
            let (expected, found) = if self.len != size {
                (format!("{size} bytes"), format!("{} bytes", self.len))
            } else {
                (self.digest.oci(), actual.oci())
            };
            return Err(Error::Corrupt {
                what: "blob",
                digest: self.digest,
                expected,
                actual: found,
            });
        }
        self.store.commit_file(&self.path, &self.digest)
    }
}

/// An empty partial is no partial: asking what a download left leaves nothing behind.
impl Drop for Partial {
    fn drop(&mut self) {
        if self.len == 0 {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_is_continued_by_the_next_taker_and_committed_only_when_right() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let blob = b"hello, partial world".to_vec();
        let digest = Digest::of(&blob);
        let mut first = store.partial(&digest).unwrap();
        first.append(&blob[..7]).unwrap();
        drop(first); // interrupted
        let mut second = store.partial(&digest).unwrap();
        assert_eq!(second.len(), 7, "what the first attempt wrote is kept");
        second.append(&blob[7..]).unwrap();
        assert!(!store.has_blob(&digest), "nothing visible before commit");
        second.commit(blob.len() as u64).unwrap();
        assert_eq!(store.read_blob(&digest).unwrap(), blob);
    }

    #[test]
    fn a_wrong_partial_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let digest = Digest::of(b"the real content");
        let mut partial = store.partial(&digest).unwrap();
        partial.append(b"the fake content").unwrap();
        let err = partial.commit(16).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(!store.has_blob(&digest));
        assert!(
            store.partial(&digest).unwrap().is_empty(),
            "the bad bytes are gone"
        );
        let mut short = store.partial(&digest).unwrap();
        short.append(b"the real").unwrap();
        assert!(matches!(short.commit(16), Err(Error::Corrupt { .. })));
    }
}
