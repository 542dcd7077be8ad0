//! Writing planned paths into a space: directories first, then files in parallel, then
//! symbolic links (a link is never followed while writing). A file is linked from the
//! CAS by the [`Linker`](super::Linker), or, when it holds the placeholder, written as
//! a private copy relocated for the space's path. Every CAS file is checked before use
//! and its layer re-extracted if it is missing or damaged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::restore::Job;
use super::{link, Actual, Error, Method, PathRecord, PlanError, Report, Want};
use crate::digest::{Digest, HashingWriter};
use crate::pyc;
use crate::relocate::{self, FileMode};
use crate::store::{self, CasKey};

/// Inode and mode of each intact CAS file a restore uses.
type CasInodes = HashMap<CasKey, (u64, u32)>;

/// A bytecode file's source as its layer holds it, and as the space gets it.
type Sources = (Vec<u8>, Vec<u8>);

impl Job<'_> {
    /// Writes `wanted` paths below `root`: directories first, then files in parallel,
    /// then links. Repairs CAS files from their layers first if any is damaged.
    pub(super) fn write_paths(
        &self,
        root: &Path,
        wanted: &[(&String, &Want)],
        report: &mut Report,
    ) -> Result<BTreeMap<String, PathRecord>, Error> {
        let (repaired, inodes) = self.prepare_cas(wanted)?;
        report.repaired += repaired;
        // One list, sized once, and a map built from it in bulk: at 100k paths the
        // records are the restore's largest allocation.
        let mut records = Vec::with_capacity(wanted.len());
        write_dirs(root, wanted, &mut records)?;
        self.write_files(root, wanted, &inodes, &mut records)?;
        write_links(root, wanted, &mut records)?;
        for (_, record) in &records {
            if let PathRecord::File { method, .. } = record {
                *report
                    .methods
                    .entry(format!("{method:?}").to_lowercase())
                    .or_default() += 1;
            }
        }
        report.written += wanted.len() as u64;
        Ok(records.into_iter().collect())
    }

    /// Writes the files of `wanted` in parallel and appends their records to `records`.
    fn write_files(
        &self,
        root: &Path,
        wanted: &[(&String, &Want)],
        inodes: &CasInodes,
        records: &mut Vec<(String, PathRecord)>,
    ) -> Result<(), Error> {
        let files: Vec<(&String, &Want)> = wanted
            .iter()
            .filter(|(_, w)| matches!(w, Want::File { .. }))
            .copied()
            .collect();
        let unit = crate::progress::Unit::Files;
        self.progress.begin("restoring", files.len() as u64, unit);
        // The first failure is kept aside (the records then are not used), so that
        // the records go straight into `records`, in place.
        let failed = OnceLock::new();
        records.par_extend(files.par_iter().map(|(path, want)| {
            let written = match failed.get() {
                None => self.write_file(root, path, want, inodes),
                Some(_) => Ok(PathRecord::Dir), // given up: not written
            };
            self.progress.advance(1);
            let record = written.unwrap_or_else(|e| {
                let _ = failed.set(e);
                PathRecord::Dir
            });
            ((*path).clone(), record)
        }));
        self.progress.end();
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes one file and returns its record.
    fn write_file(
        &self,
        root: &Path,
        path: &str,
        want: &Want,
        inodes: &CasInodes,
    ) -> Result<PathRecord, Error> {
        let Want::File {
            key,
            size: cas_size,
            relocation,
        } = want
        else {
            unreachable!("only files are passed")
        };
        let full = root.join(path);
        let err = |source| Error::Write {
            path: full.clone(),
            source,
        };
        let (method, written) = match relocation {
            None => (self.link_file(key, &full)?, None),
            Some((FileMode::Pyc, placeholder)) if *cas_size <= pyc::MAX_SIZE => {
                let digest = self.relocate_pyc(key, &full, path, placeholder)?;
                (Method::Relocated, Some(digest))
            }
            Some((mode, placeholder)) => {
                let digest = self.relocate_file(key, &full, path, *mode, placeholder)?;
                (Method::Relocated, Some(digest))
            }
        };
        let (size, mode, ino) = match (method, inodes.get(key)) {
            // A hard link is the CAS file: its inode and mode are known already.
            (Method::Hardlink, Some(&(ino, mode))) => (*cas_size, mode, ino),
            _ => match Actual::read(&full).map_err(err)? {
                Actual::File {
                    size, mode, ino, ..
                } => (size, mode, ino),
                _ => return Err(err(io::Error::other("not a regular file after writing"))),
            },
        };
        Ok(PathRecord::File {
            digest: key.digest,
            exec: key.exec,
            relocation: relocation.clone(),
            written,
            size,
            cas_size: relocation.as_ref().map(|_| *cas_size),
            mode,
            ino,
            method,
        })
    }

    /// Puts CAS file `key` at `full` by the linker's method; returns the method used.
    fn link_file(&self, key: &CasKey, full: &Path) -> Result<Method, Error> {
        let cas = self.store.cas_link_source(key);
        self.linker.place(&cas, full, key.exec).map_err(|e| {
            if link::is_unsupported(&e) {
                Error::LinkUnsupported {
                    mode: self.linker.mode(),
                    path: full.to_path_buf(),
                }
            } else {
                Error::Write {
                    path: full.to_path_buf(),
                    source: e,
                }
            }
        })
    }

    /// Writes CAS file `key` at `full` as a private copy with `placeholder` replaced by
    /// the space's path, streamed in constant memory and hashed while written; returns
    /// the digest of what was written.
    fn relocate_file(
        &self,
        key: &CasKey,
        full: &Path,
        path: &str,
        mode: FileMode,
        placeholder: &str,
    ) -> Result<Digest, Error> {
        let cas = self.store.cas_link_source(key);
        let source = fs::File::open(&cas).map_err(store::Error::io("read", &cas))?;
        let write_err = |source| Error::Write {
            path: full.to_path_buf(),
            source,
        };
        let file = create_private(full, key.exec).map_err(write_err)?;
        let mut out = HashingWriter::new(io::BufWriter::new(file));
        relocate::relocate_stream(
            source,
            &mut out,
            mode,
            placeholder.as_bytes(),
            self.target_str.as_bytes(),
        )
        .map_err(|e| match e {
            relocate::Error::TooLong(e) => PlanError::TooLong {
                path: path.into(),
                max_len: e.max_len,
                target: self.target_str.into(),
                target_len: e.new_len,
            }
            .into(),
            relocate::Error::Read(e) => store::Error::io("read", &cas)(e).into(),
            relocate::Error::Write(e) => write_err(e),
        })?;
        let (digest, _, buffered) = out.finish();
        buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        finish_private(full, key.exec).map_err(write_err)?;
        Ok(digest)
    }

    /// Writes CAS file `key`, bytecode, at `full` with its strings relocated for the
    /// space's path and, if it matched its source in the layer, a header that matches
    /// the relocated source ([`crate::pyc::relocate`]); bytecode that cannot be read is
    /// written as it is. Returns the digest of what was written.
    fn relocate_pyc(
        &self,
        key: &CasKey,
        full: &Path,
        path: &str,
        placeholder: &str,
    ) -> Result<Digest, Error> {
        let content = self.store.cas_read(key)?;
        let sources = self.pyc_sources(path)?;
        let strings = pyc::Strings {
            from: placeholder.as_bytes(),
            to: self.target_str.as_bytes(),
            relative_to: None,
        };
        let mtime = crate::layer::LAYER_MTIME as i64;
        let sources = sources.as_ref().map(|(a, b)| (&a[..], &b[..], mtime));
        let bytes = match pyc::relocate(&content, &strings, sources) {
            Ok(rewritten) => rewritten.bytes,
            Err(_) => content,
        };
        let write_err = |source| Error::Write {
            path: full.to_path_buf(),
            source,
        };
        let mut file = create_private(full, key.exec).map_err(write_err)?;
        io::Write::write_all(&mut file, &bytes).map_err(write_err)?;
        drop(file);
        finish_private(full, key.exec).map_err(write_err)?;
        Ok(Digest::of(&bytes))
    }

    /// The source of bytecode file `path` as its layer holds it and as the space gets
    /// it (relocated, if it is), when the plan has one.
    fn pyc_sources(&self, path: &str) -> Result<Option<Sources>, Error> {
        let Some(Want::File {
            key,
            relocation,
            size,
        }) = self.pyc_source_want(path)
        else {
            return Ok(None);
        };
        if *size > pyc::MAX_SIZE {
            return Ok(None);
        }
        let layer = self.store.cas_read(key)?;
        let restored = match relocation {
            Some((mode, placeholder)) if *mode != FileMode::Pyc => {
                let to = self.target_str.as_bytes();
                match relocate::relocate(&layer, *mode, placeholder.as_bytes(), to) {
                    Ok(restored) => restored,
                    Err(_) => return Ok(None),
                }
            }
            _ => layer.clone(),
        };
        Ok(Some((layer, restored)))
    }

    /// The planned source file of bytecode file `path` (`d/__pycache__/m.TAG.pyc` →
    /// `d/m.py`), a [`Want::File`].
    fn pyc_source_want(&self, path: &str) -> Option<&Want> {
        let source = crate::ingest::attribute::pyc_source(path)?;
        self.plan
            .paths
            .get(&source)
            .filter(|w| matches!(w, Want::File { .. }))
    }

    /// Checks every CAS file about to be used and re-extracts the layers of any that
    /// is missing or damaged: by its metadata, because `check` found it damaged, or,
    /// with `--verify`, by a rehash. Returns the number of layers re-extracted and each
    /// file's inode and mode (what a hard link to it gets, so it need not be stat'ed
    /// again).
    fn prepare_cas(&self, wanted: &[(&String, &Want)]) -> Result<(u64, CasInodes), Error> {
        // Bytecode relocated reads its source too, written or not.
        let sources = wanted.iter().filter_map(|(path, w)| match w {
            Want::File {
                relocation: Some((FileMode::Pyc, _)),
                ..
            } => match self.pyc_source_want(path) {
                Some(Want::File { key, size, .. }) => Some((*key, *size)),
                _ => None,
            },
            _ => None,
        });
        let keys: Vec<(CasKey, u64)> = wanted
            .iter()
            .filter_map(|(_, w)| match w {
                Want::File { key, size, .. } => Some((*key, *size)),
                _ => None,
            })
            .chain(sources)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (mut inodes, bad) = self.stat_cas(&keys);
        let mut bad: HashSet<CasKey> = bad.into_iter().collect();
        // A damaged file with its size, mode and mtime intact: only a rehash tells.
        let intact: Vec<CasKey> = inodes.keys().copied().collect();
        let suspect: Vec<CasKey> = intact
            .par_iter()
            .filter(|k| {
                self.damaged.contains(k)
                    || (self.verify && self.store.cas_verify(k) != store::CasState::Ok)
            })
            .copied()
            .collect();
        bad.extend(suspect);
        if bad.is_empty() {
            return Ok((0, inodes));
        }
        inodes.retain(|k, _| !bad.contains(k));
        let repaired = self.repair_layers(&bad)?;
        self.store.forget_damaged(&bad)?;
        let again: Vec<(CasKey, u64)> = keys.into_iter().filter(|(k, _)| bad.contains(k)).collect();
        let (fixed, still_bad) = self.stat_cas(&again);
        if let Some(key) = still_bad.first() {
            return Err(store::Error::NotFound(format!(
                "{} (file of no layer of this catalog)",
                key.digest
            ))
            .into());
        }
        inodes.extend(fixed);
        Ok((repaired, inodes))
    }

    /// Quick-checks CAS files in parallel: the intact ones with inode and mode, and the
    /// missing or damaged ones. Files this process committed (a pull just now) are
    /// taken as they were written, without a `stat`.
    fn stat_cas(&self, keys: &[(CasKey, u64)]) -> (CasInodes, Vec<CasKey>) {
        let results: Vec<_> = keys
            .par_iter()
            .map(|(k, size)| match self.store.cas_committed_here(k) {
                Some(meta) => (*k, Ok(meta)),
                None => (*k, self.store.cas_quick_stat(k, *size)),
            })
            .collect();
        let mut ok = HashMap::new();
        let mut bad = Vec::new();
        for (k, r) in results {
            match r {
                Ok(meta) => {
                    ok.insert(k, meta);
                }
                Err(_) => bad.push(k),
            }
        }
        (ok, bad)
    }

    /// Re-extracts, repairing, every layer holding one of `bad`. Returns how many.
    fn repair_layers(&self, bad: &HashSet<CasKey>) -> Result<u64, Error> {
        let mut repaired = 0;
        let layers = self
            .indexes()?
            .iter()
            .zip(&self.artifact.catalog.layers)
            .zip(self.artifact.manifest.layers());
        for ((index, layer), descriptor) in layers {
            if index.files().any(|(k, _)| bad.contains(&k)) {
                let media = descriptor.media_type().to_string();
                self.store
                    .extract_layer(self.scratch, layer, &media, true)?;
                repaired += 1;
            }
        }
        Ok(repaired)
    }
}

