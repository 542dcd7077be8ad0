//! The envoci artifact: the OCI documents that carry an environment, and everything
//! that decides what they look like — media types, annotations, the manifest built
//! from a catalog, the multi-platform index, which platform to pick from one, whether
//! a manifest is an envoci environment at all, the blueprint tag, and loading an
//! artifact (manifest + catalog) from the store, the catalog validated first. The catalog's own schema types live
//! in [`crate::catalog`]; moving artifacts around lives in [`crate::transfer`].
//!
//! ```text
//! tag ──▶ index (one per tag with several platforms) ──▶ manifest (one per platform)
//!                                                          ├── config: the catalog
//!                                                          └── layers: one per package
//! ```

mod index;
mod load;
mod manifest;
mod platform;
mod validate;

pub use index::{choose_platform, envoci_entries, index_document, parse_index, IndexEntry};
pub use load::{
    catalog_digest, from_parts, load, parse_artifact, parse_manifest, Artifact, LoadError,
};
pub use manifest::{build_manifest, check_envoci, manifest_descriptor};
pub use platform::{host_platform, oci_platform};
pub use validate::{parse_catalog, validate, CatalogError, MAX_CATALOG_BYTES, MAX_SIZE};

/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's manifest list, the index's older cousin.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of the catalog blob (the manifest's config).
pub const CATALOG_MEDIA_TYPE: &str = "application/vnd.envoci.catalog.v1+json";
/// `artifactType` of an envoci manifest and index.
pub const ARTIFACT_TYPE: &str = "application/vnd.envoci.env.v1";
/// Annotation of a manifest (and an index entry) naming its conda platform.
pub use crate::store::ANNOTATION_PLATFORM;

/// Whether `media_type` names an image index (OCI's or Docker's manifest list).
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == INDEX_MEDIA_TYPE || media_type == DOCKER_MANIFEST_LIST
}

/// The tag of a built environment: `bp-<first 32 hex of the blueprint>-<platform>`, so
/// a client holding only the `conda.yaml` can find a prebuilt environment.
pub fn blueprint_tag(blueprint: &str, platform: &str) -> String {
    format!("bp-{}-{platform}", &blueprint[..32.min(blueprint.len())])
}

#[cfg(test)]
mod tests {
    #[test]
    fn blueprint_tags_take_32_hex_and_the_platform() {
        let bp = "0123456789abcdef".repeat(4);
        assert_eq!(
            super::blueprint_tag(&bp, "linux-64"),
            "bp-0123456789abcdef0123456789abcdef-linux-64"
        );
        assert_eq!(super::blueprint_tag("ab", "osx-arm64"), "bp-ab-osx-arm64");
    }
}
