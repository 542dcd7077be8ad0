//! envoci: build conda environments once, distribute them through OCI registries and
//! layouts, restore them anywhere in seconds.
//!
//! The modules follow the data flow (see `../shared/design.md` and the README):
//!
//! ```text
//! conda.yaml ──build──▶ prefix ──ingest──▶ store (OCI layout + file CAS + layer indexes) ──restore──▶ space
//! ```
//!
//! * [`spec`] reads `conda.yaml` and computes its blueprint; [`builder`] solves, installs
//!   and ingests it (rattler, then pip and a bytecode pass).
//! * [`ingest`] walks an installed environment, attributes files to packages and writes
//!   one deterministic [`layer`] per package plus a [`catalog`].
//! * [`artifact`] is the OCI format: media types, annotations, manifests and indexes,
//!   platform choice, loading an artifact from the store.
//! * [`provide`] gives the environment for a `conda.yaml`: from the store, a registry
//!   (by blueprint tag) or a build — the CI builder pattern.
//! * [`store`] is the local store: an OCI image layout, a file CAS, per-layer indexes,
//!   locks and an ingest area.
//! * [`space`] restores a catalog into a directory and keeps it pristine incrementally.
//! * [`relocate`] holds the pure prefix-rewriting functions both sides share.
//! * [`transfer`] moves artifacts between the store, OCI registries and OCI layouts
//!   (directories and archives), only the blobs the other side lacks.
//! * [`check`] verifies the store and the spaces.

pub mod artifact;
pub mod builder;
pub mod catalog;
pub mod check;
pub mod diff;
pub mod digest;
pub mod error;
pub mod fsutil;
pub mod gc;
pub mod ingest;
pub mod inspect;
pub mod json;
pub mod layer;
pub mod progress;
pub mod provide;
pub mod pyc;
pub mod relocate;
pub mod run;
pub mod serve;
pub mod space;
pub mod spec;
pub mod store;
pub mod transfer;

pub use error::ErrorKind;

/// The version of envoci recorded in the catalogs it writes.
pub const TOOL_VERSION: &str = concat!("envoci ", env!("CARGO_PKG_VERSION"));

/// The async runtime every registry operation and build runs on (one kind, made in
/// one place).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// An error and its causes on one line, a cause left out when the text before already
/// says it (libraries often repeat their source in their own message).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The sum of `sizes`, stopping at `u64::MAX`: sizes come from manifests and archives
/// envoci does not control, and a hostile one may add up past any limit.
pub fn sum_sizes<'a>(sizes: impl IntoIterator<Item = &'a u64>) -> u64 {
    sizes
        .into_iter()
        .fold(0u64, |sum, size| sum.saturating_add(*size))
}
