//! The plan: the exact tree a catalog asks for, computed from its layer indexes and
//! validated before anything is written (unsafe paths, writes through links, binary
//! relocations that cannot fit the target path); and, for an existing space, what must
//! change to make it that tree ([`Plan::changes`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::drift::{file_intact, scan_tree, Actual};
use super::Error;
use crate::catalog::Catalog;
use crate::layer::{safe_path, EntryKind};
use crate::relocate::FileMode;
use crate::store::{CasKey, LayerIndex, PathRecord, SpaceState};

/// What one path of the space must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// A file with this CAS content, relocated if `relocation` is set.
    File {
        /// The CAS content.
        key: CasKey,
        /// Its size in the CAS.
        size: u64,
        /// Mode and placeholder of a file that must be rewritten for the space's path.
        relocation: Option<(FileMode, String)>,
    },
    /// A symbolic link.
    Symlink {
        /// Its target.
        target: String,
    },
    /// A directory.
    Dir,
}

/// A catalog whose layers cannot be restored safely, or not at this path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A path that would escape the space.
    #[error(transparent)]
    Unsafe(#[from] crate::layer::UnsafePath),
    /// A path below a symbolic link: writing it would write through the link.
    #[error(
        "`{path}` lies below the symbolic link `{link}`: writing it could land outside the space"
    )]
    ThroughSymlink {
        /// The path.
        path: String,
        /// The link above it.
        link: String,
    },
    /// A path below a regular file.
    #[error("`{path}` lies below the file `{file}`")]
    BelowFile {
        /// The path.
        path: String,
        /// The file above it.
        file: String,
    },
    /// The target path is too long to relocate a binary file into.
    #[error("`{path}` must be relocated in binary mode, which allows a target path of at most {max_len} bytes; {target} has {target_len}. Restore to a shorter path")]
    TooLong {
        /// The file.
        path: String,
        /// Longest possible target path.
        max_len: usize,
        /// The target.
        target: String,
        /// Its length.
        target_len: usize,
    },
}

/// What an existing space needs to become the plan's tree.
#[derive(Debug)]
pub struct Changes<'p> {
    /// Records of the paths that are already what the plan wants.
    pub keep: BTreeMap<String, PathRecord>,
    /// Paths to write.
    pub write: Vec<(&'p String, &'p Want)>,
    /// Paths to remove first, sorted (parents before children): extras, and whatever
    /// stands where something else must be written.
    pub remove: Vec<String>,
}

/// The tree a catalog asks for: every path (directories included), sorted.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Path → what it must be.
    pub paths: BTreeMap<String, Want>,
}

impl Plan {
    /// Applies the layers in order (a later layer wins a path) and validates the result.
    pub fn new(catalog: &Catalog, indexes: &[LayerIndex]) -> Result<Plan, PlanError> {
        let mut paths = BTreeMap::new();
        for (layer, index) in catalog.layers.iter().zip(indexes) {
            let relocations: HashMap<&str, (FileMode, &str)> = layer
                .relocations
                .iter()
                .map(|r| {
                    (
                        r.path.as_str(),
                        (
                            r.mode,
                            r.placeholder.as_deref().unwrap_or(&catalog.placeholder),
                        ),
                    )
                })
                .collect();
            for entry in &index.entries {
                let path = safe_path(&entry.path)?;
                let want = match &entry.kind {
                    EntryKind::File { digest, size, exec } => Want::File {
                        key: CasKey {
                            digest: *digest,
                            exec: *exec,
                        },
                        size: *size,
                        relocation: relocations
                            .get(entry.path.as_str())
                            .map(|(m, p)| (*m, p.to_string())),
                    },
                    EntryKind::Symlink { target } => Want::Symlink {
                        target: target.clone(),
                    },
                    EntryKind::Dir => Want::Dir,
                };
                paths.insert(path, want);
            }
        }
        let mut implied = Vec::new();
        for path in paths.keys() {
            for (at, _) in path.match_indices('/') {
                let ancestor = &path[..at];
                match paths.get(ancestor) {
                    Some(Want::Symlink { .. }) => {
                        return Err(PlanError::ThroughSymlink {
                            path: path.clone(),
                            link: ancestor.to_string(),
                        })
                    }
                    Some(Want::File { .. }) => {
                        return Err(PlanError::BelowFile {
                            path: path.clone(),
                            file: ancestor.to_string(),
                        })
                    }
                    Some(Want::Dir) => {}
                    None => implied.push(ancestor.to_string()),
                }
            }
        }
        for dir in implied {
            paths.insert(dir, Want::Dir);
        }
        Ok(Plan { paths })
    }

    /// Refuses a target path longer than some binary file's placeholder.
    pub fn check_target(&self, target: &str) -> Result<(), PlanError> {
        let worst = self
            .paths
            .iter()
            .filter_map(|(path, want)| match want {
                Want::File {
                    relocation: Some((FileMode::Binary, placeholder)),
                    ..
                } => Some((path, placeholder.len())),
                _ => None,
            })
            .min_by_key(|(_, len)| *len);
        match worst {
            Some((path, max_len)) if target.len() > max_len => Err(PlanError::TooLong {
                path: path.clone(),
                max_len,
                target: target.to_string(),
                target_len: target.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Compares the plan with the space at `root`: its `recorded` state and what is on
    /// disk (by metadata, or by content with `verify`).
    pub fn changes(
        &self,
        root: &Path,
        recorded: &SpaceState,
        verify: bool,
    ) -> Result<Changes<'_>, Error> {
        let actual = scan_tree(root)?;
        let mut keep = BTreeMap::new();
        let mut write: Vec<(&String, &Want)> = Vec::new();
        for (path, want) in &self.paths {
            let full = root.join(path);
            match unchanged(
                want,
                recorded.paths.get(path),
                actual.get(path),
                &full,
                verify,
            ) {
                Some(record) => {
                    keep.insert(path.clone(), record);
                }
                None => write.push((path, want)),
            }
        }
        // Extras go, and so does whatever stands where something else must be written.
        let mut remove: Vec<String> = actual
            .keys()
            .filter(|p| !self.paths.contains_key(*p))
            .cloned()
            .collect();
        remove.extend(
            write
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| actual.contains_key(*p))
                .cloned(),
        );
        remove.sort();
        remove.dedup();
        Ok(Changes {
            keep,
            write,
            remove,
        })
    }
}

/// The record to keep for a path that is already what the plan wants, or `None` if it
/// must be written.
fn unchanged(
    want: &Want,
    recorded: Option<&PathRecord>,
    actual: Option<&Actual>,
    full: &Path,
    verify: bool,
) -> Option<PathRecord> {
    match (want, recorded, actual) {
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
        ) if r.cas_key() == Some(*key) && rr == relocation && file_intact(full, a, r, verify) => {
            Some(r.clone())
        }
        _ => None,
    }
}

