//! Transfer: moving an artifact between the local store and an OCI registry or an OCI
//! image layout (directory or archive), sending or fetching only the blobs the other
//! side lacks.
//!
//! [`registry::Registry`] wraps oci-client with what envoci needs around it (protocol
//! choice, a probe, credentials, retries) and [`error`] says why a request failed;
//! [`push()`] and [`pull()`] are the two directions for registries, [`layout`] reads and
//! writes layouts, and [`location`] names all of them so any two can be copied between.
//! [`blobs::BlobStore`] is one vocabulary for every place blobs live (the store, a
//! layout, an archive, a registry), held to one conformance suite. Blobs are streamed,
//! never held whole, and verified against their digest before they are committed to the
//! store; [`bounded`] is the one limit on parallel transfers.

pub mod blobs;
pub mod credentials;
pub mod error;
pub mod layout;
pub mod location;
pub mod mirrors;
pub mod pull;
pub mod push;
pub(crate) mod reference;
pub mod registry;
pub mod sources;
mod stream;
pub mod token;

pub use error::{Error, ErrorKind, Failure};
pub use location::{
    copy, copy_all_platforms, fetch, fetch_unless_fresh, peek, send, Freshness, Location,
};
pub use pull::pull;
pub use push::push;
pub use reference::RemoteRef;
pub use registry::{is_loopback, Registry, RegistryOptions};

/// Runs `work` on every item, at most `jobs` at a time, and collects the results in the
/// order they finish; the first error stops the rest. This is the one bound on parallel
/// blob transfers (`--jobs`): pulls and pushes both go through it, and the registry
/// client adds none of its own.
pub(crate) async fn bounded<I, T, F, Fut>(items: I, jobs: usize, work: F) -> Result<Vec<T>, Error>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter(items)
        .map(work)
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await
}

/// What a transfer moved and what it found already there.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// The remote reference.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// Blobs sent or fetched.
    pub blobs_transferred: u64,
    /// Bytes sent or fetched.
    pub bytes_transferred: u64,
    /// Blobs the destination had already.
    pub blobs_skipped: u64,
    /// Bytes of those.
    pub bytes_skipped: u64,
    /// Downloads continued from a partial blob.
    pub blobs_resumed: u64,
    /// Blobs a push had the registry mount from another of its repositories.
    pub blobs_mounted: u64,
    /// Which endpoints (mirrors, the registry's location) served a pull, and what.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<sources::EndpointReport>,
}
