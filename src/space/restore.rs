//! Restoring a catalog into a space: decide what to do, then create or update.
//!
//! A new space is assembled in a temporary directory beside the target, recorded and
//! renamed into place. An existing space is compared with its record and what is on
//! disk; only what differs is removed and rewritten, with the record marked dirty
//! meanwhile. A space that only drifted from the catalog being restored is planned
//! from its record, and the layer indexes are read only if a CAS file needs repair.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::drift::{drift_against, scan_tree, Actual, Drift};
use super::target::{absolute_target, is_empty_dir, utf8};
use super::{temp, Changes, Error, Linker, Options, Plan, Report, SpaceState, Want};
use crate::artifact::{self, Artifact};
use crate::fsutil::{parent_of, remove_any, sync_dir};
use crate::store::{self, CasKey, LayerIndex, Method, PathRecord, Scratch, Store};

/// Restores `reference` (a tag or manifest digest in `store`) into `target`.
pub fn restore(
    store: &Store,
    reference: &str,
    target: &Path,
    options: &Options,
) -> Result<Report, Error> {
    // Before the artifact is read: gc waits until this restore is done.
    let _writing = store.writing()?;
    let artifact = artifact::load(store, reference)?;
    store.mark_used(&artifact.digest)?;
    check_platform(
        reference,
        &artifact.catalog.platform,
        options.platform.as_deref(),
    )?;
    let target = absolute_target(target)?;
    let target_str = utf8(&target)?;
    let _lock = store.lock_space(&target)?;
    temp::clean_stale_temps(&target);

    let recorded = store.space_state(&target)?;
    let damaged = store.damaged_files()?;
    let scanned = match already_restored(
        store,
        recorded.as_ref(),
        &artifact,
        &target,
        options.verify,
        &damaged,
    )? {
        Restored::Done(report) => return Ok(report),
        Restored::Drifted(scan) => scan,
    };

    let scratch = store.scratch()?;
    let indexes = OnceLock::new();
    let drift = scanned.as_ref().map(|s| &s.drift);
    let repair = drift
        .zip(recorded.as_ref())
        .and_then(|(drift, state)| Plan::for_drift(state, drift));
    let (plan, drift) = match repair {
        Some(plan) => (plan, drift),
        None => {
            let all = layer_indexes(store, &scratch, &artifact)?;
            let plan = Plan::new(&artifact.catalog, &all)?;
            indexes.get_or_init(|| all);
            (plan, None)
        }
    };
    plan.check_target(target_str)?;
    let job = Job {
        store,
        scratch: &scratch,
        artifact: &artifact,
        indexes,
        plan: &plan,
        target_str,
        linker: Linker::new(options.link),
        verify: options.verify,
        damaged: &damaged,
        progress: &options.progress,
        scanned: scanned.as_ref().map(|s| &s.scan),
        drift,
    };
    job.run(reference, &target, recorded, options)
}

/// The common case: the space holds this catalog already and nothing drifted. Its
/// record is the plan then, so a clean drift check is all there is to do — unless a
/// file came from a CAS file known damaged, or is a hard link to one repaired since.
fn already_restored(
    store: &Store,
    recorded: Option<&SpaceState>,
    artifact: &Artifact,
    target: &Path,
    verify: bool,
    damaged: &HashSet<CasKey>,
) -> Result<Restored, Error> {
    let Some(state) =
        recorded.filter(|s| !s.dirty && s.manifest == artifact.digest && s.target.is_dir())
    else {
        return Ok(Restored::Drifted(None));
    };
    if from_damaged(state.paths.iter(), damaged).next().is_some()
        || !stale_links(store, state.paths.iter())?.is_empty()
    {
        return Ok(Restored::Drifted(None));
    }
    let scan = scan_tree(target)?;
    let drift = drift_against(state, &scan, verify);
    if !drift.is_clean() {
        return Ok(Restored::Drifted(Some(Scanned { scan, drift })));
    }
    Ok(Restored::Done(Report {
        target: target.to_path_buf(),
        manifest: artifact.digest.oci(),
        unchanged: state.paths.len() as u64,
        ..Report::default()
    }))
}

