//! `gc`: reclaims the disk nothing needs. What is kept is what a tag or a space
//! reaches — the manifests, catalogs and layers of every tag and of every space that
//! still exists, the layer indexes of those layers, and the CAS files they and the
//! spaces' records name. Everything else goes: unreferenced blobs and CAS files, layer
//! indexes and known-layer records of layers no longer here, interrupted downloads,
//! dead processes' scratch, build leftovers, the records of spaces whose directory is
//! gone, and (unless kept) rattler's package and repodata caches. With `unused_for`,
//! tags not made, pulled or restored for that long are removed first.
//!
//! gc takes the store's writers lock exclusively: it waits for every running pull,
//! import, build, snapshot and restore, and none starts until it is done.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::store::{self, Store, Sweepable};

/// What to remove.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Say what would be removed; remove nothing.
    pub dry_run: bool,
    /// Also remove tags not used for this long (tags with no recorded use are kept).
    pub unused_for: Option<Duration>,
    /// Keep rattler's package and repodata caches.
    pub keep_cache: bool,
}

/// What gc removed (or, dry, would remove).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
    /// gc waited for other envoci processes writing to the store.
    pub waited: bool,
    /// Tags removed as unused.
    pub tags: Vec<String>,
    /// Spaces whose directory is gone (their records removed).
    pub forgotten_spaces: Vec<String>,
    /// Per kind of thing (`blob`, `file`, `layer-index`, `known-layer`, `partial`,
    /// `staged`, `scratch`, `build`, `cache`): how many and their bytes.
    pub removed: BTreeMap<&'static str, Removed>,
    /// Bytes freed in all (apparent sizes; a CAS file another directory still
    /// hard-links frees nothing).
    pub bytes_freed: u64,
}

/// A count and its bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Removed {
    /// How many.
    pub items: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Runs gc on `store`; `waiting` is called when it must first wait for other envoci
/// processes writing to the store.
pub fn gc(
    store: &Store,
    options: &Options,
    waiting: impl FnOnce(),
) -> Result<Report, store::Error> {
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };
    let _writers = match store.try_lock_writers()? {
        Some(lock) => lock,
        None => {
            report.waited = true;
            waiting();
            store.lock_writers()?
        }
    };
    if let Some(age) = options.unused_for {
        remove_unused_tags(store, age, options.dry_run, &mut report)?;
    }
    let gone = forget_gone_spaces(store, options.dry_run)?;
    report.forgotten_spaces = gone.iter().map(|p| p.display().to_string()).collect();
    // A dry run removed nothing: what it would remove is not a root either.
    let ignored = crate::check::Ignored {
        tags: report.tags.clone(),
        spaces: gone,
    };
    let (blobs, files) = crate::check::unreferenced(store, &ignored)?;
    let removed_blobs: HashSet<_> = blobs.iter().map(|(d, _)| *d).collect();
    for (digest, bytes) in &blobs {
        count(&mut report, "blob", *bytes);
        if !options.dry_run {
            store.remove_blob(digest)?;
        }
    }
    for (key, bytes) in &files {
        count(&mut report, "file", *bytes);
        if !options.dry_run {
            store.cas_remove(key)?;
        }
    }
    let gone = |d: &crate::digest::Digest| removed_blobs.contains(d) || !store.has_blob(d);
    let indexes = store.layer_indexes().into_iter().filter(|(d, _)| gone(d));
    let indexes: Vec<Sweepable> = indexes.map(|(_, item)| item).collect();
    let known = store.known_layers().into_iter();
    let known: Vec<Sweepable> = known
        .filter(|(d, _)| d.as_ref().is_none_or(gone))
        .map(|(_, item)| item)
        .collect();
    sweep(store, "layer-index", &indexes, options.dry_run, &mut report)?;
    sweep(store, "known-layer", &known, options.dry_run, &mut report)?;
    sweep(
        store,
        "partial",
        &store.partials(),
        options.dry_run,
        &mut report,
    )?;
    sweep(
        store,
        "staged",
        &store.cas_leftovers(),
        options.dry_run,
        &mut report,
    )?;
    sweep(
        store,
        "build",
        &store.build_leftovers(),
        options.dry_run,
        &mut report,
    )?;
    for stale in store.stale_scratch() {
        count(&mut report, "scratch", stale.bytes);
    }
    if !options.dry_run {
        store.clean_stale_scratch();
    }
    if !options.keep_cache {
        sweep(
            store,
            "cache",
            &store.caches(),
            options.dry_run,
            &mut report,
        )?;
    }
    Ok(report)
}

/// Removes the tags unused for longer than `age`.
fn remove_unused_tags(
    store: &Store,
    age: Duration,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), store::Error> {
    let unused: Vec<String> = store
        .tags()?
        .into_iter()
        .filter(|t| t.unused_for().is_some_and(|idle| idle > age))
        .map(|t| t.name)
        .collect();
    report.tags = if dry_run {
        unused
    } else {
        store.remove_refs(&unused)?
    };
    Ok(())
}

/// Drops the records of spaces whose directory no longer exists (they keep nothing);
/// their directories.
fn forget_gone_spaces(store: &Store, dry_run: bool) -> Result<Vec<PathBuf>, store::Error> {
    let mut gone = Vec::new();
    for state in store.space_states()? {
        if std::fs::symlink_metadata(&state.target).is_ok() {
            continue;
        }
        if !dry_run {
            store.remove_space_state(&state.target)?;
        }
        gone.push(state.target);
    }
    Ok(gone)
}

fn sweep(
    store: &Store,
    kind: &'static str,
    items: &[Sweepable],
    dry_run: bool,
    report: &mut Report,
) -> Result<(), store::Error> {
    for item in items {
        count(report, kind, item.bytes);
        if !dry_run {
            store.sweep(item)?;
        }
    }
    Ok(())
}

fn count(report: &mut Report, kind: &'static str, bytes: u64) {
    let entry = report.removed.entry(kind).or_default();
    entry.items += 1;
    entry.bytes += bytes;
    report.bytes_freed += bytes;
}
