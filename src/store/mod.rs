//! The local store: one directory (`ENVOCI_HOME`) holding everything envoci knows.
//!
//! ```text
//! $ENVOCI_HOME/
//! ├── oci-layout                  ┐ a standard OCI image layout: skopeo, oras, crane and
//! ├── index.json                  │ regctl read it as `oci:$ENVOCI_HOME:TAG`; index.json
//! ├── blobs/sha256/<hex>          ┘ holds the tags, blobs/ manifests, catalogs and layers
//! ├── files-v1/<hex[..2]>/<hex>[.x]  file CAS: one read-only copy per (sha256, exec bit)
//! ├── layers-v1/<hex>.json        per-layer index: path → kind, digest, size, link target
//! ├── layers-v1/by-content/<hex>.json  the layer blob some entries made (for re-snapshots)
//! ├── damaged-v1.json             CAS files `check` found damaged; the next restore repairs them
//! ├── repaired-v1.json            CAS files repaired since: hard links to the old inode are relinked
//! ├── spaces-v1/<name>/           managed spaces (`restore --space NAME`)
//! ├── state-v2/<id>.state         per space: its manifest, dirty flag, each path written
//! ├── state-v2/<id>.dirty         a restore is modifying the space (state-v1/: the JSON of before)
//! ├── locks/<name>.lock           advisory locks: index, writers (shared by every writer,
//! │                               exclusive for gc), space-…, build-…, prefix-…, ingest-…, partial-…
//! ├── ingest/<pid>-<random>/      per-process scratch; removed once its owner is gone
//! ├── ingest/partial/<hex>        interrupted blob downloads, kept for resuming
//! ├── pkgs-v1/                    rattler's package cache: fetched, extracted conda packages
//! ├── repodata-v1/                rattler's cache of channel repodata, for solving
//! └── build-v1/<bp-tag>___/       build prefixes, padded (or cut) to the length the packages'
//!                                 binary placeholders allow, at most 255 bytes (transient)
//! ```
//!
//! Nothing is readable under its final name before it is complete: every write goes to
//! scratch first and is renamed into place, and `index.json` (the tags) is written last.
//! A crash at any point leaves at most unreferenced blobs and files, never a torn one.

mod blobs;
mod cas;
mod layers;
mod partial;
mod refs;
mod scratch;
mod space_record;
mod spaces;
mod sweep;
mod unnamed;
mod unpack;

use std::io;
use std::path::{Path, PathBuf};

pub use blobs::BlobWriter;
pub use cas::{CasKey, CasState, FILE_MODE_EXEC, FILE_MODE_PLAIN};
pub use layers::{LayerIndex, StagedLayer};
pub use partial::Partial;
pub use refs::{
    from_oci_digest, oci_digest, unix_now, validate_tag, InvalidTag, Tag, ANNOTATION_LAST_USED,
    ANNOTATION_PLATFORM, ANNOTATION_REF_NAME, ANNOTATION_RESOLVED_AT,
};
pub use scratch::{rand_u64, Scratch, StaleScratch};
pub use space_record::RecordError;
pub use spaces::{space_id, Method, PathRecord, SpaceState};
pub use sweep::Sweepable;

use crate::digest::Digest;
use crate::fsutil::FileLock;

/// Version of the store's own directories (the OCI layout has its own `oci-layout`).
pub const STORE_VERSION: &str = "v1";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tag or digest the store does not have.
    #[error("`{0}` is not in the store (see `envoci ls`)")]
    NotFound(String),
    /// A digest prefix that several manifests start with.
    #[error("`{prefix}` names several environments: {}; give more digits", matches.join(", "))]
    Ambiguous {
        /// The prefix.
        prefix: String,
        /// The digests it matches.
        matches: Vec<String>,
    },
    /// Content that does not match its digest or size.
    #[error("{what} {digest}: content does not match (expected {expected}, got {actual})")]
    Corrupt {
        /// What kind of object.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What was expected (digest or size).
        expected: String,
        /// What was found.
        actual: String,
    },
    /// A JSON document in the store that does not parse.
    #[error("{} is not valid: {source}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A space's record that does not decode.
    #[error("{} is not a valid space record: {source}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: RecordError,
    },
    /// A layer blob that cannot be extracted.
    #[error("layer {digest} cannot be extracted")]
    BadLayer {
        /// The layer.
        digest: Digest,
        /// Why.
        #[source]
        source: crate::layer::ReadError,
    },
}

impl Error {
    /// Wraps an I/O error with what was done and where.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// Whether the error means "not there" rather than "broken".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::NotFound(_) => crate::ErrorKind::NotFound,
            Error::Corrupt { .. }
            | Error::BadJson { .. }
            | Error::BadRecord { .. }
            | Error::BadLayer { .. } => crate::ErrorKind::Integrity,
            Error::Io { .. } => crate::ErrorKind::Other,
            Error::Ambiguous { .. } => crate::ErrorKind::Usage,
        }
    }
}

