//! The plan: the exact tree a catalog asks for, computed from its layer indexes and
//! validated before anything is written (unsafe paths, writes through links, binary
//! relocations that cannot fit the target path); and, for an existing space, what must
//! change to make it that tree ([`Plan::changes`]). A space restored from the same
//! catalog that only drifted is planned from its record instead ([`Plan::for_drift`]):
//! the record of a space is the plan it was written from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::drift::{intact, scan_tree, Actual, Drift};
use super::Error;
use crate::catalog::Catalog;
use crate::layer::{safe_path, EntryKind, LinkTarget};
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
        target: LinkTarget,
    },
    /// A directory.
    Dir,
}

impl Want {
    /// What a path must be again, read from the record of when it was written; `None`
    /// for a relocated file recorded without the size of its CAS content (by a
    /// version before records kept it).
    fn from_record(record: &PathRecord) -> Option<Want> {
        Some(match record {
            PathRecord::Dir => Want::Dir,
            PathRecord::Symlink { target } => Want::Symlink {
                target: target.clone(),
            },
            PathRecord::File {
                relocation,
                size,
                cas_size,
                ..
            } => Want::File {
                key: record.cas_key()?,
                size: match relocation {
                    None => *size,
                    Some(_) => (*cas_size)?,
                },
                relocation: relocation.clone(),
            },
        })
    }
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

    /// The plan of the drifted paths of a space restored from the catalog being
    /// restored, read from its clean record (`state`): each drifted path, and the
    /// source of each drifted bytecode file, which relocating it reads. `None` when a
    /// record lacks something a plan needs ([`Want::from_record`]).
    pub fn for_drift(state: &SpaceState, drift: &Drift) -> Option<Plan> {
        let mut paths = BTreeMap::new();
        let mut want = |path: &String| -> Option<()> {
            let record = state.paths.get(path)?;
            paths.insert(path.clone(), Want::from_record(record)?);
            Some(())
        };
        for path in drift.modified.iter().chain(&drift.missing) {
            want(path)?;
            let source = crate::ingest::attribute::pyc_source(path);
            if let Some(source) = source.filter(|s| state.paths.contains_key(s)) {
                want(&source)?;
            }
        }
        Some(Plan { paths })
    }