/// Whether a space is already what the restore wants.
enum Restored {
    /// Yes: nothing to do.
    Done(Report),
    /// No; the scan of the space that showed it, if one was made (the update plans
    /// from it instead of scanning again).
    Drifted(Option<Scanned>),
}

/// A scan of a space restored from the catalog being restored, and how it drifted
/// from its record.
struct Scanned {
    scan: HashMap<String, Actual>,
    drift: Drift,
}

/// The index of every layer of `artifact`, extracting each layer that has no index
/// checked against the catalog's digest, diff id and size (never indexed, indexed
/// before indexes recorded them, or an index damaged). A catalog that lies about a
/// layer fails here.
pub fn layer_indexes(
    store: &Store,
    scratch: &Scratch,
    artifact: &Artifact,
) -> Result<Vec<LayerIndex>, Error> {
    artifact
        .catalog
        .layers
        .iter()
        .zip(artifact.manifest.layers())
        .map(
            |(layer, descriptor)| match store.layer_index(&layer.digest) {
                Ok(Some(index)) if index.is_of(layer) => Ok(index),
                // Missing, older than the checks, or damaged: made again from the blob.
                Ok(_) | Err(store::Error::BadJson { .. }) => Ok(store.extract_layer(
                    scratch,
                    layer,
                    descriptor.media_type().as_ref(),
                    false,
                )?),
                Err(e) => Err(e.into()),
            },
        )
        .collect()
}

/// Refuses to empty a directory whose content is not a space's to lose: the store, an
/// ancestor of it or a place inside it, `/`, and the home directory.
fn refuse_precious(store: &Store, target: &Path) -> Result<(), Error> {
    let home = dirs::home_dir().and_then(|h| fs::canonicalize(h).ok());
    let reason = if store.would_be_touched_by_emptying(target) {
        "it holds the envoci store, or lies inside it"
    } else if target.parent().is_none() {
        "it is the root directory"
    } else if home.as_deref() == Some(target) {
        "it is the home directory"
    } else {
        return Ok(());
    };
    Err(Error::BadTarget {
        path: target.to_path_buf(),
        reason: format!("{reason}; --force never replaces it"),
    })
}

/// One restore: the plan and everything writing it needs.
pub(super) struct Job<'a> {
    pub(super) store: &'a Store,
    pub(super) scratch: &'a Scratch,
    pub(super) artifact: &'a Artifact,
    /// The artifact's layer indexes, read when first needed ([`Job::indexes`]).
    pub(super) indexes: OnceLock<Vec<LayerIndex>>,
    pub(super) plan: &'a Plan,
    pub(super) target_str: &'a str,
    pub(super) linker: Linker,
    /// Rehash the CAS files used (`--verify`).
    pub(super) verify: bool,
    /// CAS files `check` found damaged: repaired before use, and the space files that
    /// came from them rewritten.
    pub(super) damaged: &'a HashSet<CasKey>,
    /// Where progress (files written) goes.
    pub(super) progress: &'a crate::progress::Reporter,
    /// The scan of the space made before planning, if one was.
    pub(super) scanned: Option<&'a HashMap<String, Actual>>,
    /// Set when the plan covers only these drifted paths ([`Plan::for_drift`]).
    pub(super) drift: Option<&'a Drift>,
}

impl<'a> Job<'a> {
    /// The layer indexes of the artifact, read (and extracted if need be) on first use.
    pub(super) fn indexes(&self) -> Result<&[LayerIndex], Error> {
        if let Some(indexes) = self.indexes.get() {
            return Ok(indexes);
        }
        let indexes = layer_indexes(self.store, self.scratch, self.artifact)?;
        Ok(self.indexes.get_or_init(|| indexes))
    }