/// Reads the JSON document at `path`; `None` if there is none.
fn read_json<T: serde::de::DeserializeOwned>(path: PathBuf) -> Result<Option<T>> {
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::BadJson { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Removes the file at `path`; one that is not there is no error.
fn remove_file_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Writes `value` as JSON at `path`, atomically (temp file + rename).
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_json_by(path, value, crate::fsutil::write_atomic)
}

/// [`write_json`] for a document the store makes again from its blob when it is
/// missing or damaged (a layer's index): not flushed on its own, the sync before the
/// next tag makes it durable with the files it names.
fn write_rebuildable_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_json_by(path, value, crate::fsutil::replace_unsynced)
}

/// Serialises `value` and writes it at `path` with `write`.
fn write_json_by<T: serde::Serialize>(
    path: &Path,
    value: &T,
    write: fn(&Path, &[u8]) -> io::Result<()>,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::io("serialise", path)(e.into()))?;
    write(path, &bytes).map_err(Error::io("write", path))
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An opened local store.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// CAS files this process committed, with their inodes (shared by every clone).
    committed: std::sync::Arc<cas::Committed>,
}

impl Store {
    /// The store `ENVOCI_HOME` names, else `envoci` under the user's data directory.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("ENVOCI_HOME") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("envoci"),
        }
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        // A setgid store directory is one a group shares: what this process creates
        // stays usable by the group.
        if std::fs::metadata(&root).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_dir() && m.permissions().mode() & 0o2000 != 0
        }) {
            crate::fsutil::share_with_group();
        }
        let store = Store {
            root,
            committed: Default::default(),
        };
        for dir in [
            store.blobs_dir(),
            store.files_dir(),
            store.layers_dir(),
            store.spaces_dir(),
            store.state_dir(),
            store.locks_dir(),
            store.ingest_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        }
        refs::init_layout(&store)?;
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout's blob directory.
    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Where blob `digest` lives (whether or not it is there).
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// The file CAS directory.
    fn files_dir(&self) -> PathBuf {
        self.root.join(format!("files-{STORE_VERSION}"))
    }

    /// The per-layer index directory.
    fn layers_dir(&self) -> PathBuf {
        self.root.join(format!("layers-{STORE_VERSION}"))
    }

    /// The directory holding managed spaces.
    fn spaces_dir(&self) -> PathBuf {
        self.root.join(format!("spaces-{STORE_VERSION}"))
    }

    /// The directory holding space state files.
    fn state_dir(&self) -> PathBuf {
        self.root.join("state-v2")
    }

    /// The directory holding lock files.
    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// The scratch area for data being ingested.
    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// rattler's package cache: downloaded and extracted conda packages, shared by every
    /// build (rattler locks it across processes). Nothing is created.
    pub fn package_cache_dir(&self) -> PathBuf {
        self.root.join(format!("pkgs-{STORE_VERSION}"))
    }

    /// rattler's repodata cache (channel indexes fetched while solving).
    pub fn repodata_cache_dir(&self) -> PathBuf {
        self.root.join(format!("repodata-{STORE_VERSION}"))
    }

    /// The directory of build prefixes, with the store's path resolved (a build
    /// prefix's length is that of its real path). Nothing is created.
    pub fn build_dir(&self) -> Result<PathBuf> {
        let root = std::fs::canonicalize(&self.root).map_err(Error::io("resolve", &self.root))?;
        Ok(root.join(format!("build-{STORE_VERSION}")))
    }

    /// Takes the exclusive lock of building blueprint tag `bp_tag`, so that concurrent
    /// builds of one spec build it once.
    pub fn lock_build(&self, bp_tag: &str) -> Result<FileLock> {
        self.lock(&format!("build-{bp_tag}"))
    }

    /// Takes the exclusive lock of the build prefix name `stem` (a blueprint tag, or
    /// its start when the prefix is short): blueprints whose prefixes share it build one
    /// after the other.
    pub fn lock_build_prefix(&self, stem: &str) -> Result<FileLock> {
        self.lock(&format!("prefix-{stem}"))
    }

    /// The lock file called `name` (`locks/<name>.lock`).
    fn lock_path(&self, name: &str) -> PathBuf {
        self.locks_dir().join(format!("{name}.lock"))
    }

    /// Blocks until the exclusive lock called `name` is held; released on drop.
    fn lock(&self, name: &str) -> Result<FileLock> {
        let path = self.lock_path(name);
        FileLock::exclusive(&path).map_err(Error::io("lock", path))
    }
}
