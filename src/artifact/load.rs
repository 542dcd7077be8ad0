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
    let manifest = parse_manifest(reference, bytes)?;
    let config_digest = catalog_digest(reference, &manifest)?;
    let catalog_size = store.blob_size(&config_digest)?;
    if catalog_size > MAX_CATALOG_BYTES {
        let too_big = CatalogError::TooBig { size: catalog_size };
        return Err(invalid(reference, "catalog", too_big.to_string()));
    }
    let catalog_bytes = store.read_blob(&config_digest)?;
    from_parts(reference, digest, manifest, &catalog_bytes)
}

/// An artifact from its manifest and its catalog's bytes, however they were read (a
/// registry, a layout): the catalog is validated against the manifest.
pub fn from_parts(
    reference: &str,
    digest: Digest,
    manifest: ImageManifest,
    catalog_bytes: &[u8],
) -> Result<Artifact, LoadError> {
    let catalog = parse_catalog(catalog_bytes, &manifest)
        .map_err(|e| invalid(reference, "catalog", e.to_string()))?;
    Ok(Artifact {
        digest,
        manifest,
        catalog,
    })
}

/// The manifest in `bytes`, checked to be an envoci environment's (not an index).
pub fn parse_manifest(reference: &str, bytes: &[u8]) -> Result<ImageManifest, LoadError> {
    if parse_index(bytes)
        .map_err(|e| invalid(reference, "manifest", e.to_string()))?
        .is_some()
    {
        return Err(LoadError::NotEnvoci {
            reference: reference.into(),
            what: "an image index; pick one platform".into(),
        });
    }
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| invalid(reference, "manifest", e.to_string()))?;
    check_envoci(&manifest).map_err(|what| LoadError::NotEnvoci {
        reference: reference.into(),
        what,
    })?;
    Ok(manifest)
}

/// The digest of the manifest's catalog (its config).
pub fn catalog_digest(reference: &str, manifest: &ImageManifest) -> Result<Digest, LoadError> {
    crate::store::from_oci_digest(manifest.config().digest())
        .ok_or_else(|| invalid(reference, "manifest", "config digest is not sha256".into()))
}

fn invalid(reference: &str, what: &'static str, reason: String) -> LoadError {
    LoadError::Invalid {
        reference: reference.into(),
        what,
        reason,
    }
}
