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
}

/// Every envoci environment tagged in the store (other artifacts are skipped).
pub fn list(store: &Store) -> Result<Vec<Listing>, store::Error> {
    let mut out = Vec::new();
    for tag in store.tags()? {
        match artifact::load(store, &tag.name) {
            Ok(a) => out.push(listing(&tag.name, &a)),
            Err(LoadError::Store(e)) => return Err(e),
            Err(_) => continue,
        }
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
