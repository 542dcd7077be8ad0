//! Spaces: ready environment directories restored from a catalog.
//!
//! [`restore`] makes the directory exactly what the catalog says — a *pristine* space —
//! and records what it wrote ([`state`]). A new space is assembled in a temporary
//! directory beside the target and renamed into place, so it appears whole or not at
//! all. An existing space is updated incrementally: only paths that differ from the
//! plan (changed catalog, or deleted/added/modified files, found by metadata, or by
//! content with `verify`) are touched, extras are removed; while that happens the
//! space is marked dirty so an interrupted restore is finished by the next one.

pub mod link;
pub mod plan;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use link::{LinkMode, Linker};
pub use plan::{Plan, PlanError, Want};
pub use state::{Actual, Method, PathRecord, SpaceState};

use crate::catalog::{self, Artifact};
use crate::digest::Digest;
use crate::fsutil::remove_any;
use crate::relocate;
use crate::store::{self, CasKey, LayerIndex, Scratch, Store};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The reference is not a usable envoci artifact.
    #[error(transparent)]
    Load(#[from] catalog::LoadError),
    /// The catalog cannot be restored (here).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The target holds something else.
    #[error("{} exists and is not an envoci space of this store; pass --force to replace its content", path.display())]
    NotASpace {
        /// The target.
        path: PathBuf,
    },
    /// The target path cannot hold a space.
    #[error("cannot restore into {}: {reason}", path.display())]
    BadTarget {
        /// The target.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The link mode asked for does not work on the space's filesystem.
    #[error("cannot {} {} from the store: the filesystem does not support it; use --link auto to fall back", link_verb(*mode), path.display())]
    LinkUnsupported {
        /// The mode asked for.
        mode: LinkMode,
        /// The first file it failed on.
        path: PathBuf,
    },
    /// Writing into the space failed; the space is marked dirty.
    #[error("cannot write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn link_verb(mode: LinkMode) -> &'static str {
    match mode {
        LinkMode::Reflink => "reflink",
        LinkMode::Hardlink => "hard-link",
        LinkMode::Copy | LinkMode::Auto => "copy",
    }
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// How CAS files get into the space.
    pub link: LinkMode,
    /// Replace the content of a directory that is not an envoci space.
    pub force: bool,
    /// Compare files by content, not only metadata.
    pub verify: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// The space.
    pub target: PathBuf,
    /// The manifest restored.
    pub manifest: String,
    /// A new space was created.
    pub created: bool,
    /// Paths written (files, links, directories).
    pub written: u64,
    /// Paths removed.
    pub removed: u64,
    /// Paths left as they were.
    pub unchanged: u64,
    /// Files written per method.
    pub methods: BTreeMap<String, u64>,
    /// CAS files repaired from layer blobs.
    pub repaired: u64,
}

/// The absolute path of a target directory (which need not exist yet): the nearest
/// existing ancestor resolved, the rest appended. Nothing is created.
pub fn absolute_target(target: &Path) -> Result<PathBuf, Error> {
    let bad = |reason: String| Error::BadTarget {
        path: target.to_path_buf(),
        reason,
    };
    let abs = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad(e.to_string()))?
            .join(target)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(resolved) => {
                let mut out = resolved;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(_) => {
                let name = existing
                    .file_name()
                    .ok_or_else(|| bad("no existing ancestor directory".into()))?;
                if name == ".." || name == "." {
                    return Err(bad("`.` or `..` below a missing directory".into()));
                }
                rest.push(name.to_os_string());
                existing = existing
                    .parent()
                    .ok_or_else(|| bad("no existing ancestor directory".into()))?;
            }
        }
    }
}

/// The directory of the managed space `name`.
pub fn managed_space(store: &Store, name: &str) -> Result<PathBuf, Error> {
    store.managed_space_dir(name).map_err(|e| Error::BadTarget {
        path: PathBuf::from(name),
        reason: e.to_string(),
    })
}

