//! Validating a catalog before anything trusts it: every artifact that is pulled,
//! imported, restored, listed or pushed goes through [`parse_catalog`] (via
//! [`super::load`] and [`super::parse_artifact`]), so a catalog that could never be
//! restored — or that would make a restore exhaust memory or disk — is never tagged.
//!
//! The rules are those of `schemas/catalog.v1.schema.json` (no unknown fields, the
//! schema version, the media type, the patterns of platform, blueprint, digests and
//! hashes, non-empty names, relative relocation paths without `..`) and what a schema
//! cannot say:
//! - a placeholder — the catalog's and each relocation's own — has 1 to
//!   [`MAX_PLACEHOLDER`] bytes and no NUL (an empty one would put the target path
//!   between every two bytes of a text file);
//! - the catalog describes exactly the manifest's layers, in its order;
//! - a relocation path is named once per layer and holds no NUL;
//! - every size and count, and every total over the layers, is at most [`MAX_SIZE`];
//! - the catalog blob has at most [`MAX_CATALOG_BYTES`] bytes, and its JSON nests at
//!   most 128 levels (serde_json's recursion limit: deeper input is an error, never a
//!   stack overflow).

use std::collections::HashSet;

use oci_spec::image::ImageManifest;

use super::CATALOG_MEDIA_TYPE;
use crate::catalog::{Catalog, LayerKind, SCHEMA_VERSION};
use crate::digest::Digest;
use crate::relocate::MAX_PLACEHOLDER;

/// Largest size or count a catalog or manifest may state, alone or summed over the
/// layers: 2^53 − 1, the largest integer every JSON reader holds exactly (8 PiB).
pub const MAX_SIZE: u64 = (1 << 53) - 1;

/// Largest catalog blob envoci reads (a catalog of thousands of packages is a few MiB).
pub const MAX_CATALOG_BYTES: u64 = 64 << 20;

