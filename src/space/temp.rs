//! The temporary directory a new space is assembled in: a hidden sibling of the target
//! (same filesystem, so the final rename is atomic), named after it so that the next
//! restore of the same target finds and removes what an interrupted one left.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil::remove_any;

/// The name prefix of `target`'s temporaries (`.<name>.envoci-`).
fn prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.envoci-")
}

/// A new, unique temporary path beside `target` (not created).
pub(super) fn temp_beside(target: &Path) -> PathBuf {
    target.with_file_name(format!(
        "{}{:016x}",
        prefix(target),
        crate::store::rand_u64()
    ))
}

/// Removes temporaries of interrupted restores of `target` (the caller holds its lock).
pub(super) fn clean_stale_temps(target: &Path) {
    let (Some(parent), Some(_)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = prefix(target);
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = remove_any(&entry.path());
            }
        }
    }
}