/// Creates the directories of `wanted`, one depth at a time (a directory's parent is
/// created before it), each depth in parallel; one already there is fine.
fn write_dirs(
    root: &Path,
    wanted: &[(&String, &Want)],
    records: &mut Vec<(String, PathRecord)>,
) -> Result<(), Error> {
    let mut by_depth: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for (path, want) in wanted {
        if let Want::Dir = want {
            by_depth
                .entry(path.matches('/').count())
                .or_default()
                .push(path);
        }
    }
    for dirs in by_depth.values() {
        dirs.par_iter().try_for_each(|path| {
            let full = root.join(path);
            match fs::create_dir(&full) {
                Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && full.is_dir()) => {
                    Err(Error::Write {
                        path: full,
                        source: e,
                    })
                }
                _ => Ok(()),
            }
        })?;
    }
    let dirs = by_depth.into_values().flatten();
    records.extend(dirs.map(|path| (path.clone(), PathRecord::Dir)));
    Ok(())
}

/// Creates the symbolic links of `wanted` (after everything else, so none is followed).
fn write_links(
    root: &Path,
    wanted: &[(&String, &Want)],
    records: &mut Vec<(String, PathRecord)>,
) -> Result<(), Error> {
    for (path, want) in wanted {
        if let Want::Symlink { target } = want {
            let full = root.join(path);
            std::os::unix::fs::symlink(target.as_os_str(), &full)
                .map_err(|source| Error::Write { path: full, source })?;
            let record = PathRecord::Symlink {
                target: target.clone(),
            };
            records.push(((*path).clone(), record));
        }
    }
    Ok(())
}

/// Creates the private, relocated copy at `path`: a new file with normal permissions.
fn create_private(path: &Path, exec: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(link::private_mode(exec))
        .open(path)
}

/// Gives a written private copy its normal permissions (whatever the umask) and the
/// layer mtime.
fn finish_private(path: &Path, exec: bool) -> io::Result<()> {
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(link::private_mode(exec)),
    )?;
    link::set_layer_mtime(path)
}
