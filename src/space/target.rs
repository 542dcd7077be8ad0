//! Where a space goes: a directory the user names (made absolute, as the space's record
//! and its relocated files name it by its absolute path), or a managed space of the
//! store.

use std::fs;
use std::path::{Path, PathBuf};

use super::Error;
use crate::store::Store;

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

/// The directory of the managed space `name` (`restore --space NAME`).
pub fn managed_space(store: &Store, name: &str) -> Result<PathBuf, Error> {
    store.managed_space_dir(name).map_err(|e| Error::BadTarget {
        path: PathBuf::from(name),
        reason: e.to_string(),
    })
}

/// The target as UTF-8, which relocated files need (they hold it as text).
pub(super) fn utf8(target: &Path) -> Result<&str, Error> {
    target.to_str().ok_or_else(|| Error::BadTarget {
        path: target.to_path_buf(),
        reason: "path is not UTF-8".into(),
    })
}

/// Whether `path` is a directory with nothing in it.
pub(super) fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}
