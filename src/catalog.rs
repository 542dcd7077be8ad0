//! The catalog (the artifact's config blob) and the OCI manifest that carries it.
//!
//! The catalog is small and complete: which packages the environment holds (the lock),
//! which layer holds each, and which files of each layer must be relocated. Its JSON
//! Schema is `schemas/catalog.v1.schema.json`. The per-file list of every file is not
//! here: it is inside the layers and in the store's layer indexes.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layer::LayerDigests;
use crate::relocate::FileMode;
use crate::store::{oci_digest, ANNOTATION_PLATFORM};

/// Media type of the catalog blob.
pub const CATALOG_MEDIA_TYPE: &str = "application/vnd.envoci.catalog.v1+json";
/// `artifactType` of an envoci manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.envoci.env.v1";
/// The catalog schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The catalog of one environment for one platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always [`CATALOG_MEDIA_TYPE`].
    pub media_type: String,
    /// The tool that wrote it (`envoci X.Y.Z`).
    pub tool: String,
    /// Conda platform (`linux-64`, `osx-arm64`, ...).
    pub platform: String,
    /// sha256 of the canonical spec plus platform, for environments envoci built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprint: Option<String>,
    /// The canonical spec the environment was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// The string standing for the environment's path in relocated files.
    pub placeholder: String,
    /// The packages, in install order (the lock).
    pub records: Vec<Record>,
    /// One entry per manifest layer, in the same order.
    pub layers: Vec<CatalogLayer>,
    /// Environment variables and activation scripts.
    pub environment: Environment,
}

/// One conda package of the environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Build string.
    pub build: String,
    /// Build number.
    pub build_number: u64,
    /// Subdir (`linux-64`, `noarch`).
    pub subdir: String,
    /// Channel it came from, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Download URL, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// sha256 of the package archive, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// md5 of the package archive, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Dependencies as match specs.
    #[serde(default)]
    pub depends: Vec<String>,
}

/// What a layer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A conda package.
    Conda,
    /// A pip-installed distribution.
    Pypi,
    /// The environment's own files (conda-meta, unowned files).
    Env,
    /// Several small packages sharing one layer (environments above the layer limit).
    Group,
}

impl LayerKind {
    /// The value of the `io.envoci.kind` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Conda => "conda",
            LayerKind::Pypi => "pypi",
            LayerKind::Env => "env",
            LayerKind::Group => "group",
        }
    }
}

/// The catalog's description of one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogLayer {
    /// Digest of the layer blob (as in the manifest).
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Number of paths (files, links, directories).
    pub files: u64,
    /// What the layer holds.
    pub kind: LayerKind,
    /// Package name (`env` for the environment layer).
    pub name: String,
    /// Package version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Build string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Subdir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    /// Channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// sha256 of the upstream package archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Files whose content holds a placeholder, sorted by path.
    #[serde(default)]
    pub relocations: Vec<Relocation>,
    /// For a group layer: the packages it holds, in install order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<LayerPackage>,
}

/// What owns a layer's files: a conda package, a pip distribution, or the environment
/// (and in a group layer, each of its packages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerPackage {
    /// `conda`, `pypi` (or `env`/`group` for an owner that is no package).
    pub kind: LayerKind,
    /// Package name.
    pub name: String,
    /// Package version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Build string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Subdir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    /// Channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// sha256 of the upstream package archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl CatalogLayer {
    /// `name-version-build` (what `org.opencontainers.image.title` says).
    pub fn title(&self) -> String {
        [
            Some(self.name.as_str()),
            self.version.as_deref(),
            self.build.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("-")
    }
}

/// A file whose content must be rewritten for the space's path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocation {
    /// Path in the layer.
    pub path: String,
    /// Text or binary replacement.
    pub mode: FileMode,
    /// The file's own placeholder, when it is not the catalog's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
}

/// Activation information.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Variables set on activation (`conda env config vars`, spec `variables`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Activation scripts (`etc/conda/activate.d/...`), relative to the environment.
    #[serde(default)]
    pub activation_scripts: Vec<String>,
}

impl Catalog {
    /// Total number of paths over all layers.
    pub fn file_count(&self) -> u64 {
        self.layers.iter().map(|l| l.files).sum()
    }

    /// Total uncompressed size over all layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// The descriptor by which the store's `index.json` names an envoci manifest of `size`
/// bytes with `digest` (its artifact type set, so tools can tell what it is).
pub fn manifest_descriptor(digest: &Digest, size: u64) -> Descriptor {
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        size,
        crate::store::oci_digest(digest),
    );
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

/// The conda platform of the machine envoci runs on.
pub fn host_platform() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-64",
        ("linux", "aarch64") => "linux-aarch64",
        ("linux", "powerpc64") => "linux-ppc64le",
        ("macos", "x86_64") => "osx-64",
        ("macos", "aarch64") => "osx-arm64",
        ("windows", "x86_64") => "win-64",
        ("windows", "aarch64") => "win-arm64",
        _ => "noarch",
    }
}

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

/// Parses manifest bytes and loads the catalog they reference.
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
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid("manifest", e.to_string()))?;
    let media = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if media.contains("index") || media.contains("manifest.list") {
        return Err(LoadError::NotEnvoci {
            reference: reference.into(),
            what: format!("an image index ({media}); pick one platform"),
        });
    }
    let manifest: ImageManifest =
        serde_json::from_value(value).map_err(|e| invalid("manifest", e.to_string()))?;
    let config_type = manifest.config().media_type().to_string();
    if config_type != CATALOG_MEDIA_TYPE {
        let artifact = manifest.artifact_type().as_ref().map(|a| a.to_string());
        let what = match (config_type.as_str(), artifact) {
            (
                "application/vnd.oci.image.config.v1+json"
                | "application/vnd.docker.container.image.v1+json",
                _,
            ) => "a container image".to_string(),
            (_, Some(a)) => format!("an artifact of type {a}"),
            (c, None) => format!("a manifest whose config is {c}"),
        };
        return Err(LoadError::NotEnvoci {
            reference: reference.into(),
            what,
        });
    }
    let config_digest = crate::store::from_oci_digest(manifest.config().digest())
        .ok_or_else(|| invalid("manifest", "config digest is not sha256".into()))?;
    let catalog_bytes = store.read_blob(&config_digest)?;
    let catalog: Catalog =
        serde_json::from_slice(&catalog_bytes).map_err(|e| invalid("catalog", e.to_string()))?;
    if catalog.schema_version != SCHEMA_VERSION {
        return Err(invalid(
            "catalog",
            format!(
                "schema version {} (this envoci reads {SCHEMA_VERSION})",
                catalog.schema_version
            ),
        ));
    }
    if catalog.layers.len() != manifest.layers().len() {
        return Err(invalid(
            "catalog",
            "layer count differs from the manifest's".into(),
        ));
    }
    for (layer, descriptor) in catalog.layers.iter().zip(manifest.layers()) {
        if crate::store::from_oci_digest(descriptor.digest()) != Some(layer.digest) {
            return Err(invalid(
                "catalog",
                format!(
                    "layer {} is not the manifest's {}",
                    layer.digest,
                    descriptor.digest()
                ),
            ));
        }
    }
    Ok(Artifact {
        digest,
        manifest,
        catalog,
    })
}