/// Restores `reference` (a tag or manifest digest in `store`) into `target`.
pub fn restore(
    store: &Store,
    reference: &str,
    target: &Path,
    options: &Options,
) -> Result<Report, Error> {
    let artifact = catalog::load(store, reference)?;
    let target = absolute_target(target)?;
    let target_str = target.to_str().ok_or_else(|| Error::BadTarget {
        path: target.clone(),
        reason: "path is not UTF-8".into(),
    })?;
    let _lock = store.lock_space(&target)?;
    clean_stale_temps(&target);

    let recorded = store.space_state(&target)?;
    if let Some(state) = recorded
        .as_ref()
        .filter(|s| !s.dirty && s.manifest == artifact.digest && s.target.is_dir())
    {
        // The common case: the space holds this catalog already. Its recorded state is
        // the plan, so a clean drift check is all there is to do.
        if drift(state, options.verify)?.is_clean() {
            return Ok(Report {
                target: target.clone(),
                manifest: artifact.digest.oci(),
                unchanged: state.paths.len() as u64,
                ..Report::default()
            });
        }
    }

    let scratch = store.scratch()?;
    let indexes = layer_indexes(store, &scratch, &artifact)?;
    let plan = Plan::new(&artifact.catalog, &indexes)?;
    plan.check_target(target_str)?;
    let meta = fs::symlink_metadata(&target);
    let media_types: Vec<String> = artifact
        .manifest
        .layers()
        .iter()
        .map(|d| d.media_type().to_string())
        .collect();
    let job = Job {
        store,
        scratch: &scratch,
        indexes: &indexes,
        media_types: &media_types,
        plan: &plan,
        target_str,
        linker: Linker::new(options.link),
    };
    match (meta, recorded) {
        (Err(_), _) => job.create(&artifact, reference, &target),
        (Ok(m), _) if !m.is_dir() => Err(Error::BadTarget {
            path: target.clone(),
            reason: "it is not a directory".into(),
        }),
        (Ok(_), Some(state)) => job.update(&artifact, reference, &target, state, options.verify),
        (Ok(_), None) if is_empty_dir(&target) => job.create(&artifact, reference, &target),
        (Ok(_), None) if options.force => {
            let state = SpaceState {
                target: target.clone(),
                manifest: artifact.digest,
                reference: reference.into(),
                dirty: true,
                paths: BTreeMap::new(),
            };
            job.update(&artifact, reference, &target, state, options.verify)
        }
        (Ok(_), None) => Err(Error::NotASpace {
            path: target.clone(),
        }),
    }
}

/// The index of every layer of `artifact`, extracting layers that were never indexed.
pub fn layer_indexes(
    store: &Store,
    scratch: &Scratch,
    artifact: &Artifact,
) -> Result<Vec<LayerIndex>, Error> {
    artifact
        .layer_blobs()
        .map(|(digest, descriptor)| match store.layer_index(&digest)? {
            Some(index) => Ok(index),
            None => Ok(store.extract_layer(
                scratch,
                &digest,
                descriptor.media_type().as_ref(),
                false,
            )?),
        })
        .collect()
}

struct Job<'a> {
    store: &'a Store,
    scratch: &'a Scratch,
    indexes: &'a [LayerIndex],
    media_types: &'a [String],
    plan: &'a Plan,
    target_str: &'a str,
    linker: Linker,
}

