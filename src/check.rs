//! `check`: is the store whole and is every space still what restore made it?
//!
//! The quick check reads metadata only: every tagged manifest, catalog and layer blob is
//! present with its size, every indexed CAS file is read-only with the layer mtime and
//! its size, every space matches its recorded state. `verify` rehashes every blob, every
//! CAS file and every space file; a CAS file found damaged is recorded, and the next
//! restore repairs it from its layer before using it. A layer index that cannot be read
//! is a problem too; `repair` makes it again from the layer blob.
//!
//! `check` also lists what is left over and takes space without being wrong: scratch
//! directories of processes that died (with the temporary directory of a restore that
//! was killed), and blobs and CAS files that no tag and no space references. `repair`
//! removes them; blobs and CAS files only while no other envoci process is writing to
//! the store (a pull's blobs are unreferenced until it tags them).

use std::collections::HashSet;

use serde::Serialize;

use crate::artifact;
use crate::catalog::CatalogLayer;
use crate::digest::Digest;
use crate::space;
use crate::store::{self, CasKey, CasState, Store};

/// One thing found wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// What kind of object: `tag`, `blob`, `file`, `index`, `space`.
    pub kind: &'static str,
    /// Which one (tag, digest, path).
    pub subject: String,
    /// What is wrong, and what to do.
    pub detail: String,
}

/// What `check` looked at and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Tags checked.
    pub tags: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// CAS files checked.
    pub files: u64,
    /// Spaces checked.
    pub spaces: u64,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// Manifests in the layout that are not envoci artifacts (left alone).
    pub foreign: Vec<String>,
    /// Spaces whose directory was deleted; their state was dropped.
    pub forgotten: Vec<String>,
    /// Layers whose damaged index was made again from their blob (`repair`).
    pub rebuilt: Vec<String>,
    /// What takes space without being referenced (removed, with `repair`).
    pub leftovers: Vec<Leftover>,
    /// The leftovers were removed (`repair`).
    pub removed: bool,
    /// Unreferenced blobs and CAS files were kept because another envoci process was
    /// writing to the store.
    pub busy: bool,
}

/// Something that takes space and that nothing needs.
#[derive(Clone, Debug, Serialize)]
pub struct Leftover {
    /// `scratch` (of a dead process), `temp` (a killed restore's new space), `blob`,
    /// `file` (in the CAS).
    pub kind: &'static str,
    /// Its path or digest.
    pub subject: String,
    /// Bytes it takes.
    pub bytes: u64,
}

/// Checks `store` and its spaces: the tagged artifacts and what they reference, then
/// the blobs (all of them, rehashed, with `verify`), the CAS files the layer indexes
/// name, and the spaces.
pub fn check(store: &Store, verify: bool, repair: bool) -> Result<Report, store::Error> {
    let mut report = Report::default();
    let mut seen = check_tags(store, &mut report)?;
    if repair {
        // Before the search for leftovers, which counts a layer's files by its index.
        rebuild_indexes(store, &mut seen, &mut report)?;
    }
    if verify {
        verify_blobs(store, &mut report)?;
    } else {
        report.blobs = seen.blobs.len() as u64;
    }
    check_files(store, seen.files, verify, &mut report)?;
    check_spaces(store, verify, &mut report)?;
    leftovers(store, repair, &mut report)?;
    Ok(report)
}

/// Lists (and with `repair` removes) dead processes' scratch, killed restores'
/// temporaries, and unreferenced blobs and CAS files.
fn leftovers(store: &Store, repair: bool, report: &mut Report) -> Result<(), store::Error> {
    for stale in store.stale_scratch() {
        if let Some((dir, bytes)) = &stale.owned {
            report.leftovers.push(Leftover {
                kind: "temp",
                subject: dir.display().to_string(),
                bytes: *bytes,
            });
        }
        report.leftovers.push(Leftover {
            kind: "scratch",
            subject: stale.dir.display().to_string(),
            bytes: stale.bytes,
        });
    }
    // Nobody may commit a blob while this looks for unreferenced ones.
    let writers = store.try_lock_writers()?;
    let (blobs, files) = unreferenced(store, &Ignored::default())?;
    report
        .leftovers
        .extend(blobs.iter().map(|(d, bytes)| Leftover {
            kind: "blob",
            subject: d.oci(),
            bytes: *bytes,
        }));
    report
        .leftovers
        .extend(files.iter().map(|(k, bytes)| Leftover {
            kind: "file",
            subject: k.name(),
            bytes: *bytes,
        }));
    if !repair {
        return Ok(());
    }
    store.clean_stale_scratch();
    report.removed = true;
    if writers.is_none() {
        report.busy = true;
        report
            .leftovers
            .retain(|l| l.kind == "scratch" || l.kind == "temp");
        return Ok(());
    }
    for (digest, _) in &blobs {
        store.remove_blob(digest)?;
        store.remove_layer_index(digest)?;
    }
    for (key, _) in &files {
        store.cas_remove(key)?;
    }
    Ok(())
}

