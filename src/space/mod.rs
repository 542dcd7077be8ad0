//! Spaces: ready environment directories restored from a catalog.
//!
//! The entry point is [`restore()`]: it makes a directory exactly what a catalog says — a
//! *pristine* space — and has the store record what it wrote
//! ([`crate::store::SpaceState`]). The layers, top down:
//!
//! * `restore` resolves the target ([`absolute_target`], [`managed_space`]), takes the
//!   space's lock and decides between nothing to do, *create* and *update*. A new space
//!   is assembled in a temporary directory beside the target and renamed into place, so
//!   it appears whole or not at all; an existing one is updated incrementally: only paths
//!   that differ from the [`Plan`] are touched, extras are removed, and meanwhile the
//!   record says *dirty*, so an interrupted restore is finished by the next.
//! * `write` puts the planned paths on disk: directories, then files in parallel, then
//!   symbolic links, after repairing any damaged CAS file from its layer.
//! * [`link`] puts one CAS file into the space (the reflink → hardlink → copy fallback);
//!   relocated files are private copies rewritten by [`crate::relocate`].
//! * `drift` compares a space with its record ([`drift()`], [`scan_tree`]); `restore`
//!   and `check` both use it.
//! * `temp` names the temporary directory of a new space and sweeps those an
//!   interrupted restore left behind.

mod drift;
pub mod link;
pub mod plan;
mod restore;
mod target;
mod temp;
mod write;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

pub use drift::{drift, scan_tree, Actual, Drift};
pub use link::{LinkMode, Linker};
pub use plan::{Changes, Plan, PlanError, Want};
pub use restore::{layer_indexes, restore};
pub use target::{absolute_target, managed_space};

pub use crate::store::{Method, PathRecord, SpaceState};

use crate::artifact;
use crate::store;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The reference is not a usable envoci artifact.
    #[error(transparent)]
    Load(#[from] artifact::LoadError),
    /// The catalog cannot be restored (here).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The environment is for another platform than this machine's (or than the one
    /// asked for).
    #[error("{reference} is an environment for {found}, {}", foreign_hint(found, wanted.as_deref()))]
    ForeignPlatform {
        /// The reference restored.
        reference: String,
        /// Its catalog's platform.
        found: String,
        /// The platform asked for (`--platform`), if one was.
        wanted: Option<String>,
    },
    /// The target holds something else.
    #[error("{} exists and is not an envoci space of this store; pass --force to replace its content", path.display())]
    NotASpace {
        /// The target.
        path: PathBuf,
    },
    /// The target path cannot hold a space.
    #[error("cannot restore into {}: {reason}", path.display())]
    BadTarget {
        /// The target.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The link mode asked for does not work on the space's filesystem.
    #[error("cannot {} {} from the store: the filesystem does not support it; use --link auto to fall back", link_verb(*mode), path.display())]
    LinkUnsupported {
        /// The mode asked for.
        mode: LinkMode,
        /// The first file it failed on.
        path: PathBuf,
    },
    /// Writing into the space failed; the space is marked dirty.
    #[error("cannot write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The second half of [`Error::ForeignPlatform`]'s message.
fn foreign_hint(found: &str, wanted: Option<&str>) -> String {
    match wanted {
        Some(wanted) => format!("not {wanted} (--platform)"),
        None => format!(
            "and this machine is {}: restore it on a {found} machine, or pass --platform {found} \
             to restore its files here anyway (its programs will not run here)",
            artifact::host_platform()
        ),
    }
}

fn link_verb(mode: LinkMode) -> &'static str {
    match mode {
        LinkMode::Reflink => "reflink",
        LinkMode::Hardlink => "hard-link",
        LinkMode::Copy | LinkMode::Auto => "copy",
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Load(e) => e.kind(),
            Error::ForeignPlatform { .. } => crate::ErrorKind::Usage,
            // A layer whose paths would leave the space: hostile or corrupt content.
            Error::Plan(e) if !matches!(e, PlanError::TooLong { .. }) => {
                crate::ErrorKind::Integrity
            }
            _ => crate::ErrorKind::Other,
        }
    }
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// How CAS files get into the space.
    pub link: LinkMode,
    /// Replace the content of a directory that is not an envoci space.
    pub force: bool,
    /// Compare files by content, not only metadata.
    pub verify: bool,
    /// The platform the environment must be for; `None`: this machine's.
    pub platform: Option<String>,
    /// Where progress (files written) goes.
    pub progress: crate::progress::Reporter,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// The space.
    pub target: PathBuf,
    /// The manifest restored.
    pub manifest: String,
    /// A new space was created.
    pub created: bool,
    /// Paths written (files, links, directories).
    pub written: u64,
    /// Paths removed.
    pub removed: u64,
    /// Paths left as they were.
    pub unchanged: u64,
    /// Files written per method.
    pub methods: BTreeMap<String, u64>,
    /// CAS files repaired from layer blobs.
    pub repaired: u64,
}