impl Job<'_> {
    /// A new space: assembled beside the target, recorded, renamed into place.
    fn create(&self, artifact: &Artifact, reference: &str, target: &Path) -> Result<Report, Error> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp =
            target.with_file_name(format!(".{name}.envoci-{:016x}", crate::store::rand_u64()));
        let parent = crate::fsutil::parent_of(target);
        fs::create_dir_all(parent).map_err(|source| Error::Write {
            path: parent.to_path_buf(),
            source,
        })?;
        fs::create_dir(&tmp).map_err(|source| Error::Write {
            path: tmp.clone(),
            source,
        })?;
        let result = (|| {
            let mut report = Report {
                created: true,
                ..Report::default()
            };
            let wanted: Vec<(&String, &Want)> = self.plan.paths.iter().collect();
            let paths = self.write_paths(&tmp, &wanted, &mut report)?;
            let state = SpaceState {
                target: target.to_path_buf(),
                manifest: artifact.digest,
                reference: reference.into(),
                dirty: false,
                paths,
            };
            self.store.write_space_state(&state)?;
            fs::rename(&tmp, target).map_err(|source| Error::Write {
                path: target.to_path_buf(),
                source,
            })?;
            crate::fsutil::sync_dir(crate::fsutil::parent_of(target)).ok();
            report.target = target.to_path_buf();
            report.manifest = artifact.digest.oci();
            Ok(report)
        })();
        if result.is_err() {
            let _ = remove_any(&tmp);
        }
        // Name paths as the user knows them, not by the temporary directory.
        result.map_err(|e| match e {
            Error::Write { path, source } => Error::Write {
                path: target.join(path.strip_prefix(&tmp).unwrap_or(&path)),
                source,
            },
            Error::LinkUnsupported { mode, path } => Error::LinkUnsupported {
                mode,
                path: target.join(path.strip_prefix(&tmp).unwrap_or(&path)),
            },
            other => other,
        })
    }

    /// An existing space: touch only what differs.
    fn update(
        &self,
        artifact: &Artifact,
        reference: &str,
        target: &Path,
        mut state: SpaceState,
        verify: bool,
    ) -> Result<Report, Error> {
        let actual = scan_tree(target)?;
        let mut keep = BTreeMap::new();
        let mut to_write: Vec<(&String, &Want)> = Vec::new();
        for (path, want) in &self.plan.paths {
            let rec = state.paths.get(path);
            let act = actual.get(path);
            let same = match (want, rec, act) {
                (Want::Dir, _, Some(Actual::Dir)) => Some(PathRecord::Dir),
                (Want::Symlink { target: t }, _, Some(Actual::Symlink(a))) if a == t => {
                    Some(PathRecord::Symlink { target: t.clone() })
                }
                (
                    Want::File {
                        key, relocation, ..
                    },
                    Some(r @ PathRecord::File { relocation: rr, .. }),
                    Some(a),
                ) if r.cas_key() == Some(*key)
                    && rr == relocation
                    && file_intact(&target.join(path), a, r, verify) =>
                {
                    Some(r.clone())
                }
                _ => None,
            };
            match same {
                Some(r) => {
                    keep.insert(path.clone(), r);
                }
                None => to_write.push((path, want)),
            }
        }
        // Extras go, and so does whatever stands where something else must be written.
        let mut to_remove: Vec<&String> = actual
            .keys()
            .filter(|p| !self.plan.paths.contains_key(*p))
            .collect();
        to_remove.extend(
            to_write
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| actual.contains_key(*p)),
        );
        to_remove.sort();
        to_remove.dedup();

        let mut report = Report {
            target: target.to_path_buf(),
            manifest: artifact.digest.oci(),
            ..Report::default()
        };
        report.unchanged = keep.len() as u64;
        if to_write.is_empty()
            && to_remove.is_empty()
            && !state.dirty
            && state.manifest == artifact.digest
        {
            return Ok(report);
        }

        state.dirty = true;
        self.store.write_space_state(&state)?;
        // Children sort after their parents: remove in reverse order.
        for path in to_remove.iter().rev() {
            let full = target.join(path);
            if fs::symlink_metadata(&full).is_ok() {
                remove_any(&full).map_err(|source| Error::Write { path: full, source })?;
                report.removed += 1;
            }
        }
        let written = self.write_paths(target, &to_write, &mut report)?;
        keep.extend(written);
        state.paths = keep;
        state.manifest = artifact.digest;
        state.reference = reference.into();
        state.dirty = false;
        self.store.write_space_state(&state)?;
        Ok(report)
    }

    /// Writes `wanted` paths below `root`: directories first, then files in parallel,
    /// then links. Repairs CAS files from their layers first if any is damaged.
    fn write_paths(
        &self,
        root: &Path,
        wanted: &[(&String, &Want)],
        report: &mut Report,
    ) -> Result<BTreeMap<String, PathRecord>, Error> {
        let (repaired, inodes) = self.prepare_cas(wanted)?;
        report.repaired += repaired;
        let mut records = BTreeMap::new();
        for (path, want) in wanted {
            if let Want::Dir = want {
                let full = root.join(path);
                match fs::create_dir(&full) {
                    Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && full.is_dir()) => {
                        return Err(Error::Write {
                            path: full,
                            source: e,
                        });
                    }
                    _ => {}
                }
                records.insert((*path).clone(), PathRecord::Dir);
            }
        }
        let files: Vec<(&String, &Want)> = wanted
            .iter()
            .filter(|(_, w)| matches!(w, Want::File { .. }))
            .copied()
            .collect();
        let written: Vec<(String, PathRecord)> = files
            .par_iter()
            .map(|(path, want)| {
                self.write_file(root, path, want, &inodes)
                    .map(|r| ((*path).clone(), r))
            })
            .collect::<Result<_, Error>>()?;
        for (path, record) in written {
            if let PathRecord::File { method, .. } = &record {
                *report
                    .methods
                    .entry(format!("{method:?}").to_lowercase())
                    .or_default() += 1;
            }
            records.insert(path, record);
        }
        for (path, want) in wanted {
            if let Want::Symlink { target } = want {
                let full = root.join(path);
                std::os::unix::fs::symlink(target, &full)
                    .map_err(|source| Error::Write { path: full, source })?;
                records.insert(
                    (*path).clone(),
                    PathRecord::Symlink {
                        target: target.clone(),
                    },
                );
            }
        }
        report.written += wanted.len() as u64;
        Ok(records)
    }

    fn write_file(
        &self,
        root: &Path,
        path: &str,
        want: &Want,
        inodes: &CasInodes,
    ) -> Result<PathRecord, Error> {
        let Want::File {
            key, relocation, ..
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
            None => {
                let cas = self.store.cas_link_source(key);
                let method = self.linker.place(&cas, &full, key.exec).map_err(|e| {
                    if link::is_unsupported(&e) {
                        Error::LinkUnsupported {
                            mode: self.linker.mode(),
                            path: full.clone(),
                        }
                    } else {
                        err(e)
                    }
                })?;
                (method, None)
            }
            Some((mode, placeholder)) => {
                let content = self.store.cas_read(key)?;
                let content = relocate::relocate(
                    &content,
                    *mode,
                    placeholder.as_bytes(),
                    self.target_str.as_bytes(),
                )
                .map_err(|e| PlanError::TooLong {
                    path: path.into(),
                    max_len: e.max_len,
                    target: self.target_str.into(),
                    target_len: e.new_len,
                })?;
                write_private(&full, &content, key.exec).map_err(err)?;
                (Method::Relocated, Some(Digest::of(&content)))
            }
        };
        let (size, mode, ino) = match (method, inodes.get(key)) {
            // A hard link is the CAS file: its inode and mode are known already.
            (Method::Hardlink, Some(&(ino, mode))) => (want_size(want), mode, ino),
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
            mode,
            ino,
            method,
        })
    }

    /// Checks every CAS file about to be used and re-extracts the layers of any that
    /// is missing or damaged. Returns the number of layers re-extracted and each file's
    /// inode and mode (what a hard link to it gets, so it need not be stat'ed again).
    fn prepare_cas(&self, wanted: &[(&String, &Want)]) -> Result<(u64, CasInodes), Error> {
        let stat = |keys: Vec<(CasKey, u64)>| -> (CasInodes, Vec<CasKey>) {
            let results: Vec<_> = keys
                .par_iter()
                .map(|(k, size)| (*k, *size, self.store.cas_quick_stat(k, *size)))
                .collect();
            let mut ok = HashMap::new();
            let mut bad = Vec::new();
            for (k, _, r) in results {
                match r {
                    Ok(meta) => {
                        ok.insert(k, meta);
                    }
                    Err(_) => bad.push(k),
                }
            }
            (ok, bad)
        };
        let keys: Vec<(CasKey, u64)> = wanted
            .iter()
            .filter_map(|(_, w)| match w {
                Want::File { key, size, .. } => Some((*key, *size)),
                _ => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let (mut inodes, bad) = stat(keys.clone());
        if bad.is_empty() {
            return Ok((0, inodes));
        }
        let bad: HashSet<CasKey> = bad.into_iter().collect();
        let mut repaired = 0;
        for (index, media) in self.indexes.iter().zip(self.media_types) {
            if index.files().any(|(k, _)| bad.contains(&k)) {
                self.store
                    .extract_layer(self.scratch, &index.digest, media, true)?;
                repaired += 1;
            }
        }
        let (fixed, still_bad) = stat(keys.into_iter().filter(|(k, _)| bad.contains(k)).collect());
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
}

fn want_size(want: &Want) -> u64 {
    match want {
        Want::File { size, .. } => *size,
        _ => 0,
    }
}

/// Inode and mode of each intact CAS file a restore uses.
type CasInodes = HashMap<CasKey, (u64, u32)>;

/// Whether a file on disk is still what restore wrote.
fn file_intact(full: &Path, actual: &Actual, record: &PathRecord, verify: bool) -> bool {
    if !verify {
        return actual.matches(record);
    }
    let PathRecord::File { mode, .. } = record else {
        return false;
    };
    match actual {
        Actual::File { mode: m, .. } if m == mode => fs::File::open(full)
            .ok()
            .and_then(|f| Digest::of_reader(f).ok())
            .is_some_and(|(d, _)| Some(d) == record.expected_digest()),
        _ => false,
    }
}

fn write_private(path: &Path, content: &[u8], exec: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(link::private_mode(exec))
        .open(path)?;
    f.write_all(content)?;
    drop(f);
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(link::private_mode(exec)),
    )?;
    link::set_layer_mtime(path)
}

/// Everything below `root` (not following links), by relative path. Directories are
/// listed in one pass; files are examined in parallel.
pub fn scan_tree(root: &Path) -> Result<HashMap<String, Actual>, Error> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let entry = entry.map_err(|e| Error::Write {
            path: e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf()),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("filesystem loop")),
        })?;
        found.push((entry.file_type().is_dir(), entry.into_path()));
    }
    found
        .into_par_iter()
        .map(|(is_dir, path)| {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let actual = if is_dir {
                Ok(Actual::Dir)
            } else {
                Actual::read(&path)
            };
            actual
                .map(|a| (rel, a))
                .map_err(|source| Error::Write { path, source })
        })
        .collect()
}

