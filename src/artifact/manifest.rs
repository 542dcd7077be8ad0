//! The manifest of one environment for one platform: built from a catalog, named in the
//! store's `index.json` by a descriptor, and recognised as envoci's by its config.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};

use super::{ANNOTATION_PLATFORM, ARTIFACT_TYPE, CATALOG_MEDIA_TYPE};
use crate::catalog::{Catalog, CatalogLayer};
use crate::digest::Digest;
use crate::layer::LayerDigests;
use crate::store::oci_digest;

/// The descriptor by which the store's `index.json` names an envoci manifest of `size`
/// bytes with `digest` (its artifact type set, so tools can tell what it is).
pub fn manifest_descriptor(digest: &Digest, size: u64) -> Descriptor {
    let mut descriptor = Descriptor::new(MediaType::ImageManifest, size, oci_digest(digest));
    descriptor.set_artifact_type(Some(MediaType::Other(ARTIFACT_TYPE.into())));
    descriptor
}

/// Builds the manifest for a catalog blob and its layers (in catalog order).
pub fn build_manifest(
    catalog: &Catalog,
    catalog_blob: (Digest, u64),
    layers: &[(LayerDigests, &'static str)],
) -> ImageManifest {
    let config = Descriptor::new(
        MediaType::Other(CATALOG_MEDIA_TYPE.into()),
        catalog_blob.1,
        oci_digest(&catalog_blob.0),
    );
    let layer_descriptors = catalog
        .layers
        .iter()
        .zip(layers)
        .map(|(layer, (digests, media_type))| {
            let mut d = Descriptor::new(
                MediaType::Other((*media_type).into()),
                digests.size,
                oci_digest(&digests.digest),
            );
            d.set_annotations(Some(layer_annotations(layer)));
            d
        })
        .collect::<Vec<_>>();
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
        .config(config)
        .layers(layer_descriptors)
        .annotations(HashMap::from([(
            ANNOTATION_PLATFORM.to_string(),
            catalog.platform.clone(),
        )]))
        .build()
        .expect("schema version, config and layers make a complete manifest")
}

fn layer_annotations(layer: &CatalogLayer) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert(
        "org.opencontainers.image.title".into(),
        ascii(&layer.title()),
    );
    a.insert("io.envoci.kind".into(), layer.kind.as_str().into());
    a.insert("io.envoci.name".into(), ascii(&layer.name));
    let optional = [
        ("io.envoci.version", &layer.version),
        ("io.envoci.build", &layer.build),
        ("io.envoci.subdir", &layer.subdir),
        ("io.envoci.channel", &layer.channel),
        ("io.envoci.sha256", &layer.sha256),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            a.insert(key.into(), ascii(v));
        }
    }
    a
}

/// Annotations stay short, plain ASCII.
fn ascii(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .take(256)
        .collect()
}

/// Whether `manifest` carries an envoci environment (its config is a catalog); if not,
/// what it is instead, in words for a message.
pub fn check_envoci(manifest: &ImageManifest) -> Result<(), String> {
    let config_type = manifest.config().media_type().to_string();
    if config_type == CATALOG_MEDIA_TYPE {
        return Ok(());
    }
    let artifact = manifest.artifact_type().as_ref().map(|a| a.to_string());
    Err(match (config_type.as_str(), artifact) {
        (
            "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json",
            _,
        ) => "a container image".to_string(),
        (_, Some(a)) => format!("an artifact of type {a}"),
        (c, None) => format!("a manifest whose config is {c}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with_config(media_type: &str, artifact_type: Option<&str>) -> ImageManifest {
        let config = Descriptor::new(
            MediaType::Other(media_type.into()),
            2,
            oci_digest(&Digest::of(b"{}")),
        );
        let mut builder = ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(config)
            .layers(vec![]);
        if let Some(a) = artifact_type {
            builder = builder.artifact_type(MediaType::Other(a.into()));
        }
        builder.build().unwrap()
    }

    #[test]
    fn only_a_catalog_config_makes_an_envoci_manifest() {
        assert!(check_envoci(&manifest_with_config(CATALOG_MEDIA_TYPE, None)).is_ok());
        let image = manifest_with_config("application/vnd.oci.image.config.v1+json", None);
        assert_eq!(check_envoci(&image).unwrap_err(), "a container image");
        let other = manifest_with_config("application/x-thing", Some("application/x-art"));
        assert!(check_envoci(&other)
            .unwrap_err()
            .contains("application/x-art"));
        let bare = manifest_with_config("application/x-thing", None);
        assert!(check_envoci(&bare)
            .unwrap_err()
            .contains("application/x-thing"));
    }
}
