//! Space records: which catalog each space holds and, per path, what restore wrote there
//! and the metadata it left. One file per space, `state-v2/<id>.state` (`id` from the
//! space's absolute path; the format is [`super::space_record`]), always replaced
//! atomically; a space is dirty while a restore is modifying it, so an interrupted one
//! is noticed and finished by the next. Records of earlier versions (`state-v1/<id>.json`)
//! are read as they are and replaced by the new format when next written. The space's
//! lock and the managed spaces' directory live here too.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{space_record, validate_tag, CasKey, Error, InvalidTag, Result, Store};
use crate::digest::Digest;
use crate::fsutil::FileLock;
use crate::relocate::FileMode;

/// How a file got into the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A copy-on-write clone of the CAS file.
    Reflink,
    /// A hard link to the CAS file (shares its inode; read-only).
    Hardlink,
    /// A plain copy.
    Copy,
    /// A private copy rewritten for the space's path.
    Relocated,
}

/// One path of a space as restore left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PathRecord {
    /// A regular file.
    File {
        /// The CAS content it came from.
        digest: Digest,
        /// Executable.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exec: bool,
        /// The relocation applied, if any: mode and the placeholder replaced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relocation: Option<(FileMode, String)>,
        /// Digest of the content as written (differs from `digest` when relocated).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        written: Option<Digest>,
        /// Size as written.
        size: u64,
        /// Size of the CAS content, recorded when it differs from what was written
        /// (relocated files), so a repair can plan from the record alone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cas_size: Option<u64>,
        /// Permission bits as written.
        mode: u32,
        /// Inode as written.
        ino: u64,
        /// How it was written.
        method: Method,
    },
    /// A symbolic link.
    Symlink {
        /// Its target.
        target: crate::layer::LinkTarget,
    },
    /// A directory.
    Dir,
}

impl PathRecord {
    /// The CAS key of a file record.
    pub fn cas_key(&self) -> Option<CasKey> {
        match self {
            PathRecord::File { digest, exec, .. } => Some(CasKey {
                digest: *digest,
                exec: *exec,
            }),
            _ => None,
        }
    }

    /// The digest the file's content should have in the space.
    pub fn expected_digest(&self) -> Option<Digest> {
        match self {
            PathRecord::File {
                digest, written, ..
            } => Some(written.unwrap_or(*digest)),
            _ => None,
        }
    }
}

/// The recorded state of one space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceState {
    /// The space's absolute path.
    pub target: PathBuf,
    /// The manifest it was restored from.
    pub manifest: Digest,
    /// The reference the user restored (tag or digest), for display.
    pub reference: String,
    /// A restore was modifying the space and did not finish.
    pub dirty: bool,
    /// Every path of the space.
    pub paths: BTreeMap<String, PathRecord>,
}

/// The id of the space at `target` (an absolute path): names its state and lock files.
pub fn space_id(target: &Path) -> String {
    Digest::of(target.as_os_str().as_encoded_bytes()).hex()[..32].to_string()
}

/// The directory of the records of envoci 0.1 up to the binary format.
const LEGACY_STATE_DIR: &str = "state-v1";

impl Store {
    fn state_path(&self, target: &Path) -> PathBuf {
        space_file(&self.state_dir(), target, "state")
    }

    /// Where an earlier version recorded the space at `target` (JSON).
    fn legacy_state_path(&self, target: &Path) -> PathBuf {
        space_file(&self.root().join(LEGACY_STATE_DIR), target, "json")
    }

    /// The marker that a restore is modifying the space at `target` (see
    /// [`Store::mark_space_dirty`]).
    fn dirty_path(&self, target: &Path) -> PathBuf {
        space_file(&self.state_dir(), target, "dirty")
    }

    /// The marker an earlier version left for the space at `target`.
    fn legacy_dirty_path(&self, target: &Path) -> PathBuf {
        space_file(&self.root().join(LEGACY_STATE_DIR), target, "dirty")
    }

    /// Records, durably and before anything in it changes, that the space at `target`
    /// is being modified: its state reads as dirty until a clean state is written. An
    /// empty marker beside the record, so an update does not rewrite the whole record
    /// twice.
    pub fn mark_space_dirty(&self, target: &Path) -> Result<()> {
        let path = self.dirty_path(target);
        crate::fsutil::write_atomic(&path, b"").map_err(Error::io("write", path))
    }

