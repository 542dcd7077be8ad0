//! The plan: the exact tree a catalog asks for, computed from its layer indexes and
//! validated before anything is written (unsafe paths, writes through links, binary
//! relocations that cannot fit the target path).

use std::collections::{BTreeMap, HashMap};

use crate::catalog::Catalog;
use crate::layer::{safe_path, EntryKind};
use crate::relocate::FileMode;
use crate::store::{CasKey, LayerIndex};

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
}