    /// Creates or updates the space, depending on what is at `target`.
    fn run(
        &self,
        reference: &str,
        target: &Path,
        recorded: Option<SpaceState>,
        options: &Options,
    ) -> Result<Report, Error> {
        match (fs::symlink_metadata(target), recorded) {
            (Err(_), _) => self.create(reference, target),
            (Ok(m), _) if !m.is_dir() => Err(Error::BadTarget {
                path: target.to_path_buf(),
                reason: "it is not a directory".into(),
            }),
            (Ok(_), Some(state)) => self.update(reference, target, state, options.verify),
            (Ok(_), None) if is_empty_dir(target) => self.create(reference, target),
            (Ok(_), None) if options.force => {
                refuse_precious(self.store, target)?;
                let state = SpaceState {
                    target: target.to_path_buf(),
                    manifest: self.artifact.digest,
                    reference: reference.into(),
                    dirty: true,
                    paths: BTreeMap::new(),
                };
                self.update(reference, target, state, options.verify)
            }
            (Ok(_), None) => Err(Error::NotASpace {
                path: target.to_path_buf(),
            }),
        }
    }

    /// A new space: assembled beside the target, recorded, renamed into place.
    fn create(&self, reference: &str, target: &Path) -> Result<Report, Error> {
        let tmp = temp::temp_beside(target);
        // Should this process die, whoever cleans its scratch removes `tmp` too.
        self.scratch.own_dir(&tmp)?;
        let parent = parent_of(target);
        fs::create_dir_all(parent).map_err(|source| Error::Write {
            path: parent.to_path_buf(),
            source,
        })?;
        fs::create_dir(&tmp).map_err(|source| Error::Write {
            path: tmp.clone(),
            source,
        })?;
        let result = self.assemble(&tmp, reference, target);
        if result.is_err() {
            let _ = remove_any(&tmp);
        }
        result.map_err(|e| in_target(e, &tmp, target))
    }

    /// Writes the whole plan into `tmp`, records it as `target`'s state and renames
    /// `tmp` to `target`.
    fn assemble(&self, tmp: &Path, reference: &str, target: &Path) -> Result<Report, Error> {
        let mut report = Report {
            created: true,
            ..Report::default()
        };
        let wanted: Vec<(&String, &Want)> = self.plan.paths.iter().collect();
        let paths = self.write_paths(tmp, &wanted, &mut report)?;
        let state = SpaceState {
            target: target.to_path_buf(),
            manifest: self.artifact.digest,
            reference: reference.into(),
            dirty: false,
            paths,
        };
        self.store.write_space_state(&state)?;
        fs::rename(tmp, target).map_err(|source| Error::Write {
            path: target.to_path_buf(),
            source,
        })?;
        sync_dir(parent_of(target)).ok();
        report.target = target.to_path_buf();
        report.manifest = self.artifact.digest.oci();
        Ok(report)
    }

    /// An existing space: touch only what differs.
    fn update(
        &self,
        reference: &str,
        target: &Path,
        mut state: SpaceState,
        verify: bool,
    ) -> Result<Report, Error> {
        let recorded = !state.paths.is_empty();
        let changes = match self.drift {
            Some(drift) => self
                .plan
                .drift_changes(std::mem::take(&mut state.paths), drift),
            None => self.changes(target, &state, verify)?,
        };
        let mut report = Report {
            target: target.to_path_buf(),
            manifest: self.artifact.digest.oci(),
            unchanged: changes.keep.len() as u64,
            ..Report::default()
        };
        if changes.write.is_empty()
            && changes.remove.is_empty()
            && !state.dirty
            && state.manifest == self.artifact.digest
        {
            return Ok(report);
        }

        if !recorded {
            // A directory taken over with --force: recorded (dirty) before it changes,
            // so the next restore knows it for a space.
            state.dirty = true;
            self.store.write_space_state(&state)?;
        } else {
            self.store.mark_space_dirty(target)?;
        }
        // Children sort after their parents: remove in reverse order.
        for path in changes.remove.iter().rev() {
            let full = target.join(path);
            if fs::symlink_metadata(&full).is_ok() {
                remove_any(&full).map_err(|source| Error::Write { path: full, source })?;
                report.removed += 1;
            }
        }
        let mut paths = changes.keep;
        paths.extend(self.write_paths(target, &changes.write, &mut report)?);
        state.paths = paths;
        state.manifest = self.artifact.digest;
        state.reference = reference.into();
        state.dirty = false;
        self.store.write_space_state(&state)?;
        Ok(report)
    }

