//! Drift: how a space on disk differs from its record. What is on disk is read by
//! metadata ([`Actual`]); the quick check compares size, mode, inode and the layer
//! mtime restore set, `verify` rehashes file content. Restore uses it to find what to
//! rewrite, `check` to report spaces that are no longer pristine.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rayon::prelude::*;

use super::Error;
use crate::digest::Digest;
use crate::layer::LinkTarget;
use crate::store::{PathRecord, SpaceState};

/// What is on disk at a space path, as far as the quick check cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actual {
    /// A regular file.
    File {
        /// Size.
        size: u64,
        /// Permission bits.
        mode: u32,
        /// Inode.
        ino: u64,
        /// Modification time, seconds.
        mtime: i64,
    },
    /// A symbolic link and its target.
    Symlink(LinkTarget),
    /// A directory.
    Dir,
    /// Something else (FIFO, socket, device).
    Other,
}

impl Actual {
    /// Reads what is at `path` without following links.
    pub fn read(path: &Path) -> io::Result<Actual> {
        Actual::from_metadata(&fs::symlink_metadata(path)?, path)
    }

    /// What `metadata` (not following links) says is at `path`; a link is read.
    fn from_metadata(m: &fs::Metadata, path: &Path) -> io::Result<Actual> {
        let ft = m.file_type();
        Ok(if ft.is_file() {
            Actual::File {
                size: m.len(),
                mode: m.permissions().mode() & 0o7777,
                ino: m.ino(),
                mtime: m.mtime(),
            }
        } else if ft.is_symlink() {
            Actual::Symlink(fs::read_link(path)?.into())
        } else if ft.is_dir() {
            Actual::Dir
        } else {
            Actual::Other
        })
    }

    /// Whether this matches `record` by metadata alone (the quick pristine check).
    pub fn matches(&self, record: &PathRecord) -> bool {
        match (self, record) {
            (
                Actual::File {
                    size,
                    mode,
                    ino,
                    mtime,
                },
                PathRecord::File {
                    size: s,
                    mode: m,
                    ino: i,
                    ..
                },
            ) => size == s && mode == m && ino == i && *mtime == crate::layer::LAYER_MTIME as i64,
            (Actual::Symlink(t), PathRecord::Symlink { target }) => t == target,
            (Actual::Dir, PathRecord::Dir) => true,
            _ => false,
        }
    }
}

/// Everything below `root` (not following links), by relative path. Each directory is
/// listed once and its entries examined through its descriptor (no path lookup per
/// file), directories and entries in parallel.
pub fn scan_tree(root: &Path) -> Result<HashMap<String, Actual>, Error> {
    let mut found = Vec::new();
    scan_dir(root, "", &mut found)?;
    Ok(found.into_iter().collect())
}

/// Adds what is below directory `rel` of `root` to `found`.
fn scan_dir(root: &Path, rel: &str, found: &mut Vec<(String, Actual)>) -> Result<(), Error> {
    let dir = root.join(rel);
    let unreadable = |source| Error::Write {
        path: dir.clone(),
        source,
    };
    let entries = fs::read_dir(&dir)
        .and_then(|entries| entries.collect::<io::Result<Vec<fs::DirEntry>>>())
        .map_err(unreadable)?;
    let examined: Vec<(String, Actual)> = entries
        .into_par_iter()
        .map(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = match rel {
                "" => name.into_owned(),
                _ => format!("{rel}/{name}"),
            };
            let actual = examine(&entry).map_err(|source| Error::Write {
                path: entry.path(),
                source,
            })?;
            Ok((path, actual))
        })
        .collect::<Result<_, Error>>()?;
    let subdirs: Vec<&String> = examined
        .iter()
        .filter(|(_, a)| *a == Actual::Dir)
        .map(|(path, _)| path)
        .collect();
    let below = subdirs
        .par_iter()
        .map(|path| {
            let mut found = Vec::new();
            scan_dir(root, path, &mut found).map(|()| found)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    found.extend(below.into_iter().flatten());
    found.extend(examined);
    Ok(())
}

/// What directory entry `entry` is: a directory by its type alone (the listing says),
/// anything else by its metadata, read through the directory's descriptor.
fn examine(entry: &fs::DirEntry) -> io::Result<Actual> {
    match entry.file_type()? {
        t if t.is_dir() => Ok(Actual::Dir),
        _ => Actual::from_metadata(&entry.metadata()?, &entry.path()),
    }
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
    Ok(drift_against(state, &scan_tree(&state.target)?, verify))
}

/// [`drift`] against a scan of the space already made ([`scan_tree`]). Records are
/// compared in parallel (with `verify`, files are rehashed).
pub fn drift_against(state: &SpaceState, actual: &HashMap<String, Actual>, verify: bool) -> Drift {
    let verdicts: Vec<(&String, Option<bool>)> = state
        .paths
        .par_iter()
        .map(|(path, record)| {
            let intact = actual
                .get(path)
                .map(|a| intact(&state.target, path, a, record, verify));
            (path, intact)
        })
        .collect();
    let mut drift = Drift::default();
    for (path, intact) in verdicts {
        match intact {
            None => drift.missing.push(path.clone()),
            Some(false) => drift.modified.push(path.clone()),
            Some(true) => {}
        }
    }
    // Every recorded path not missing was found, so the rest of what was found is
    // extra: only look for it when there is some.
    let recorded_found = state.paths.len() - drift.missing.len();
    if actual.len() > recorded_found {
        drift.extra = actual
            .keys()
            .filter(|p| !state.paths.contains_key(*p))
            .cloned()
            .collect();
        drift.extra.sort();
    }
    drift
}

/// Whether `actual`, found at `path` below `root`, is still what `record` says was
/// written there.
pub(super) fn intact(
    root: &Path,
    path: &str,
    actual: &Actual,
    record: &PathRecord,
    verify: bool,
) -> bool {
    match record {
        PathRecord::File { .. } if verify => file_content_intact(&root.join(path), actual, record),
        _ => actual.matches(record),
    }
}

/// Whether a file on disk still has the mode and content restore wrote.
fn file_content_intact(full: &Path, actual: &Actual, record: &PathRecord) -> bool {
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