    /// `state` with the dirty marker of its space applied.
    fn with_marker(&self, mut state: SpaceState) -> SpaceState {
        state.dirty |= self.dirty_path(&state.target).exists()
            || self.legacy_dirty_path(&state.target).exists();
        state
    }

    /// The directory of the managed space `name` (`restore --space NAME`), which must
    /// be a valid tag. Nothing is created.
    pub fn managed_space_dir(&self, name: &str) -> std::result::Result<PathBuf, InvalidTag> {
        validate_tag(name)?;
        Ok(self.spaces_dir().join(name))
    }

    /// Whether emptying the directory `dir` (absolute, links resolved) would touch the
    /// store: `dir` is the store, one of its ancestors, or lies inside it — a managed
    /// space excepted. What `restore --force` must never replace.
    pub fn would_be_touched_by_emptying(&self, dir: &Path) -> bool {
        let Ok(root) = fs::canonicalize(self.root()) else {
            return true; // cannot tell: refuse
        };
        if root.starts_with(dir) {
            return true;
        }
        if !dir.starts_with(&root) {
            return false;
        }
        let spaces = fs::canonicalize(self.spaces_dir());
        !spaces.is_ok_and(|spaces| dir.parent() == Some(spaces.as_path()))
    }

    /// Takes the exclusive lock of the space at `target` (an absolute path), held while
    /// a restore reads and rewrites the space and its record.
    pub fn lock_space(&self, target: &Path) -> Result<FileLock> {
        self.lock(&format!("space-{}", space_id(target)))
    }

    /// The recorded state of the space at `target`, if it is one.
    pub fn space_state(&self, target: &Path) -> Result<Option<SpaceState>> {
        let state = match read_record(self.state_path(target))? {
            Some(state) => Some(state),
            None => super::read_json(self.legacy_state_path(target))?,
        };
        Ok(state.map(|s| self.with_marker(s)))
    }

    /// Records the state of a space (after syncing what it references); a clean one
    /// also clears the space's dirty marker.
    pub fn write_space_state(&self, state: &SpaceState) -> Result<()> {
        let path = self.state_path(&state.target);
        let bytes = space_record::encode(state);
        crate::fsutil::write_atomic(&path, &bytes).map_err(Error::io("write", &path))?;
        // The record of an earlier version, replaced; its marker only after the new
        // record carries the dirty flag.
        super::remove_file_if_there(&self.legacy_state_path(&state.target))?;
        super::remove_file_if_there(&self.legacy_dirty_path(&state.target))?;
        if !state.dirty {
            super::remove_file_if_there(&self.dirty_path(&state.target))?;
        }
        Ok(())
    }

    /// Forgets the space at `target`.
    pub fn remove_space_state(&self, target: &Path) -> Result<()> {
        super::remove_file_if_there(&self.state_path(target))?;
        super::remove_file_if_there(&self.legacy_state_path(target))?;
        super::remove_file_if_there(&self.dirty_path(target))?;
        super::remove_file_if_there(&self.legacy_dirty_path(target))
    }

    /// Every recorded space, sorted by path.
    pub fn space_states(&self) -> Result<Vec<SpaceState>> {
        let mut found = BTreeMap::new();
        for path in files_ending(&self.state_dir(), "state")? {
            if let Some(state) = read_record(path)? {
                found.insert(state.target.clone(), state);
            }
        }
        for path in files_ending(&self.root().join(LEGACY_STATE_DIR), "json")? {
            if let Some(state) = super::read_json::<SpaceState>(path)? {
                found.entry(state.target.clone()).or_insert(state);
            }
        }
        Ok(found.into_values().map(|s| self.with_marker(s)).collect())
    }
}

/// The file `<id>.EXTENSION` in `dir` of the space at `target`.
fn space_file(dir: &Path, target: &Path, extension: &str) -> PathBuf {
    dir.join(format!("{}.{extension}", space_id(target)))
}

/// The record at `path`, if there is one.
fn read_record(path: PathBuf) -> Result<Option<SpaceState>> {
    match fs::read(&path) {
        Ok(bytes) => space_record::decode(&bytes)
            .map(Some)
            .map_err(|source| Error::BadRecord { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// The files of `dir` named `*.EXTENSION` (none if `dir` is not there).
fn files_ending(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir)(e)),
    };
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect())
}