/// Tags and spaces not to count as roots.
#[derive(Debug, Default)]
pub(crate) struct Ignored {
    /// Tag names.
    pub tags: Vec<String>,
    /// Space directories.
    pub spaces: Vec<std::path::PathBuf>,
}

/// Blobs no tag and no space reaches (through manifests and indexes), and CAS files
/// no reached layer and no space names, with their sizes.
pub(crate) type Unreferenced = (Vec<(Digest, u64)>, Vec<(CasKey, u64)>);

/// What no tag and no space reaches, not counting the tags and spaces `ignored` names
/// (those gc is about to remove).
pub(crate) fn unreferenced(store: &Store, ignored: &Ignored) -> Result<Unreferenced, store::Error> {
    let mut roots: Vec<Digest> = store
        .tags()?
        .iter()
        .filter(|t| !ignored.tags.contains(&t.name))
        .filter_map(|t| store::from_oci_digest(t.descriptor.digest()))
        .collect();
    let mut files: HashSet<CasKey> = HashSet::new();
    for state in store.space_states()? {
        if ignored.spaces.contains(&state.target) {
            continue;
        }
        roots.push(state.manifest);
        files.extend(state.paths.values().filter_map(|r| r.cas_key()));
    }
    let mut blobs: HashSet<Digest> = HashSet::new();
    while let Some(digest) = roots.pop() {
        if !blobs.insert(digest) {
            continue;
        }
        if let Some(index) = store.layer_index(&digest).ok().flatten() {
            files.extend(index.files().map(|(k, _)| k));
        }
        roots.extend(children(store, &digest));
    }
    let blobs_left = store
        .blob_list()?
        .into_iter()
        .filter(|(d, _)| !blobs.contains(d))
        .collect();
    let files_left = store
        .cas_list()
        .into_iter()
        .filter(|(k, _)| !files.contains(k))
        .collect();
    Ok((blobs_left, files_left))
}