/// Why a catalog is refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// It is not JSON of the catalog's shape (or nests too deeply).
    #[error("it does not parse: {0}")]
    Json(#[source] serde_json::Error),
    /// The catalog blob is larger than any catalog.
    #[error(
        "the catalog blob has {size} bytes, more than the {MAX_CATALOG_BYTES} a catalog may have"
    )]
    TooBig {
        /// Its size.
        size: u64,
    },
    /// A schema version this envoci does not read.
    #[error("schema version {found} (this envoci reads {SCHEMA_VERSION})")]
    SchemaVersion {
        /// The version found.
        found: u32,
    },
    /// The catalog and the manifest describe different numbers of layers.
    #[error("it describes {catalog} layers, the manifest has {manifest}")]
    LayerCount {
        /// Layers in the catalog.
        catalog: usize,
        /// Layers in the manifest.
        manifest: usize,
    },
    /// A layer of the catalog is not the manifest's layer at the same place.
    #[error("layers[{index}] is {catalog}, not the manifest's {manifest}")]
    LayerDigest {
        /// Its index.
        index: usize,
        /// The catalog's digest.
        catalog: Digest,
        /// The manifest's digest.
        manifest: String,
    },
    /// A placeholder that is empty, too long, or holds a NUL.
    #[error("{at} has {len} bytes{}; a placeholder has 1 to {MAX_PLACEHOLDER} bytes and no NUL", if *.nul { " with a NUL" } else { "" })]
    Placeholder {
        /// Where it is.
        at: String,
        /// Its length in bytes.
        len: usize,
        /// Whether it holds a NUL byte.
        nul: bool,
    },
    /// A size or count beyond [`MAX_SIZE`].
    #[error("{at} is {value}, more than {MAX_SIZE}")]
    Size {
        /// Where it is.
        at: String,
        /// The value.
        value: u64,
    },
    /// A total over the layers beyond [`MAX_SIZE`].
    #[error("the {what} summed over all layers is more than {MAX_SIZE}")]
    Total {
        /// What is summed.
        what: &'static str,
    },
    /// A relocation path that would leave its layer, or cannot be a path.
    #[error("{at} `{path}` {reason}")]
    Path {
        /// Where it is.
        at: String,
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path relocated twice in one layer.
    #[error("layers[{layer}] relocates `{path}` twice")]
    Duplicate {
        /// The layer's index.
        layer: usize,
        /// The path.
        path: String,
    },
    /// A field whose value the schema does not allow.
    #[error("{at} `{value}` is not {expected}")]
    Field {
        /// Where it is.
        at: String,
        /// The value (shortened).
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// Parses catalog `bytes` and validates the catalog against `manifest` (the manifest
/// that names it as its config).
pub fn parse_catalog(bytes: &[u8], manifest: &ImageManifest) -> Result<Catalog, CatalogError> {
    if bytes.len() as u64 > MAX_CATALOG_BYTES {
        return Err(CatalogError::TooBig {
            size: bytes.len() as u64,
        });
    }
    let catalog: Catalog = serde_json::from_slice(bytes).map_err(CatalogError::Json)?;
    validate(&catalog, manifest)?;
    Ok(catalog)
}

/// Checks a parsed catalog against the schema's rules and those a schema cannot say
/// (see the module documentation), and against `manifest`, the manifest naming it.
pub fn validate(catalog: &Catalog, manifest: &ImageManifest) -> Result<(), CatalogError> {
    if catalog.schema_version != SCHEMA_VERSION {
        return Err(CatalogError::SchemaVersion {
            found: catalog.schema_version,
        });
    }
    expect(
        "mediaType",
        &catalog.media_type,
        catalog.media_type == CATALOG_MEDIA_TYPE,
        CATALOG_MEDIA_TYPE,
    )?;
    expect(
        "platform",
        &catalog.platform,
        is_platform(&catalog.platform),
        "a conda platform (like linux-64)",
    )?;
    if let Some(blueprint) = &catalog.blueprint {
        expect(
            "blueprint",
            blueprint,
            blueprint.len() == 64 && is_hex(blueprint),
            "64 lowercase hex digits",
        )?;
    }
    placeholder("placeholder".into(), &catalog.placeholder)?;
    for (i, record) in catalog.records.iter().enumerate() {
        let at = |field| format!("records[{i}].{field}");
        non_empty(at("name"), &record.name)?;
        non_empty(at("version"), &record.version)?;
        hex_field(at("sha256"), record.sha256.as_deref())?;
        hex_field(at("md5"), record.md5.as_deref())?;
    }
    let config_size = manifest.config().size();
    if config_size > MAX_CATALOG_BYTES {
        return Err(CatalogError::TooBig { size: config_size });
    }
    if catalog.layers.len() != manifest.layers().len() {
        return Err(CatalogError::LayerCount {
            catalog: catalog.layers.len(),
            manifest: manifest.layers().len(),
        });
    }
    let mut totals = [
        ("uncompressed size", 0u64),
        ("path count", 0),
        ("blob size", 0),
    ];
    for (i, (layer, descriptor)) in catalog.layers.iter().zip(manifest.layers()).enumerate() {
        if crate::store::from_oci_digest(descriptor.digest()) != Some(layer.digest) {
            return Err(CatalogError::LayerDigest {
                index: i,
                catalog: layer.digest,
                manifest: descriptor.digest().to_string(),
            });
        }
        let sizes = [
            (format!("layers[{i}].size"), layer.size),
            (format!("layers[{i}].files"), layer.files),
            (
                format!("the manifest's layers[{i}].size"),
                descriptor.size(),
            ),
        ];
        for ((what, total), (at, value)) in totals.iter_mut().zip(sizes) {
            if value > MAX_SIZE {
                return Err(CatalogError::Size { at, value });
            }
            *total = total
                .checked_add(value)
                .filter(|t| *t <= MAX_SIZE)
                .ok_or(CatalogError::Total { what })?;
        }
        non_empty(format!("layers[{i}].name"), &layer.name)?;
        hex_field(format!("layers[{i}].sha256"), layer.sha256.as_deref())?;
        for (j, package) in layer.packages.iter().enumerate() {
            let at = |field| format!("layers[{i}].packages[{j}].{field}");
            expect(
                &at("kind"),
                package.kind.as_str(),
                matches!(package.kind, LayerKind::Conda | LayerKind::Pypi),
                "conda or pypi",
            )?;
            non_empty(at("name"), &package.name)?;
            hex_field(at("sha256"), package.sha256.as_deref())?;
        }
        let mut seen = HashSet::new();
        for (j, relocation) in layer.relocations.iter().enumerate() {
            let at = format!("layers[{i}].relocations[{j}]");
            if let Some(reason) = path_problem(&relocation.path) {
                return Err(CatalogError::Path {
                    at: format!("{at}.path"),
                    path: shorten(&relocation.path),
                    reason,
                });
            }
            if !seen.insert(relocation.path.as_str()) {
                return Err(CatalogError::Duplicate {
                    layer: i,
                    path: shorten(&relocation.path),
                });
            }
            if let Some(own) = &relocation.placeholder {
                placeholder(format!("{at}.placeholder"), own)?;
            }
        }
    }
    Ok(())
}

/// Why a relocation path could not name a file inside its layer, if it could not.
fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.starts_with('/') {
        Some("is absolute")
    } else if path.split('/').any(|c| c == "..") {
        Some("has a `..` component")
    } else if path.contains('\0') {
        Some("holds a NUL byte")
    } else {
        None
    }
}

fn placeholder(at: String, value: &str) -> Result<(), CatalogError> {
    let nul = value.contains('\0');
    if value.is_empty() || value.len() > MAX_PLACEHOLDER || nul {
        return Err(CatalogError::Placeholder {
            at,
            len: value.len(),
            nul,
        });
    }
    Ok(())
}

fn expect(at: &str, value: &str, ok: bool, expected: &'static str) -> Result<(), CatalogError> {
    if ok {
        Ok(())
    } else {
        Err(CatalogError::Field {
            at: at.into(),
            value: shorten(value),
            expected,
        })
    }
}

fn non_empty(at: String, value: &str) -> Result<(), CatalogError> {
    expect(&at, value, !value.is_empty(), "a non-empty name")
}

fn hex_field(at: String, value: Option<&str>) -> Result<(), CatalogError> {
    match value {
        Some(v) => expect(&at, v, !v.is_empty() && is_hex(v), "lowercase hex digits"),
        None => Ok(()),
    }
}

/// The schema's `^[a-z0-9]+(-[a-z0-9]+)?$`.
fn is_platform(s: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split_once('-') {
        Some((os, arch)) => word(os) && word(arch),
        None => word(s),
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A value for a message: at most 80 characters of it, control characters escaped.
fn shorten(s: &str) -> String {
    let head: String = s.chars().take(80).collect();
    let mut out = head.escape_debug().to_string();
    if head.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogLayer, Environment, LayerPackage, Record, Relocation};
    use crate::layer::LayerDigests;
    use crate::relocate::{FileMode, PLACEHOLDER};

    fn layer(fill: u8, relocations: Vec<Relocation>) -> CatalogLayer {
        CatalogLayer {
            digest: Digest([fill; 32]),
            diff_id: Digest([fill + 100; 32]),
            size: 1000,
            files: 3,
            kind: LayerKind::Conda,
            name: format!("pkg{fill}"),
            version: Some("1.0".into()),
            build: Some("0".into()),
            subdir: None,
            channel: None,
            sha256: Some("ab".repeat(32)),
            relocations,
            packages: Vec::new(),
        }
    }

    fn relocation(path: &str, placeholder: Option<&str>) -> Relocation {
        Relocation {
            path: path.into(),
            mode: FileMode::Text,
            placeholder: placeholder.map(String::from),
        }
    }

    fn valid() -> Catalog {
        Catalog {
            schema_version: SCHEMA_VERSION,
            media_type: CATALOG_MEDIA_TYPE.into(),
            tool: "envoci test".into(),
            platform: "linux-64".into(),
            blueprint: Some("0f".repeat(32)),
            spec: None,
            placeholder: PLACEHOLDER.into(),
            records: vec![Record {
                name: "pkg1".into(),
                version: "1.0".into(),
                build: "0".into(),
                build_number: 0,
                subdir: "linux-64".into(),
                channel: None,
                url: None,
                sha256: Some("ab".repeat(32)),
                md5: None,
                depends: vec![],
            }],
            layers: vec![
                layer(1, vec![relocation("bin/a", None)]),
                layer(
                    2,
                    vec![relocation(
                        "etc/b",
                        Some("/opt/anaconda1anaconda2anaconda3"),
                    )],
                ),
            ],
            environment: Environment::default(),
        }
    }

    fn manifest_of(catalog: &Catalog) -> ImageManifest {
        let layers: Vec<(LayerDigests, &'static str)> = catalog
            .layers
            .iter()
            .map(|l| {
                let digests = LayerDigests {
                    digest: l.digest,
                    size: 10,
                    diff_id: l.diff_id,
                    uncompressed_size: l.size,
                };
                (digests, "application/vnd.envoci.layer.v1.tar+zstd")
            })
            .collect();
        super::super::build_manifest(catalog, (Digest([9; 32]), 100), &layers)
    }

    #[test]
    fn a_catalog_envoci_writes_is_valid() {
        let catalog = valid();
        validate(&catalog, &manifest_of(&catalog)).unwrap();
        let bytes = crate::json::to_canonical_vec(&catalog).unwrap();
        assert_eq!(
            parse_catalog(&bytes, &manifest_of(&catalog)).unwrap(),
            catalog
        );
    }

    #[test]
    fn catalogs_that_cannot_be_restored_safely_are_refused() {
        type Mutation = fn(&mut Catalog);
        let cases: &[(&str, Mutation, &str)] = &[
            (
                "empty placeholder",
                |c| c.placeholder.clear(),
                "placeholder has 0 bytes",
            ),
            (
                "256-byte placeholder",
                |c| c.placeholder = "/".repeat(256),
                "placeholder has 256 bytes",
            ),
            (
                "placeholder with a NUL",
                |c| c.placeholder = "/a\0b".into(),
                "with a NUL",
            ),
            (
                "empty relocation placeholder",
                |c| c.layers[1].relocations[0].placeholder = Some(String::new()),
                "layers[1].relocations[0].placeholder has 0 bytes",
            ),
            (
                "absolute relocation",
                |c| c.layers[0].relocations[0].path = "/etc/passwd".into(),
                "is absolute",
            ),
            (
                "escaping relocation",
                |c| c.layers[0].relocations[0].path = "bin/../../x".into(),
                "has a `..` component",
            ),
            (
                "empty relocation path",
                |c| c.layers[0].relocations[0].path = String::new(),
                "is empty",
            ),
            (
                "relocation path with a NUL",
                |c| c.layers[0].relocations[0].path = "bin/a\0".into(),
                "holds a NUL byte",
            ),
            (
                "duplicate relocation",
                |c| {
                    let again = c.layers[0].relocations[0].clone();
                    c.layers[0].relocations.push(again);
                },
                "relocates `bin/a` twice",
            ),
            (
                "size beyond 2^53",
                |c| c.layers[0].size = u64::MAX,
                "layers[0].size is 18446744073709551615",
            ),
            (
                "file count beyond 2^53",
                |c| c.layers[1].files = MAX_SIZE + 1,
                "layers[1].files",
            ),
            (
                "total beyond 2^53",
                |c| {
                    c.layers[0].size = MAX_SIZE;
                    c.layers[1].size = 1;
                },
                "uncompressed size summed over all layers",
            ),
            (
                "schema version",
                |c| c.schema_version = 2,
                "schema version 2",
            ),
            (
                "media type",
                |c| c.media_type = "application/json".into(),
                "mediaType `application/json`",
            ),
            (
                "platform",
                |c| c.platform = "../linux".into(),
                "platform `../linux`",
            ),
            (
                "blueprint",
                |c| c.blueprint = Some("é".repeat(40)),
                "blueprint",
            ),
            ("layer name", |c| c.layers[0].name.clear(), "layers[0].name"),
            (
                "record hash",
                |c| c.records[0].sha256 = Some("XYZ".into()),
                "records[0].sha256 `XYZ`",
            ),
            (
                "group member kind",
                |c| {
                    c.layers[0].packages.push(LayerPackage {
                        kind: LayerKind::Group,
                        name: "x".into(),
                        version: None,
                        build: None,
                        subdir: None,
                        channel: None,
                        sha256: None,
                    })
                },
                "layers[0].packages[0].kind `group`",
            ),
        ];
        for (what, mutate, message) in cases {
            let mut catalog = valid();
            let manifest = manifest_of(&catalog);
            mutate(&mut catalog);
            let err = validate(&catalog, &manifest).expect_err(what).to_string();
            assert!(err.contains(message), "{what}: {err}");
        }
    }

    #[test]
    fn a_catalog_must_describe_exactly_the_manifests_layers() {
        let catalog = valid();
        let mut fewer = catalog.clone();
        fewer.layers.pop();
        let err = validate(&fewer, &manifest_of(&catalog)).unwrap_err();
        assert!(matches!(
            err,
            CatalogError::LayerCount {
                catalog: 1,
                manifest: 2
            }
        ));
        let mut swapped = catalog.clone();
        swapped.layers.swap(0, 1);
        let err = validate(&swapped, &manifest_of(&catalog)).unwrap_err();
        assert!(
            matches!(err, CatalogError::LayerDigest { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn manifest_sizes_beyond_2_53_are_refused() {
        let catalog = valid();
        let mut manifest = manifest_of(&catalog);
        let mut layers = manifest.layers().clone();
        layers[1].set_size(u64::MAX);
        manifest.set_layers(layers);
        let err = validate(&catalog, &manifest).unwrap_err();
        assert!(
            err.to_string().contains("the manifest's layers[1].size"),
            "{err}"
        );
        let mut manifest = manifest_of(&catalog);
        let mut config = manifest.config().clone();
        config.set_size(MAX_CATALOG_BYTES + 1);
        manifest.set_config(config);
        assert!(matches!(
            validate(&catalog, &manifest),
            Err(CatalogError::TooBig { .. })
        ));
    }

    #[test]
    fn unparsable_catalogs_are_refused_cleanly() {
        let catalog = valid();
        let manifest = manifest_of(&catalog);
        let json = || serde_json::to_value(&catalog).unwrap();
        let refuse = |value: &[u8], what: &str| {
            let err = parse_catalog(value, &manifest).expect_err(what);
            assert!(matches!(err, CatalogError::Json(_)), "{what}: {err}");
        };
        // Sizes of 2^64 and beyond do not fit.
        let mut big = json();
        big["layers"][0]["size"] = serde_json::from_str("18446744073709551616").unwrap();
        refuse(&serde_json::to_vec(&big).unwrap(), "2^64");
        big["layers"][0]["size"] = (-1).into();
        refuse(&serde_json::to_vec(&big).unwrap(), "negative");
        // A field the schema does not know.
        let mut unknown = json();
        unknown["layers"][0]["extra"] = 1.into();
        refuse(&serde_json::to_vec(&unknown).unwrap(), "unknown field");
        // 100 000 levels of nesting, where any JSON goes (the spec) and where an unknown
        // field would be skipped: an error, not a stack overflow.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let mut bytes = serde_json::to_vec(&json()).unwrap();
        bytes.pop();
        for field in ["spec", "deep"] {
            let mut doc = bytes.clone();
            doc.extend_from_slice(format!(",\"{field}\":{deep}}}").as_bytes());
            refuse(&doc, field);
        }
        let huge = vec![b' '; MAX_CATALOG_BYTES as usize + 1];
        assert!(matches!(
            parse_catalog(&huge, &manifest),
            Err(CatalogError::TooBig { .. })
        ));
    }
}