/// How a space differs from its recorded state.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Drift {
    /// Paths whose content, mode or kind changed.
    pub modified: Vec<String>,
    /// Recorded paths that are gone.
    pub missing: Vec<String>,
    /// Paths that were not restored.
    pub extra: Vec<String>,
}

impl Drift {
    /// Whether the space is pristine.
    pub fn is_clean(&self) -> bool {
        self.modified.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compares a space with its recorded state (metadata, or content with `verify`).
pub fn drift(state: &SpaceState, verify: bool) -> Result<Drift, Error> {
    let actual = scan_tree(&state.target)?;
    let mut drift = Drift::default();
    for (path, record) in &state.paths {
        match actual.get(path) {
            None => drift.missing.push(path.clone()),
            Some(a) => {
                let ok = match record {
                    PathRecord::File { .. } => {
                        file_intact(&state.target.join(path), a, record, verify)
                    }
                    _ => a.matches(record),
                };
                if !ok {
                    drift.modified.push(path.clone());
                }
            }
        }
    }
    drift.extra = actual
        .keys()
        .filter(|p| !state.paths.contains_key(*p))
        .cloned()
        .collect();
    drift.extra.sort();
    Ok(drift)
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

/// Removes temporaries of interrupted restores of `target` (the caller holds its lock).
fn clean_stale_temps(target: &Path) {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}.envoci-", name.to_string_lossy());
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = remove_any(&entry.path());
            }
        }
    }
}