/// The blobs a manifest or index names (none for other blobs, or small ones that do
/// not parse).
fn children(store: &Store, digest: &Digest) -> Vec<Digest> {
    // Manifests and indexes are small; layers are not read.
    const MAX_DOCUMENT: u64 = 4 << 20;
    if store.blob_size(digest).map_or(true, |s| s > MAX_DOCUMENT) {
        return Vec::new();
    }
    let Ok(bytes) = store.read_blob(digest) else {
        return Vec::new();
    };
    let descriptors: Vec<oci_spec::image::Descriptor> = match artifact::parse_index(&bytes) {
        Ok(Some(index)) => index.manifests().clone(),
        _ => match serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes) {
            Ok(m) => std::iter::once(m.config().clone())
                .chain(m.layers().iter().cloned())
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    descriptors
        .iter()
        .filter_map(|d| store::from_oci_digest(d.digest()))
        .collect()
}

/// What the tags reference: blobs (manifests and layers) and CAS files with sizes.
#[derive(Default)]
struct Seen {
    blobs: HashSet<Digest>,
    files: HashSet<(CasKey, u64)>,
    /// Layers (with their media type) whose index is damaged.
    damaged_indexes: Vec<(CatalogLayer, String)>,
}

/// Makes the damaged layer indexes again from their blobs; each one made is no longer
/// a problem, and its files count as referenced.
fn rebuild_indexes(
    store: &Store,
    seen: &mut Seen,
    report: &mut Report,
) -> Result<(), store::Error> {
    if seen.damaged_indexes.is_empty() {
        return Ok(());
    }
    let scratch = store.scratch()?;
    for (layer, media_type) in std::mem::take(&mut seen.damaged_indexes) {
        let subject = layer.digest.oci();
        let of_this = |p: &Problem| p.kind == "index" && p.subject == subject;
        match store.extract_layer(&scratch, &layer, &media_type, false) {
            Ok(index) => {
                seen.files.extend(index.files());
                report.problems.retain(|p| !of_this(p));
                report.rebuilt.push(subject);
            }
            Err(e) => {
                let why = crate::error_chain(&e);
                for p in report.problems.iter_mut().filter(|p| of_this(p)) {
                    p.detail = format!("{}; making it again failed: {why}", p.detail);
                }
            }
        }
    }
    Ok(())
}

fn problem(kind: &'static str, subject: String, detail: String) -> Problem {
    Problem {
        kind,
        subject,
        detail,
    }
}

/// Loads every tagged artifact and checks its layers. Manifests that are not envoci
/// artifacts are listed as foreign and left alone.
fn check_tags(store: &Store, report: &mut Report) -> Result<Seen, store::Error> {
    let mut seen = Seen::default();
    for tag in store.tags()? {
        report.tags += 1;
        match artifact::load(store, &tag.name) {
            Ok(artifact) => check_layers(store, &tag.name, &artifact, &mut seen, report),
            Err(artifact::LoadError::NotEnvoci { .. }) => report.foreign.push(tag.name.clone()),
            Err(e) => {
                report
                    .problems
                    .push(problem("tag", tag.name.clone(), crate::error_chain(&e)))
            }
        }
    }
    Ok(seen)
}

/// Checks each layer blob of `artifact` not seen yet: present with its size, and its
/// index readable (whose files [`check_files`] checks).
fn check_layers(
    store: &Store,
    tag: &str,
    artifact: &artifact::Artifact,
    seen: &mut Seen,
    report: &mut Report,
) {
    seen.blobs.insert(artifact.digest);
    for (digest, descriptor) in artifact.layer_blobs() {
        if !seen.blobs.insert(digest) {
            continue;
        }
        match store.blob_size(&digest) {
            Err(_) => report.problems.push(problem(
                "blob",
                digest.oci(),
                format!("layer of `{tag}` is missing"),
            )),
            Ok(size) if size != descriptor.size() => report.problems.push(problem(
                "blob",
                digest.oci(),
                format!(
                    "layer of `{tag}` has {size} bytes, expected {}",
                    descriptor.size()
                ),
            )),
            Ok(_) => {}
        }
        match store.layer_index(&digest) {
            Ok(Some(index)) => seen.files.extend(index.files()),
            Ok(None) => {}
            Err(e) => {
                report.problems.push(problem(
                    "index",
                    digest.oci(),
                    format!(
                        "{}; the next restore or `check --repair` makes it again from the layer",
                        crate::error_chain(&e)
                    ),
                ));
                let layer = artifact.catalog.layers.iter().find(|l| l.digest == digest);
                if let Some(layer) = layer {
                    let media_type = descriptor.media_type().to_string();
                    seen.damaged_indexes.push((layer.clone(), media_type));
                }
            }
        }
    }
}

/// Rehashes every blob in the store, referenced or not.
fn verify_blobs(store: &Store, report: &mut Report) -> Result<(), store::Error> {
    let (count, bad) = store.verify_blobs()?;
    report.blobs = count;
    report.problems.extend(bad.into_iter().map(|name| Problem {
        kind: "blob",
        subject: name,
        detail: "content does not match its digest".into(),
    }));
    Ok(())
}

/// Checks the CAS files the layer indexes name (content too with `verify`), and
/// records the damaged ones so that the next restore repairs them before using them.
fn check_files(
    store: &Store,
    files: HashSet<(CasKey, u64)>,
    verify: bool,
    report: &mut Report,
) -> Result<(), store::Error> {
    report.files = files.len() as u64;
    let files: Vec<(CasKey, u64)> = files.into_iter().collect();
    let found = store.check_cas_files(&files, verify);
    let damaged: Vec<CasKey> = found
        .iter()
        .filter(|(_, _, state)| *state == CasState::Damaged)
        .map(|(key, _, _)| *key)
        .collect();
    store.mark_damaged(&damaged)?;
    let mut bad: Vec<Problem> = found
        .into_iter()
        .filter_map(|(_, path, state)| {
            let detail = match state {
                CasState::Ok => return None,
                CasState::Missing => "missing from the file CAS; the next restore re-extracts it",
                CasState::Damaged => "changed in the file CAS (written through a hard link?); the next restore repairs it from its layer",
            };
            Some(problem("file", path.display().to_string(), detail.into()))
        })
        .collect();
    bad.sort_by(|a, b| a.subject.cmp(&b.subject));
    report.problems.extend(bad);
    Ok(())
}

/// Checks every recorded space against its record; forgets spaces whose directory
/// was deleted.
fn check_spaces(store: &Store, verify: bool, report: &mut Report) -> Result<(), store::Error> {
    for state in store.space_states()? {
        report.spaces += 1;
        let subject = state.target.display().to_string();
        if !state.target.exists() {
            // Deleting a space directory is how a user drops it: forget its state.
            store.remove_space_state(&state.target)?;
            report.forgotten.push(subject);
            continue;
        }
        if state.dirty {
            report.problems.push(problem(
                "space",
                subject.clone(),
                "a restore was interrupted; run restore again to finish it".into(),
            ));
        }
        match space::drift(&state, verify) {
            Ok(d) if d.is_clean() => {}
            Ok(d) => report.problems.push(problem(
                "space",
                subject,
                format!("not pristine ({}); restore repairs it", describe(&d)),
            )),
            Err(e) => report
                .problems
                .push(problem("space", subject, crate::error_chain(&e))),
        }
    }
    Ok(())
}

/// `modified: a, b; missing: c`, at most five paths of each.
fn describe(drift: &space::Drift) -> String {
    let mut parts = Vec::new();
    for (what, list) in [
        ("modified", &drift.modified),
        ("missing", &drift.missing),
        ("extra", &drift.extra),
    ] {
        if !list.is_empty() {
            let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
            let more = if list.len() > 5 {
                format!(" and {} more", list.len() - 5)
            } else {
                String::new()
            };
            parts.push(format!("{what}: {}{more}", shown.join(", ")));
        }
    }
    parts.join("; ")
}
