//! What a space holds: the record of what restore wrote (kept by the store, see
//! [`crate::store::SpaceState`]) and what is on disk now ([`Actual`]).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub use crate::store::{space_id, Method, PathRecord, SpaceState};

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
