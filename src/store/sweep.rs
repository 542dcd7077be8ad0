//! What `gc` removes, at the level of the store's files: the writers lock that keeps it
//! apart from every command adding to the store, interrupted downloads, build
//! leftovers, layer indexes and known-layer records whose blob is gone, rattler's
//! caches, and tags. Deciding what is unused is [`crate::gc`]'s.

use std::fs;
use std::path::PathBuf;

use super::scratch::{tree_size, PARTIAL_DIR};
use super::{Error, Result, Store};
use crate::digest::Digest;
use crate::fsutil::{remove_any, FileLock};

/// Something `gc` can remove: where it is and the bytes it takes.
#[derive(Clone, Debug)]
pub struct Sweepable {
    /// Its path.
    pub path: PathBuf,
    /// Bytes in it.
    pub bytes: u64,
}

impl Store {
    /// Blocks until no other process writes to the store (pulls, imports, builds,
    /// snapshots and restores hold the writers lock shared while they run); held
    /// exclusively until dropped.
    pub fn lock_writers(&self) -> Result<FileLock> {
        let path = self.lock_path("writers");
        FileLock::exclusive(&path).map_err(Error::io("lock", path))
    }

    /// Marks this process as writing to the store until dropped (so `gc` waits for it).
    pub fn writing(&self) -> Result<FileLock> {
        let path = self.lock_path("writers");
        FileLock::shared(&path).map_err(Error::io("lock", path))
    }

    /// Interrupted downloads kept for resuming.
    pub fn partials(&self) -> Vec<Sweepable> {
        files_in(&self.ingest_dir().join(PARTIAL_DIR))
    }

    /// What killed builds left in the build directory.
    pub fn build_leftovers(&self) -> Vec<Sweepable> {
        let Ok(dir) = self.build_dir() else {
            return Vec::new();
        };
        entries_in(&dir)
    }

    /// rattler's package and repodata caches (each as one item).
    pub fn caches(&self) -> Vec<Sweepable> {
        [self.package_cache_dir(), self.repodata_cache_dir()]
            .into_iter()
            .filter(|dir| dir.exists())
            .map(|dir| Sweepable {
                bytes: tree_size(&dir),
                path: dir,
            })
            .collect()
    }

    /// Removes what `item` names (a file or a tree).
    pub fn sweep(&self, item: &Sweepable) -> Result<()> {
        remove_any(&item.path).map_err(Error::io("remove", &item.path))
    }

    /// The layers that have an index, and the index files' sizes.
    pub fn layer_indexes(&self) -> Vec<(Digest, Sweepable)> {
        files_in(&self.layers_dir())
            .into_iter()
            .filter_map(|item| {
                let name = item.path.file_name()?.to_str()?;
                let digest = Digest::parse(name.strip_suffix(".json")?).ok()?;
                Some((digest, item))
            })
            .collect()
    }

    /// The known-layer records (which layer a set of entries made, for re-snapshots)
    /// and the layer each names.
    pub fn known_layers(&self) -> Vec<(Option<Digest>, Sweepable)> {
        #[derive(serde::Deserialize)]
        struct Named {
            digest: Digest,
        }
        files_in(&self.layers_dir().join("by-content"))
            .into_iter()
            .map(|item| {
                let named = fs::read(&item.path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Named>(&b).ok());
                (named.map(|n| n.digest), item)
            })
            .collect()
    }
}

/// The regular files directly in `dir`, with their sizes.
fn files_in(dir: &std::path::Path) -> Vec<Sweepable> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| Sweepable {
                path: e.path(),
                bytes: meta.len(),
            })
        })
        .collect()
}

/// Every entry directly in `dir`, with the bytes below it.
fn entries_in(dir: &std::path::Path) -> Vec<Sweepable> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Vec::new();
    };
    listing
        .flatten()
        .map(|e| Sweepable {
            bytes: tree_size(&e.path()),
            path: e.path(),
        })
        .collect()
}