    /// What to change in `target` to make it the (whole) plan: what differs from it,
    /// and every file that came from a CAS file known damaged.
    fn changes(
        &self,
        target: &Path,
        state: &SpaceState,
        verify: bool,
    ) -> Result<Changes<'a>, Error> {
        let mut changes = self.plan.changes(target, state, verify, self.scanned)?;
        // Files that came from a CAS file known damaged are damaged too: rewrite them.
        let mut suspect: Vec<String> = from_damaged(changes.keep.iter(), self.damaged)
            .cloned()
            .collect();
        // Hard links to a CAS file that was repaired since: they hold the damaged inode.
        suspect.extend(stale_links(self.store, changes.keep.iter())?);
        for path in suspect {
            changes.keep.remove(&path);
            if let Some(wanted) = self.plan.paths.get_key_value(&path) {
                changes.write.push(wanted);
            }
            changes.remove.push(path);
        }
        changes.remove.sort();
        Ok(changes)
    }
}

/// The paths of `records` hard-linked to a CAS file that a repair has replaced since
/// (their inode is not the CAS file's any more): only files of repaired keys are
/// stat'ed, so a pristine space costs nothing more.
fn stale_links<'r>(
    store: &Store,
    records: impl Iterator<Item = (&'r String, &'r PathRecord)>,
) -> Result<Vec<String>, Error> {
    let repaired = store.repaired_files()?;
    if repaired.is_empty() {
        return Ok(Vec::new());
    }
    Ok(records
        .filter(|(_, r)| match r {
            PathRecord::File { method, ino, .. } if *method == Method::Hardlink => r
                .cas_key()
                .is_some_and(|k| repaired.contains(&k) && store.cas_inode(&k) != Some(*ino)),
            _ => false,
        })
        .map(|(path, _)| path.clone())
        .collect())
}

/// The paths of `records` whose file came from a CAS file in `damaged`.
fn from_damaged<'r>(
    records: impl Iterator<Item = (&'r String, &'r PathRecord)>,
    damaged: &'r HashSet<CasKey>,
) -> impl Iterator<Item = &'r String> {
    records
        .filter(move |(_, r)| r.cas_key().is_some_and(|k| damaged.contains(&k)))
        .map(|(path, _)| path)
}

/// Names paths in an error as the user knows them, not by the temporary directory.
fn in_target(e: Error, tmp: &Path, target: &Path) -> Error {
    let rename = |path: PathBuf| target.join(path.strip_prefix(tmp).unwrap_or(&path));
    match e {
        Error::Write { path, source } => Error::Write {
            path: rename(path),
            source,
        },
        Error::LinkUnsupported { mode, path } => Error::LinkUnsupported {
            mode,
            path: rename(path),
        },
        other => other,
    }
}

/// Refuses an environment for another platform than `wanted` (default: this machine's).
fn check_platform(reference: &str, found: &str, wanted: Option<&str>) -> Result<(), Error> {
    if found == wanted.unwrap_or(artifact::host_platform()) {
        return Ok(());
    }
    Err(Error::ForeignPlatform {
        reference: reference.to_string(),
        found: found.to_string(),
        wanted: wanted.map(str::to_string),
    })
}
