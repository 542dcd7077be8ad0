//! Image indexes: one tag holding the same environment for several platforms, each
//! entry naming its conda platform in `io.envoci.platform`. Documents are oci-spec's
//! typed [`ImageIndex`]; the bytes envoci writes are canonical JSON (sorted keys,
//! entries sorted by platform), so the same set of manifests makes the same digest
//! wherever it is made.

use std::collections::HashMap;

use oci_spec::image::{
    Arch, Descriptor, ImageIndex, ImageIndexBuilder, MediaType, Os, PlatformBuilder,
};
use serde::Deserialize;

use super::{is_index_media_type, oci_platform, ANNOTATION_PLATFORM, ARTIFACT_TYPE};
use crate::digest::Digest;
use crate::store::{from_oci_digest, oci_digest};

/// One platform's manifest in an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    /// Its conda platform.
    pub platform: String,
}

/// The canonical OCI image index of envoci manifests for several platforms.
pub fn index_document(mut entries: Vec<IndexEntry>) -> serde_json::Result<Vec<u8>> {
    entries.sort_by(|a, b| a.platform.cmp(&b.platform));
    let manifests: Vec<Descriptor> = entries.iter().map(index_descriptor).collect();
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
        .manifests(manifests)
        .build()
        .expect("schema version and manifests make a complete index");
    crate::json::to_canonical_vec(&index)
}

fn index_descriptor(entry: &IndexEntry) -> Descriptor {
    let (os, architecture) = oci_platform(&entry.platform);
    let platform = PlatformBuilder::default()
        .os(Os::from(os))
        .architecture(Arch::from(architecture))
        .build()
        .expect("os and architecture make a platform");
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        entry.size,
        oci_digest(&entry.digest),
    );
    descriptor.set_artifact_type(Some(MediaType::Other(ARTIFACT_TYPE.into())));
    descriptor.set_platform(Some(platform));
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_PLATFORM.to_string(),
        entry.platform.clone(),
    )])));
    descriptor
}

/// Just enough of a document to tell an index from a manifest.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// The index `bytes` hold, or `None` when they hold something else (a manifest): an
/// index says so in `mediaType`, or, without one, has a `manifests` list.
pub fn parse_index(bytes: &[u8]) -> serde_json::Result<Option<ImageIndex>> {
    let kind: Kind = serde_json::from_slice(bytes)?;
    let is_index = match &kind.media_type {
        Some(media_type) => is_index_media_type(media_type),
        None => kind.manifests.is_some(),
    };
    if !is_index {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some)
}

/// The envoci entries of an index (those naming a conda platform), in its order.
pub fn envoci_entries(index: &ImageIndex) -> Vec<IndexEntry> {
    index
        .manifests()
        .iter()
        .filter_map(|m| {
            Some(IndexEntry {
                digest: from_oci_digest(m.digest())?,
                size: m.size(),
                platform: m.annotations().as_ref()?.get(ANNOTATION_PLATFORM)?.clone(),
            })
        })
        .collect()
}

/// The entry for `platform` in an index, or a message listing the platforms it has.
pub fn choose_platform(index: &ImageIndex, platform: &str) -> Result<IndexEntry, String> {
    let entries = envoci_entries(index);
    entries
        .iter()
        .find(|e| e.platform == platform)
        .cloned()
        .ok_or_else(|| {
            let present: Vec<&str> = entries.iter().map(|e| e.platform.as_str()).collect();
            format!(
                "it has no {platform} environment (platforms present: {})",
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fill: u8, platform: &str) -> IndexEntry {
        IndexEntry {
            digest: Digest([fill; 32]),
            size: 100 + u64::from(fill),
            platform: platform.into(),
        }
    }

    #[test]
    fn index_documents_are_canonical_and_in_the_documented_form() {
        let a = index_document(vec![entry(1, "linux-64"), entry(2, "osx-arm64")]).unwrap();
        let b = index_document(vec![entry(2, "osx-arm64"), entry(1, "linux-64")]).unwrap();
        assert_eq!(a, b, "the order given does not matter");
        // The form the README documents, built by hand.
        let by_hand = |e: &IndexEntry, os: &str, arch: &str| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": ARTIFACT_TYPE,
                "digest": e.digest.oci(),
                "size": e.size,
                "platform": { "os": os, "architecture": arch },
                "annotations": { ANNOTATION_PLATFORM: e.platform },
            })
        };
        let expected = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "artifactType": ARTIFACT_TYPE,
            "manifests": [
                by_hand(&entry(1, "linux-64"), "linux", "amd64"),
                by_hand(&entry(2, "osx-arm64"), "darwin", "arm64"),
            ],
        });
        assert_eq!(a, crate::json::to_canonical_vec(&expected).unwrap());
    }

    #[test]
    fn an_index_round_trips_and_picks_by_platform() {
        let bytes = index_document(vec![entry(1, "linux-64"), entry(2, "linux-aarch64")]).unwrap();
        let index = parse_index(&bytes).unwrap().expect("an index");
        assert_eq!(
            envoci_entries(&index),
            vec![entry(1, "linux-64"), entry(2, "linux-aarch64")]
        );
        assert_eq!(
            choose_platform(&index, "linux-aarch64").unwrap(),
            entry(2, "linux-aarch64")
        );
        let missing = choose_platform(&index, "osx-arm64").unwrap_err();
        assert!(
            missing.contains("no osx-arm64") && missing.contains("linux-64, linux-aarch64"),
            "{missing}"
        );
    }

    #[test]
    fn a_manifest_is_not_an_index() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert!(parse_index(manifest).unwrap().is_none());
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(parse_index(bare_index).unwrap().is_some());
        assert!(parse_index(b"<html>").is_err());
    }
}
