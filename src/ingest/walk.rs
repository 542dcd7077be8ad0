//! Walking a prefix: every file, symbolic link and empty directory, sorted by path, with
//! what the layer plan and the scan need (size, executable bit, mtime, link target).
//! Directories that hold something are implied by their content and not listed.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::Error;

/// One path found in the prefix.
#[derive(Clone, Debug)]
pub(crate) struct Walked {
    pub rel: String,
    pub kind: WalkedKind,
}

/// What a walked path is.
#[derive(Clone, Debug)]
pub(crate) enum WalkedKind {
    File { size: u64, exec: bool, mtime: i64 },
    Symlink { target: String },
    EmptyDir,
}

/// Every path below `prefix` (not following links), sorted by path. Sockets, FIFOs and
/// devices are not environment content and are skipped.
pub(super) fn walk(prefix: &Path) -> Result<Vec<Walked>, Error> {
    let mut out = Vec::new();
    let mut parents_with_children = HashSet::new();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(prefix)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| prefix.to_path_buf());
            Error::Read {
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("filesystem loop")),
            }
        })?;
        let rel_path = entry.path().strip_prefix(prefix).unwrap_or(entry.path());
        let rel = utf8(rel_path, entry.path())?.to_string();
        if let Some((parent, _)) = rel.rsplit_once('/') {
            parents_with_children.insert(parent.to_string());
        }
        if entry.file_type().is_dir() {
            dirs.push(rel);
        } else if let Some(kind) = kind_of(&entry)? {
            out.push(Walked { rel, kind });
        }
    }
    for dir in dirs {
        if !parents_with_children.contains(&dir) {
            out.push(Walked {
                rel: dir,
                kind: WalkedKind::EmptyDir,
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// What a non-directory entry is; `None` for what is skipped.
fn kind_of(entry: &walkdir::DirEntry) -> Result<Option<WalkedKind>, Error> {
    let read_err = |source| Error::Read {
        path: entry.path().to_path_buf(),
        source,
    };
    let ft = entry.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(entry.path()).map_err(read_err)?;
        let target = utf8(&target, entry.path())?.to_string();
        Ok(Some(WalkedKind::Symlink { target }))
    } else if ft.is_file() {
        let meta = entry.metadata().map_err(|e| {
            read_err(
                e.into_io_error()
                    .unwrap_or_else(|| io::Error::other("metadata")),
            )
        })?;
        Ok(Some(WalkedKind::File {
            size: meta.len(),
            exec: meta.permissions().mode() & 0o111 != 0,
            mtime: meta.mtime(),
        }))
    } else {
        Ok(None)
    }
}

/// `path` as UTF-8 (layers and catalogs are UTF-8); the error names `full`.
fn utf8<'p>(path: &'p Path, full: &Path) -> Result<&'p str, Error> {
    path.to_str().ok_or_else(|| Error::NotUtf8 {
        path: full.to_path_buf(),
    })
}