    /// What to change in a space whose drift this plan was made for
    /// ([`Plan::for_drift`]): the drifted paths are rewritten (those still there
    /// removed first), extras removed, and every other record of `recorded` kept.
    pub fn drift_changes(
        &self,
        mut recorded: BTreeMap<String, PathRecord>,
        drift: &Drift,
    ) -> Changes<'_> {
        let drifted: HashSet<&String> = drift.modified.iter().chain(&drift.missing).collect();
        for path in &drifted {
            recorded.remove(*path);
        }
        let write = self
            .paths
            .iter()
            .filter(|(path, _)| drifted.contains(path))
            .collect();
        let mut remove: Vec<String> = drift.modified.iter().chain(&drift.extra).cloned().collect();
        remove.sort();
        Changes {
            keep: recorded,
            write,
            remove,
        }
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
        scanned: Option<&HashMap<String, Actual>>,
    ) -> Result<Changes<'_>, Error> {
        // The scan `restore` made to see whether anything drifted, when it made one.
        let fresh;
        let actual = match scanned {
            Some(scan) => scan,
            None => {
                fresh = scan_tree(root)?;
                &fresh
            }
        };
        let mut keep = BTreeMap::new();
        let mut write: Vec<(&String, &Want)> = Vec::new();
        for (path, want) in &self.paths {
            match unchanged(
                want,
                recorded.paths.get(path),
                actual.get(path),
                (root, path),
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
    (root, path): (&Path, &str),
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
        ) if r.cas_key() == Some(*key) && rr == relocation && intact(root, path, a, r, verify) => {
            Some(r.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::catalog::{CatalogLayer, Environment, Relocation};
    use crate::digest::Digest;
    use crate::layer::Entry;
    use crate::space::link::set_layer_mtime;
    use crate::store::Method;

    const PLACEHOLDER: &str = "/placeholder/of/twenty";

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                digest: Digest::of(content),
                size: content.len() as u64,
                exec: false,
            },
        }
    }

    fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }

    /// A catalog of one layer per entry list, each with `relocations`, and the indexes.
    fn layers(layers: Vec<(Vec<Entry>, Vec<Relocation>)>) -> (Catalog, Vec<LayerIndex>) {
        let mut catalog_layers = Vec::new();
        let mut indexes = Vec::new();
        for (i, (entries, relocations)) in layers.into_iter().enumerate() {
            let digest = Digest::of(format!("layer {i}").as_bytes());
            let name = format!("layer-{i}");
            let files = entries.len() as u64;
            catalog_layers.push(CatalogLayer {
                relocations,
                ..CatalogLayer::env_for_tests(&name, digest, digest, 0, files)
            });
            indexes.push(LayerIndex {
                digest,
                diff_id: None,
                size: None,
                entries,
            });
        }
        let catalog = Catalog {
            schema_version: crate::catalog::SCHEMA_VERSION,
            media_type: crate::artifact::CATALOG_MEDIA_TYPE.into(),
            tool: crate::TOOL_VERSION.into(),
            platform: "linux-64".into(),
            blueprint: None,
            spec: None,
            placeholder: PLACEHOLDER.into(),
            records: Vec::new(),
            layers: catalog_layers,
            environment: Environment::default(),
        };
        (catalog, indexes)
    }

    fn plan_of(entries: Vec<Entry>) -> Result<Plan, PlanError> {
        let (catalog, indexes) = layers(vec![(entries, Vec::new())]);
        Plan::new(&catalog, &indexes)
    }

    fn relocation(path: &str, mode: FileMode, placeholder: Option<&str>) -> Relocation {
        Relocation {
            path: path.into(),
            mode,
            placeholder: placeholder.map(String::from),
        }
    }

    #[test]
    fn a_later_layer_wins_a_path() {
        let (catalog, indexes) = layers(vec![
            (vec![file("a.txt", b"first")], Vec::new()),
            (vec![file("a.txt", b"second")], Vec::new()),
        ]);
        let plan = Plan::new(&catalog, &indexes).unwrap();
        match &plan.paths["a.txt"] {
            Want::File { key, .. } => assert_eq!(key.digest, Digest::of(b"second")),
            other => panic!("a.txt planned as {other:?}"),
        }
    }

    #[test]
    fn parent_directories_are_implied() {
        let plan = plan_of(vec![file("lib/python/x.py", b"x")]).unwrap();
        let paths: Vec<&str> = plan.paths.keys().map(String::as_str).collect();
        assert_eq!(paths, ["lib", "lib/python", "lib/python/x.py"]);
        assert_eq!(plan.paths["lib"], Want::Dir);
        assert_eq!(plan.paths["lib/python"], Want::Dir);
    }

    #[test]
    fn a_path_below_a_symlink_is_refused() {
        let err = plan_of(vec![symlink("lib", "/etc"), file("lib/passwd", b"x")]).unwrap_err();
        assert_eq!(
            err,
            PlanError::ThroughSymlink {
                path: "lib/passwd".into(),
                link: "lib".into()
            }
        );
    }

    #[test]
    fn a_path_below_a_file_is_refused() {
        let err = plan_of(vec![file("bin", b"x"), file("bin/tool", b"y")]).unwrap_err();
        assert_eq!(
            err,
            PlanError::BelowFile {
                path: "bin/tool".into(),
                file: "bin".into()
            }
        );
    }

    #[test]
    fn a_path_leaving_the_space_is_refused() {
        for bad in ["../outside", "/etc/passwd", "a/../../b"] {
            let err = plan_of(vec![file(bad, b"x")]).unwrap_err();
            assert!(matches!(err, PlanError::Unsafe(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn a_relocated_file_gets_its_own_placeholder_else_the_catalogs() {
        let (catalog, indexes) = layers(vec![(
            vec![
                file("own", b"a"),
                file("default", b"b"),
                file("plain", b"c"),
            ],
            vec![
                relocation(
                    "own",
                    FileMode::Binary,
                    Some("/opt/anaconda1anaconda2anaconda3"),
                ),
                relocation("default", FileMode::Text, None),
            ],
        )]);
        let plan = Plan::new(&catalog, &indexes).unwrap();
        let relocation_of = |path: &str| match &plan.paths[path] {
            Want::File { relocation, .. } => relocation.clone(),
            other => panic!("{path} planned as {other:?}"),
        };
        assert_eq!(
            relocation_of("own"),
            Some((FileMode::Binary, "/opt/anaconda1anaconda2anaconda3".into()))
        );
        assert_eq!(
            relocation_of("default"),
            Some((FileMode::Text, PLACEHOLDER.into()))
        );
        assert_eq!(relocation_of("plain"), None);
    }

    #[test]
    fn a_target_longer_than_a_binary_placeholder_is_refused() {
        let (catalog, indexes) = layers(vec![(
            vec![file("bin/tool", b"a"), file("etc/conf", b"b")],
            vec![
                relocation("bin/tool", FileMode::Binary, None),
                relocation("etc/conf", FileMode::Text, Some("/x")),
            ],
        )]);
        let plan = Plan::new(&catalog, &indexes).unwrap();
        let fits = "/".repeat(PLACEHOLDER.len());
        let too_long = "/".repeat(PLACEHOLDER.len() + 1);
        // The text file's short placeholder does not limit the target; the binary does.
        assert_eq!(plan.check_target(&fits), Ok(()));
        assert_eq!(
            plan.check_target(&too_long),
            Err(PlanError::TooLong {
                path: "bin/tool".into(),
                max_len: PLACEHOLDER.len(),
                target: too_long.clone(),
                target_len: too_long.len(),
            })
        );
    }

    /// A space on disk as restore leaves it: `files` written with the layer mtime, and
    /// the state recording them.
    struct Space {
        dir: tempfile::TempDir,
        state: SpaceState,
    }

    impl Space {
        fn new(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Space {
            let dir = tempfile::tempdir().unwrap();
            let mut paths = BTreeMap::new();
            for (path, content) in files {
                let full = dir.path().join(path);
                fs::write(&full, content).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(0o644)).unwrap();
                set_layer_mtime(&full).unwrap();
                let Actual::File {
                    size, mode, ino, ..
                } = Actual::read(&full).unwrap()
                else {
                    panic!("{path} is not a file")
                };
                let record = PathRecord::File {
                    digest: Digest::of(content),
                    exec: false,
                    relocation: None,
                    written: None,
                    size,
                    cas_size: None,
                    mode,
                    ino,
                    method: Method::Copy,
                };
                paths.insert(path.to_string(), record);
            }
            for (path, target) in links {
                std::os::unix::fs::symlink(target, dir.path().join(path)).unwrap();
                let record = PathRecord::Symlink {
                    target: (*target).into(),
                };
                paths.insert(path.to_string(), record);
            }
            let state = SpaceState {
                target: dir.path().to_path_buf(),
                manifest: Digest::of(b"manifest"),
                reference: "test".into(),
                dirty: false,
                paths,
            };
            Space { dir, state }
        }

        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.dir.path().join(rel)
        }
    }

    fn written(changes: &Changes<'_>) -> Vec<String> {
        changes.write.iter().map(|(p, _)| p.to_string()).collect()
    }

    #[test]
    fn an_unchanged_space_needs_no_writes() {
        let space = Space::new(
            &[("a.txt", b"alpha"), ("b.txt", b"beta")],
            &[("c", "a.txt")],
        );
        let plan = plan_of(vec![
            file("a.txt", b"alpha"),
            file("b.txt", b"beta"),
            symlink("c", "a.txt"),
        ])
        .unwrap();
        for verify in [false, true] {
            let changes = plan
                .changes(space.dir.path(), &space.state, verify, None)
                .unwrap();
            assert!(changes.write.is_empty(), "verify {verify}: {changes:?}");
            assert!(changes.remove.is_empty(), "verify {verify}: {changes:?}");
            assert_eq!(changes.keep, space.state.paths);
        }
    }

    #[test]
    fn a_modified_file_is_removed_and_rewritten() {
        let space = Space::new(&[("a.txt", b"alpha"), ("b.txt", b"beta")], &[]);
        fs::write(space.path("a.txt"), b"changed by hand").unwrap();
        let plan = plan_of(vec![file("a.txt", b"alpha"), file("b.txt", b"beta")]).unwrap();
        let changes = plan
            .changes(space.dir.path(), &space.state, false, None)
            .unwrap();
        assert_eq!(written(&changes), ["a.txt"]);
        assert_eq!(changes.remove, ["a.txt"]);
        assert_eq!(changes.keep.keys().collect::<Vec<_>>(), ["b.txt"]);
    }

    #[test]
    fn an_extra_file_is_removed_and_nothing_written() {
        let space = Space::new(&[("a.txt", b"alpha")], &[]);
        fs::create_dir(space.path("extra")).unwrap();
        fs::write(space.path("extra/file"), b"not restored").unwrap();
        let plan = plan_of(vec![file("a.txt", b"alpha")]).unwrap();
        let changes = plan
            .changes(space.dir.path(), &space.state, false, None)
            .unwrap();
        assert!(changes.write.is_empty(), "{changes:?}");
        assert_eq!(changes.remove, ["extra", "extra/file"]);
    }

    #[test]
    fn a_deleted_file_is_written_and_not_removed() {
        let space = Space::new(&[("a.txt", b"alpha"), ("b.txt", b"beta")], &[]);
        fs::remove_file(space.path("b.txt")).unwrap();
        let plan = plan_of(vec![file("a.txt", b"alpha"), file("b.txt", b"beta")]).unwrap();
        let changes = plan
            .changes(space.dir.path(), &space.state, false, None)
            .unwrap();
        assert_eq!(written(&changes), ["b.txt"]);
        assert!(changes.remove.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_file_the_new_catalog_changed_is_rewritten_though_intact() {
        let space = Space::new(&[("a.txt", b"alpha")], &[]);
        let plan = plan_of(vec![file("a.txt", b"alpha, version 2")]).unwrap();
        let changes = plan
            .changes(space.dir.path(), &space.state, false, None)
            .unwrap();
        assert_eq!(written(&changes), ["a.txt"]);
        assert_eq!(changes.remove, ["a.txt"]);
    }

    #[test]
    fn a_symlink_pointing_elsewhere_is_rewritten() {
        let space = Space::new(&[("a.txt", b"alpha")], &[("link", "a.txt")]);
        fs::remove_file(space.path("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", space.path("link")).unwrap();
        let plan = plan_of(vec![file("a.txt", b"alpha"), symlink("link", "a.txt")]).unwrap();
        let changes = plan
            .changes(space.dir.path(), &space.state, false, None)
            .unwrap();
        assert_eq!(written(&changes), ["link"]);
        assert_eq!(changes.remove, ["link"]);
    }

    #[test]
    fn only_verify_finds_a_same_size_edit_that_kept_the_mtime() {
        let space = Space::new(&[("a.txt", b"alpha")], &[]);
        // Same size, same inode, mtime put back: the quick check cannot see it.
        fs::write(space.path("a.txt"), b"ALPHA").unwrap();
        set_layer_mtime(&space.path("a.txt")).unwrap();
        let plan = plan_of(vec![file("a.txt", b"alpha")]).unwrap();
        let quick = plan
            .changes(space.dir.path(), &space.state, false, None)
            .unwrap();
        assert!(quick.write.is_empty(), "{quick:?}");
        let verified = plan
            .changes(space.dir.path(), &space.state, true, None)
            .unwrap();
        assert_eq!(written(&verified), ["a.txt"]);
    }
}
