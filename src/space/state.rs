//! What a space holds: the catalog it was restored from and, per path, what was written
//! and the metadata it was left with. Kept in the store (`state-v1/<id>.json`, `id` from
//! the space's absolute path), written atomically; `dirty` is set while a restore is
//! modifying the space, so an interrupted one is noticed and finished by the next.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::write_atomic;
use crate::relocate::FileMode;
use crate::store::{self, CasKey, Store};

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
        target: String,
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

/// The id of the space at `target` (an absolute path).
pub fn space_id(target: &Path) -> String {
    Digest::of(target.as_os_str().as_encoded_bytes()).hex()[..32].to_string()
}

impl Store {
    fn state_path(&self, target: &Path) -> PathBuf {
        self.state_dir().join(format!("{}.json", space_id(target)))
    }

    /// The recorded state of the space at `target`, if it is one.
    pub fn space_state(&self, target: &Path) -> store::Result<Option<SpaceState>> {
        let path = self.state_path(target);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| store::Error::BadJson { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store::Error::Io {
                action: "read",
                path,
                source: e,
            }),
        }
    }

    /// Records the state of a space (after syncing what it references).
    pub fn write_space_state(&self, state: &SpaceState) -> store::Result<()> {
        let path = self.state_path(&state.target);
        let bytes = serde_json::to_vec(state)
            .map_err(|e| store::Error::io("serialise", &path)(e.into()))?;
        write_atomic(&path, &bytes).map_err(store::Error::io("write", &path))
    }

    /// Forgets the space at `target`.
    pub fn remove_space_state(&self, target: &Path) -> store::Result<()> {
        let path = self.state_path(target);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(store::Error::Io {
                action: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every recorded space.
    pub fn space_states(&self) -> store::Result<Vec<SpaceState>> {
        let dir = self.state_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir)
            .map_err(store::Error::io("read", &dir))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).map_err(store::Error::io("read", &path))?;
                out.push(
                    serde_json::from_slice(&bytes)
                        .map_err(|source| store::Error::BadJson { path, source })?,
                );
            }
        }
        out.sort_by(|a: &SpaceState, b| a.target.cmp(&b.target));
        Ok(out)
    }
}

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
    Symlink(String),
    /// A directory.
    Dir,
    /// Something else (FIFO, socket, device).
    Other,
}

impl Actual {
    /// Reads what is at `path` without following links.
    pub fn read(path: &Path) -> io::Result<Actual> {
        let m = fs::symlink_metadata(path)?;
        let ft = m.file_type();
        Ok(if ft.is_file() {
            Actual::File {
                size: m.len(),
                mode: m.permissions().mode() & 0o7777,
                ino: m.ino(),
                mtime: m.mtime(),
            }
        } else if ft.is_symlink() {
            Actual::Symlink(fs::read_link(path)?.to_string_lossy().into_owned())
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
