//! Loading an artifact from the store: its manifest, checked to be envoci's, and the
//! catalog it names, validated ([`super::validate`]) and checked to agree with it.
//! Pull and import load what they fetched before they tag it; restore, push, `ls` and
//! `inspect` load what they use.

use oci_spec::image::{Descriptor, ImageManifest};

use super::validate::{parse_catalog, CatalogError, MAX_CATALOG_BYTES};
use super::{check_envoci, parse_index};
use crate::catalog::Catalog;
use crate::digest::Digest;

/// An envoci artifact loaded from the store: its manifest and catalog.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The catalog (config blob).
    pub catalog: Catalog,
}

impl Artifact {
    /// Every blob the manifest names but itself — layers in order, then the catalog —
    /// each once, with its size.
    pub fn blobs(&self) -> Vec<(Digest, u64)> {
        let mut seen = std::collections::HashSet::new();
        self.manifest
            .layers()
            .iter()
            .chain(std::iter::once(self.manifest.config()))
            .filter_map(|d| Some((crate::store::from_oci_digest(d.digest())?, d.size())))
            .filter(|(d, _)| seen.insert(*d))
            .collect()
    }

    /// The layer descriptors paired with their blob digests, in order.
    pub fn layer_blobs(&self) -> impl Iterator<Item = (Digest, &Descriptor)> + '_ {
        self.catalog
            .layers
            .iter()
            .zip(self.manifest.layers())
            .map(|(l, d)| (l.digest, d))
    }
}

/// Why a reference does not lead to a usable envoci artifact.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store failed or lacks the reference.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The manifest is something else (a container image, say).
    #[error("`{reference}` is not an envoci environment: it is {what}")]
    NotEnvoci {
        /// The reference.
        reference: String,
        /// What it is instead.
        what: String,
    },
    /// The manifest or catalog does not parse or does not agree with itself.
    #[error("`{reference}` has an invalid {what}: {reason}")]
    Invalid {
        /// The reference.
        reference: String,
        /// Manifest or catalog.
        what: &'static str,
        /// The problem.
        reason: String,
    },
}

impl LoadError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            LoadError::Store(e) => e.kind(),
            LoadError::Invalid { .. } => crate::ErrorKind::Integrity,
            LoadError::NotEnvoci { .. } => crate::ErrorKind::Other,
        }
    }
}

/// Loads the artifact `reference` (tag or manifest digest) names in `store`.
pub fn load(store: &crate::store::Store, reference: &str) -> Result<Artifact, LoadError> {
    let descriptor = store.resolve(reference)?;
    let digest =
        crate::store::from_oci_digest(descriptor.digest()).ok_or_else(|| LoadError::Invalid {
            reference: reference.into(),
            what: "manifest",
            reason: format!("unsupported digest {}", descriptor.digest()),
        })?;
    let bytes = store.read_blob(&digest)?;
    parse_artifact(store, reference, digest, &bytes)
}

/// Parses manifest bytes and loads the catalog they reference, validated against them
/// ([`super::validate`]): a catalog that fails is [`LoadError::Invalid`].
pub fn parse_artifact(
    store: &crate::store::Store,
    reference: &str,
    digest: Digest,
    bytes: &[u8],
) -> Result<Artifact, LoadError> {
    let invalid = |what, reason: String| LoadError::Invalid {
        reference: reference.into(),
        what,
        reason,
    };
    if parse_index(bytes)
        .map_err(|e| invalid("manifest", e.to_string()))?
        .is_some()
    {
        return Err(LoadError::NotEnvoci {
            reference: reference.into(),
            what: "an image index; pick one platform".into(),
        });
    }
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| invalid("manifest", e.to_string()))?;
    check_envoci(&manifest).map_err(|what| LoadError::NotEnvoci {
        reference: reference.into(),
        what,
    })?;
    let config_digest = crate::store::from_oci_digest(manifest.config().digest())
        .ok_or_else(|| invalid("manifest", "config digest is not sha256".into()))?;
    let catalog_size = store.blob_size(&config_digest)?;
    if catalog_size > MAX_CATALOG_BYTES {
        let too_big = CatalogError::TooBig { size: catalog_size };
        return Err(invalid("catalog", too_big.to_string()));
    }
    let catalog_bytes = store.read_blob(&config_digest)?;
    let catalog =
        parse_catalog(&catalog_bytes, &manifest).map_err(|e| invalid("catalog", e.to_string()))?;
    Ok(Artifact {
        digest,
        manifest,
        catalog,
    })
}
