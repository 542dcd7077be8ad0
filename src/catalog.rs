//! The catalog: the artifact's config blob, its schema types (the OCI documents that
//! carry it are [`crate::artifact`]'s).
//!
//! The catalog is small and complete: which packages the environment holds (the lock),
//! which layer holds each, and which files of each layer must be relocated. Its JSON
//! Schema is `schemas/catalog.v1.schema.json`. The per-file list of every file is not
//! here: it is inside the layers and in the store's layer indexes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::relocate::FileMode;

/// The catalog schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The catalog of one environment for one platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Catalog {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always [`crate::artifact::CATALOG_MEDIA_TYPE`].
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

#[cfg(test)]
impl CatalogLayer {
    /// An environment layer called `name` with these digests, `files` paths and no
    /// package fields nor relocations (for tests).
    pub(crate) fn env_for_tests(
        name: &str,
        digest: Digest,
        diff_id: Digest,
        size: u64,
        files: u64,
    ) -> CatalogLayer {
        CatalogLayer {
            digest,
            diff_id,
            size,
            files,
            kind: LayerKind::Env,
            name: name.into(),
            version: None,
            build: None,
            subdir: None,
            channel: None,
            sha256: None,
            relocations: Vec::new(),
            packages: Vec::new(),
        }
    }
}

/// A file whose content must be rewritten for the space's path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Environment {
    /// Variables set on activation (`conda env config vars`, spec `variables`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Activation scripts (`etc/conda/activate.d/...`), relative to the environment.
    #[serde(default)]
    pub activation_scripts: Vec<String>,
}

impl Catalog {
    /// Total number of paths over all layers (saturating; a loaded catalog's totals
    /// are at most [`crate::artifact::MAX_SIZE`]).
    pub fn file_count(&self) -> u64 {
        self.layers.iter().fold(0, |n, l| n.saturating_add(l.files))
    }

    /// Total uncompressed size over all layers (saturating, like [`Self::file_count`]).
    pub fn size(&self) -> u64 {
        self.layers.iter().fold(0, |n, l| n.saturating_add(l.size))
    }

    /// The longest target path (in bytes) the environment can be restored to, and the
    /// binary file whose placeholder sets it (the first in layer order, of several);
    /// `None` when no binary file limits it. Text files never do. A file a later layer
    /// replaces still counts here, so restore, which knows the layers' files, may allow
    /// more, never less.
    pub fn target_limit(&self) -> Option<(&str, usize)> {
        self.layers
            .iter()
            .flat_map(|l| &l.relocations)
            .filter(|r| r.mode == FileMode::Binary)
            .map(|r| {
                let placeholder = r.placeholder.as_deref().unwrap_or(&self.placeholder);
                (r.path.as_str(), placeholder.len())
            })
            .min_by_key(|(_, len)| *len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relocation: path, mode, own placeholder.
    type Reloc<'a> = (&'a str, FileMode, Option<&'a str>);

    fn catalog(relocations: &[Reloc]) -> Catalog {
        let relocations: Vec<serde_json::Value> = relocations
            .iter()
            .map(|(path, mode, own)| serde_json::json!({"path": path, "mode": mode, "placeholder": own}))
            .collect();
        let layer = serde_json::json!({
            "digest": format!("sha256:{}", "1".repeat(64)),
            "diffId": format!("sha256:{}", "2".repeat(64)),
            "size": 1, "files": 1, "kind": "conda", "name": "p",
            "relocations": relocations,
        });
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 1, "mediaType": "m", "tool": "t", "platform": "linux-64",
            "placeholder": "/twelve/bytes", "records": [], "layers": [layer],
            "environment": {},
        }))
        .unwrap()
    }

    #[test]
    fn the_shortest_binary_placeholder_limits_the_target() {
        use FileMode::{Binary, Text};
        let anaconda = Some("/opt/anaconda1anaconda2anaconda3");
        // Relocations, then the limiting file and the limit.
        type Case<'a> = (&'a [Reloc<'a>], Option<(&'a str, usize)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[("etc/a", Text, Some("/x"))], None),
            (&[("bin/a", Binary, None)], Some(("bin/a", 13))),
            (
                &[("bin/a", Binary, None), ("bin/b", Binary, anaconda)],
                Some(("bin/a", 13)),
            ),
            (
                &[("etc/t", Text, Some("/x")), ("bin/b", Binary, anaconda)],
                Some(("bin/b", 32)),
            ),
        ];
        for (relocations, want) in cases {
            assert_eq!(
                catalog(relocations).target_limit(),
                *want,
                "{relocations:?}"
            );
        }
    }
}
