//! Ingest: turn an installed environment (a *prefix*) into layers and a catalog.
//!
//! The entry point is [`snapshot()`], which drives the steps in data-flow order:
//!
//! 1. `walk` lists the prefix (files, symbolic links, empty directories), sorted;
//! 2. [`attribute()`] names the owner of every path: a conda package, a pip
//!    distribution, or the environment itself;
//! 3. `plan` groups paths into layers, one per owner unless there are too many;
//! 4. `scan` reads each file once, in parallel per layer: hashed, scanned for the
//!    prefix, rewritten to the placeholder if it holds it, put in the file CAS if new;
//! 5. the store writes each layer blob and its index from the CAS
//!    ([`Store::write_layer`](crate::store::Store::write_layer)), unless it knows the
//!    layer already; then [`commit_catalog`] writes the catalog and the manifest and
//!    tags it.
//!
//! Blobs go to the store's scratch area and are committed by rename; the manifest is
//! tagged last, so an interrupted snapshot leaves nothing visible.

pub mod attribute;
mod plan;
mod scan;
mod snapshot;
mod walk;

use std::io;
use std::path::PathBuf;

pub use attribute::{attribute, Attribution, Owner};
pub use snapshot::{commit_catalog, snapshot};

use crate::catalog::Catalog;
use crate::digest::Digest;
use crate::layer::Compression;
use crate::store;

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The prefix cannot be used at all.
    #[error("cannot snapshot {}: {reason}", path.display())]
    Prefix {
        /// The prefix.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the prefix cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path that is not UTF-8 (layers and catalogs are UTF-8).
    #[error("{} has a name that is not UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A `conda-meta/*.json` that does not parse.
    #[error("{} is not a valid conda package record", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: io::Error,
    },
    /// The tag is not a valid OCI tag.
    #[error(transparent)]
    Tag(#[from] store::InvalidTag),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What to snapshot and how.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Tag to give the catalog (default: the prefix's directory name).
    pub tag: Option<String>,
    /// Layer compression.
    pub compression: Compression,
    /// The platform to record (default: what the packages say, else this machine's).
    pub platform: Option<String>,
    /// The blueprint, for an environment envoci built from a spec.
    pub blueprint: Option<String>,
    /// The canonical spec it was built from.
    pub spec: Option<serde_json::Value>,
    /// Most layers in the manifest [default: [`DEFAULT_MAX_LAYERS`]]; above it, small
    /// packages share layers (some registries refuse manifests with ~500 layers).
    pub max_layers: Option<usize>,
    /// The prefix is an envoci build prefix, whose length was chosen for its packages:
    /// a binary file no package declares gets the canonical placeholder of that length
    /// ([`placeholder_of_len`](crate::relocate::placeholder_of_len)), not the prefix's
    /// own path (which a snapshot of any other prefix keeps).
    pub build_prefix: bool,
    /// The sha256 of the file each pip distribution was installed from, by
    /// [`pip_key`] (a build from a lock's pins): its layer records it as `sha256`.
    pub pip_sha256: std::collections::BTreeMap<String, String>,
}

/// `name==version` of a pip distribution, its name normalised as PEP 503 does
/// (lowercase, runs of `-`, `_` and `.` as one `-`): the key of [`Options::pip_sha256`].
pub fn pip_key(name: &str, version: &str) -> String {
    let mut normal = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !normal.ends_with('-') {
                normal.push('-');
            }
        } else {
            normal.push(c.to_ascii_lowercase());
        }
    }
    format!("{normal}=={version}")
}

/// Default largest number of layers in a manifest.
pub const DEFAULT_MAX_LAYERS: usize = 256;

/// What a snapshot produced.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The manifest's digest.
    pub manifest: Digest,
    /// The manifest's size.
    pub manifest_size: u64,
    /// The tag it was given.
    pub tag: String,
    /// The catalog.
    pub catalog: Catalog,
    /// Files (regular) ingested.
    pub files: u64,
    /// Bytes of regular files ingested.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_keys_normalise_names_as_pep_503_does() {
        assert_eq!(pip_key("Tiny_Wheel", "1.0"), "tiny-wheel==1.0");
        assert_eq!(pip_key("a.-_b", "2"), "a-b==2");
        assert_eq!(pip_key("tinywheel", "1.0"), pip_key("TinyWheel", "1.0"));
    }
}
