//! Blobs of the OCI image layout: written to scratch while hashed, committed by rename
//! after size and digest are checked; "already exists" is success.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rayon::prelude::*;

use serde::Serialize;

use super::{Error, Result, Scratch, Store};
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::{parent_of, sync_dir};

/// A blob being written; nothing is visible in the store until [`BlobWriter::commit`].
pub struct BlobWriter<'s> {
    store: &'s Store,
    file: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter<'_> {
    /// Verifies the content against `expected` (digest and size) if given, then moves it
    /// into `blobs/sha256/`. Returns the digest and size.
    pub fn commit(self, expected: Option<(Digest, u64)>) -> Result<(Digest, u64)> {
        let (digest, size, buffered) = self.file.finish();
        if let Some((want, want_size)) = expected {
            if want != digest || want_size != size {
                return Err(Error::Corrupt {
                    what: "blob",
                    digest: want,
                    expected: format!("{want} ({want_size} bytes)"),
                    actual: format!("{digest} ({size} bytes)"),
                });
            }
        }
        let tmp = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(Error::io("write", self.store.ingest_dir()))?;
        self.store
            .commit_temp(tmp, &self.store.blob_path(&digest), 0o444)?;
        Ok((digest, size))
    }
}

impl Store {
    /// Starts writing a blob in `scratch`.
    pub fn blob_writer<'s>(&'s self, scratch: &Scratch) -> Result<BlobWriter<'s>> {
        let tmp = scratch.temp_file()?;
        Ok(BlobWriter {
            store: self,
            file: HashingWriter::new(BufWriter::with_capacity(256 * 1024, tmp)),
        })
    }

    /// Whether blob `digest` is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of blob `digest` on disk (not checked against anything).
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound(digest.oci())),
            Err(e) => Err(Error::Io {
                action: "read",
                path,
                source: e,
            }),
        }
    }

    /// Copies blob `digest` to `dest` (a new file; a reflink where the filesystem can),
    /// for writing it into another OCI layout.
    pub fn copy_blob_to(&self, digest: &Digest, dest: &Path) -> Result<()> {
        reflink_copy::reflink_or_copy(self.blob_path(digest), dest)
            .map(|_| ())
            .map_err(Error::io("write", dest))
    }

    /// Rehashes every file in the blob directory. Returns how many there are and the
    /// names of those whose content does not match their name (or whose name is not a
    /// digest).
    pub fn verify_blobs(&self) -> Result<(u64, Vec<String>)> {
        let dir = self.blobs_dir();
        let names: Vec<String> = fs::read_dir(&dir)
            .map_err(Error::io("read", &dir))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let bad = names
            .par_iter()
            .filter(|name| {
                let ok = Digest::parse(name).ok().and_then(|d| {
                    File::open(dir.join(name))
                        .ok()
                        .and_then(|f| Digest::of_reader(f).ok())
                        .map(|(a, _)| a == d)
                });
                ok != Some(true)
            })
            .cloned()
            .collect();
        Ok((names.len() as u64, bad))
    }

    /// Every blob in the store with its size (for finding unreferenced ones).
    pub fn blob_list(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.blobs_dir();
        let mut out: Vec<(Digest, u64)> = fs::read_dir(&dir)
            .map_err(Error::io("read", &dir))?
            .flatten()
            .filter_map(|e| {
                let digest = Digest::parse(&e.file_name().to_string_lossy()).ok()?;
                Some((digest, e.metadata().ok()?.len()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes blob `digest` (nothing references it; the caller made sure).
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        super::remove_file_if_there(&path)
    }

    /// Commits a complete, verified file (a finished download) as blob `digest`.
    pub fn commit_file(&self, path: &std::path::Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            let _ = fs::remove_file(path);
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o444))
            .map_err(Error::io("set permissions on", path))?;
        fs::rename(path, &dest).map_err(Error::io("commit", &dest))
    }

    /// Stores `bytes` as a blob. Returns its digest and size.
    pub fn put_blob(&self, scratch: &Scratch, bytes: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok((digest, bytes.len() as u64));
        }
        let mut w = self.blob_writer(scratch)?;
        w.write_all(bytes)
            .map_err(Error::io("write", scratch.dir()))?;
        w.commit(None)
    }

    /// Stores `value` as canonical JSON. Returns its digest, size and bytes.
    pub fn put_json_blob<T: Serialize>(
        &self,
        scratch: &Scratch,
        value: &T,
    ) -> Result<(Digest, u64, Vec<u8>)> {
        let bytes = crate::json::to_canonical_vec(value)
            .map_err(|e| Error::io("serialise", scratch.dir())(e.into()))?;
        let (digest, size) = self.put_blob(scratch, &bytes)?;
        Ok((digest, size, bytes))
    }

    /// Opens blob `digest` for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound(digest.oci())
            } else {
                Error::Io {
                    action: "open",
                    path,
                    source: e,
                }
            }
        })
    }

    /// Reads a whole (small) blob and checks its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound(digest.oci())
            } else {
                Error::Io {
                    action: "read",
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::Corrupt {
                what: "blob",
                digest: *digest,
                expected: digest.oci(),
                actual: actual.oci(),
            });
        }
        Ok(bytes)
    }

    /// Moves a finished temporary file to `dest` with `mode`, unless `dest` exists
    /// already (then the temporary is dropped: same name means same content).
    ///
    /// Not fsynced one by one (that costs milliseconds per file): whoever makes content
    /// reachable (a tag, a space state) calls [`Store::sync`] first.
    pub(crate) fn commit_temp(
        &self,
        tmp: tempfile::NamedTempFile,
        dest: &std::path::Path,
        mode: u32,
    ) -> Result<()> {
        // fchmod on the open file, then one rename that refuses to replace: no stat
        // of the destination and no mkdir unless its directory is missing (hot paths:
        // every file a layer extraction adds goes through here).
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(Error::io("set permissions on", tmp.path()))?;
        let committed = |e: tempfile::PersistError| -> Result<Option<tempfile::NamedTempFile>> {
            match e.error.kind() {
                io::ErrorKind::AlreadyExists => Ok(None), // same name, same content
                io::ErrorKind::NotFound => Ok(Some(e.file)),
                _ => Err(Error::Io {
                    action: "commit",
                    path: dest.to_path_buf(),
                    source: e.error,
                }),
            }
        };
        let Some(tmp) = (match tmp.persist_noclobber(dest) {
            Ok(_) => return Ok(()),
            Err(e) => committed(e)?,
        }) else {
            return Ok(());
        };
        let dir = parent_of(dest);
        fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
        match tmp.persist_noclobber(dest) {
            Ok(_) => Ok(()),
            Err(e) => committed(e).map(|_| ()),
        }
    }

    /// Flushes everything written to the store's filesystem, so that what a tag or a
    /// space state is about to reference survives a power cut.
    pub fn sync(&self) -> Result<()> {
        let dir = fs::File::open(&self.root).map_err(Error::io("open", &self.root))?;
        // SAFETY: syncfs only reads the descriptor, which lives until the end of this scope.
        let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        if rc != 0 {
            return Err(Error::io("sync", &self.root)(io::Error::last_os_error()));
        }
        let _ = sync_dir(&self.root);
        Ok(())
    }
}
