//! Read-only views of the store for `ls` and `inspect`.

use serde::Serialize;

use crate::artifact::{self, Artifact, LoadError};
use crate::store::{self, Store};

/// One row of `envoci ls`.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// Tag.
    pub tag: String,
    /// Manifest digest.
    pub digest: String,
    /// Conda platform.
    pub platform: String,
    /// Conda packages.
    pub packages: u64,
    /// Layers.
    pub layers: u64,
    /// Paths over all layers.
    pub files: u64,
    /// Uncompressed bytes over all layers.
    pub size: u64,
    /// Compressed bytes over all layers (what a pull downloads at most).
    pub blob_size: u64,
    /// The longest target path (bytes) it can be restored to; `null`: any length.
    pub max_target: Option<usize>,
    /// Layer bytes (compressed) no other environment in the store uses: what removing
    /// it (and `gc`) frees, if no space holds it.
    pub exclusive_bytes: u64,
    /// Layer bytes it shares with other environments.
    pub shared_bytes: u64,
}

/// One space of the store, for `ls --spaces`.
#[derive(Clone, Debug, Serialize)]
pub struct SpaceListing {
    /// The space's directory.
    pub path: String,
    /// What was restored into it (tag or digest, as given).
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The tags naming that manifest now.
    pub tags: Vec<String>,
    /// A restore into it was interrupted (the next restore finishes it).
    pub dirty: bool,
    /// Its directory is gone (`gc` forgets it).
    pub gone: bool,
    /// Paths restored.
    pub files: u64,
    /// Bytes of its regular files as restored.
    pub bytes: u64,
}

/// Every space the store has restored.
pub fn spaces(store: &Store) -> Result<Vec<SpaceListing>, store::Error> {
    let tags = store.tags()?;
    let mut out: Vec<SpaceListing> = store
        .space_states()?
        .into_iter()
        .map(|state| {
            let digest = state.manifest.oci();
            let bytes = state.paths.values().fold(0u64, |sum, record| match record {
                store::PathRecord::File { size, .. } => sum.saturating_add(*size),
                _ => sum,
            });
            SpaceListing {
                path: state.target.display().to_string(),
                reference: state.reference.clone(),
                tags: tags
                    .iter()
                    .filter(|t| t.descriptor.digest().to_string() == digest)
                    .map(|t| t.name.clone())
                    .collect(),
                digest,
                dirty: state.dirty,
                gone: std::fs::symlink_metadata(&state.target).is_err(),
                files: state.paths.len() as u64,
                bytes,
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Every envoci environment tagged in the store (other artifacts are skipped).
pub fn list(store: &Store) -> Result<Vec<Listing>, store::Error> {
    let mut loaded = Vec::new();
    for tag in store.tags()? {
        match artifact::load(store, &tag.name) {
            Ok(a) => loaded.push((tag.name, a)),
            Err(LoadError::Store(e)) => return Err(e),
            Err(_) => continue,
        }
    }
    // Which manifests use each layer: a layer only one manifest uses is its own.
    let mut users: std::collections::HashMap<String, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for (_, a) in &loaded {
        for layer in a.manifest.layers() {
            let users = users.entry(layer.digest().to_string()).or_default();
            users.insert(a.digest.oci());
        }
    }
    let mut out = Vec::new();
    for (name, a) in &loaded {
        let mut row = listing(name, a);
        for layer in a.manifest.layers() {
            let shared = users
                .get(&layer.digest().to_string())
                .is_some_and(|u| u.len() > 1);
            if shared {
                row.shared_bytes = row.shared_bytes.saturating_add(layer.size());
            } else {
                row.exclusive_bytes = row.exclusive_bytes.saturating_add(layer.size());
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// The listing row of an artifact.
pub fn listing(tag: &str, a: &Artifact) -> Listing {
    Listing {
        tag: tag.to_string(),
        digest: a.digest.oci(),
        platform: a.catalog.platform.clone(),
        packages: a.catalog.records.len() as u64,
        layers: a.catalog.layers.len() as u64,
        files: a.catalog.file_count(),
        size: a.catalog.size(),
        blob_size: a
            .manifest
            .layers()
            .iter()
            .fold(0, |n, l| n.saturating_add(l.size())),
        max_target: a.catalog.target_limit().map(|(_, len)| len),
        exclusive_bytes: 0,
        shared_bytes: 0,
    }
}

/// Human-readable byte count (KiB, MiB, ...).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
