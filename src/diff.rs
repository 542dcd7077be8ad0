//! `diff`: what changes between two environments — packages added, removed and changed
//! (version or build), layers shared — and what a machine holding the first would
//! download for the second: the second's blobs (catalog and layers) the first lacks,
//! exactly what a pull of it into a store holding only the first transfers.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::artifact::Artifact;
use crate::catalog::Record;

/// One side of a diff.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// As the user named it.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Conda platform.
    pub platform: String,
    /// Packages.
    pub packages: usize,
    /// Layers.
    pub layers: usize,
    /// Bytes of its catalog and layers (compressed).
    pub blob_bytes: u64,
}

/// A package on one side only.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
}

/// A package on both sides, in another version or build.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// Name.
    pub name: String,
    /// `version build` in the first.
    pub from: String,
    /// `version build` in the second.
    pub to: String,
}

/// The difference between two environments.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    /// The first.
    pub a: Side,
    /// The second.
    pub b: Side,
    /// Packages only the second has.
    pub added: Vec<Package>,
    /// Packages only the first has.
    pub removed: Vec<Package>,
    /// Packages both have, in another version or build.
    pub changed: Vec<Change>,
    /// Layers both have.
    pub layers_shared: usize,
    /// Blobs of the second the first lacks.
    pub blobs_to_pull: usize,
    /// Their bytes: what a machine holding the first downloads for the second.
    pub bytes_to_pull: u64,
}

/// Compares `a` (named `a_ref`) with `b`.
pub fn diff(a_ref: &str, a: &Artifact, b_ref: &str, b: &Artifact) -> Diff {
    let packages = |art: &Artifact| -> BTreeMap<String, Record> {
        let records = art.catalog.records.iter();
        records.map(|r| (r.name.clone(), r.clone())).collect()
    };
    let (pa, pb) = (packages(a), packages(b));
    let package = |r: &Record| Package {
        name: r.name.clone(),
        version: r.version.clone(),
        build: r.build.clone(),
    };
    let added = pb
        .values()
        .filter(|r| !pa.contains_key(&r.name))
        .map(package)
        .collect();
    let removed = pa
        .values()
        .filter(|r| !pb.contains_key(&r.name))
        .map(package)
        .collect();
    let changed = pb
        .values()
        .filter_map(|r| {
            let old = pa.get(&r.name)?;
            (old.version != r.version || old.build != r.build).then(|| Change {
                name: r.name.clone(),
                from: format!("{} {}", old.version, old.build),
                to: format!("{} {}", r.version, r.build),
            })
        })
        .collect();
    let held: HashSet<_> = a.blobs().into_iter().map(|(d, _)| d).collect();
    let a_layers: HashSet<_> = a.catalog.layers.iter().map(|l| l.digest).collect();
    let layers_shared = b
        .catalog
        .layers
        .iter()
        .filter(|l| a_layers.contains(&l.digest))
        .count();
    let missing: Vec<_> = b
        .blobs()
        .into_iter()
        .filter(|(d, _)| !held.contains(d))
        .collect();
    Diff {
        a: side(a_ref, a),
        b: side(b_ref, b),
        added,
        removed,
        changed,
        layers_shared,
        blobs_to_pull: missing.len(),
        bytes_to_pull: crate::sum_sizes(missing.iter().map(|(_, size)| size)),
    }
}

fn side(reference: &str, art: &Artifact) -> Side {
    Side {
        reference: reference.to_string(),
        digest: art.digest.oci(),
        platform: art.catalog.platform.clone(),
        packages: art.catalog.records.len(),
        layers: art.catalog.layers.len(),
        blob_bytes: crate::sum_sizes(art.blobs().iter().map(|(_, size)| size)),
    }
}
