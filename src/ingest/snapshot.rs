//! The snapshot driver: walk, attribute, plan, build the layers in parallel, write the
//! catalog and its manifest, tag it last.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::plan::{group_by_owner, plan_layers, Planned};
use super::scan;
use super::walk::{walk, Walked, WalkedKind};
use super::{attribute, Attribution, Error, Options, Snapshot, DEFAULT_MAX_LAYERS};
use crate::artifact;
use crate::catalog::{self, Catalog, CatalogLayer, Environment};
use crate::digest::Digest;
use crate::layer::{Compression, LayerDigests};
use crate::relocate::PLACEHOLDER;
use crate::store::{self, Scratch, Store};

/// Snapshots the environment at `prefix` into `store`.
pub fn snapshot(store: &Store, prefix: &Path, options: &Options) -> Result<Snapshot, Error> {
    let prefix = resolve_prefix(prefix)?;
    let tag = match &options.tag {
        Some(t) => t.clone(),
        None => default_tag(&prefix),
    };
    store::validate_tag(&tag)?;
    let prefix_str = prefix
        .to_str()
        .ok_or_else(|| Error::NotUtf8 {
            path: prefix.clone(),
        })?
        .to_string();

    let walked = walk(&prefix)?;
    let linkables: Vec<&str> = walked
        .iter()
        .filter(|w| !matches!(w.kind, WalkedKind::EmptyDir))
        .map(|w| w.rel.as_str())
        .collect();
    let mut attribution = attribute(&prefix, &linkables)?;
    for owner in &mut attribution.owners {
        if owner.kind == crate::catalog::LayerKind::Pypi {
            let key = super::pip_key(&owner.name, owner.version.as_deref().unwrap_or(""));
            owner.sha256 = options.pip_sha256.get(&key).cloned();
        }
    }
    let groups = group_by_owner(&walked, &attribution);
    let py_sources = py_sources(&walked);

    let scratch = store.scratch()?;
    let ctx = scan::Context {
        store,
        scratch: &scratch,
        prefix: &prefix,
        prefix_str: &prefix_str,
        attribution: &attribution,
        py_sources: &py_sources,
        binary_placeholder: binary_placeholder(options, &prefix_str),
    };
    let planned = plan_layers(
        &attribution.owners,
        groups,
        options.max_layers.unwrap_or(DEFAULT_MAX_LAYERS),
    );
    let built: Vec<(CatalogLayer, LayerDigests)> = planned
        .par_iter()
        .map(|layer| build_layer(&ctx, layer, options.compression))
        .collect::<Result<_, Error>>()?;

    let catalog = make_catalog(options, &attribution, &built, &prefix, &walked);
    let media = options.compression.media_type();
    let layer_digests: Vec<(LayerDigests, &'static str)> =
        built.iter().map(|(_, d)| (*d, media)).collect();
    let (manifest, manifest_size) =
        commit_catalog(store, &scratch, &catalog, &layer_digests, &tag)?;
    let (files, bytes) = totals(&walked);
    Ok(Snapshot {
        manifest,
        manifest_size,
        tag,
        catalog,
        files,
        bytes,
    })
}

/// The placeholder for binary files no package declares: the canonical one of the
/// prefix's length for a build prefix (or any prefix as long as [`PLACEHOLDER`]);
/// otherwise none, and such a file keeps the prefix's own path.
fn binary_placeholder(options: &Options, prefix: &str) -> Option<&'static str> {
    let canonical = options.build_prefix || prefix.len() == PLACEHOLDER.len();
    canonical
        .then(|| crate::relocate::placeholder_of_len(prefix.len()))
        .flatten()
}

/// The prefix's real path; it must be a directory.
fn resolve_prefix(prefix: &Path) -> Result<PathBuf, Error> {
    let resolved = fs::canonicalize(prefix).map_err(|e| Error::Prefix {
        path: prefix.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !resolved.is_dir() {
        return Err(Error::Prefix {
            path: resolved,
            reason: "not a directory".into(),
        });
    }
    Ok(resolved)
}

/// mtime and size of every `.py` file, to validate `.pyc` headers.
fn py_sources(walked: &[Walked]) -> HashMap<&str, (i64, u64)> {
    walked
        .iter()
        .filter_map(|w| match w.kind {
            WalkedKind::File { mtime, size, .. } if w.rel.ends_with(".py") => {
                Some((w.rel.as_str(), (mtime, size)))
            }
            _ => None,
        })
        .collect()
}

/// Regular files ingested and their bytes.
fn totals(walked: &[Walked]) -> (u64, u64) {
    walked
        .iter()
        .fold((0, 0), |(files, bytes), w| match w.kind {
            WalkedKind::File { size, .. } => (files + 1, bytes + size),
            _ => (files, bytes),
        })
}

/// The catalog of a snapshot, from its options, attribution and built layers.
fn make_catalog(
    options: &Options,
    attribution: &Attribution,
    built: &[(CatalogLayer, LayerDigests)],
    prefix: &Path,
    walked: &[Walked],
) -> Catalog {
    let platform = options
        .platform
        .clone()
        .or_else(|| attribution.platform.clone())
        .unwrap_or_else(|| artifact::host_platform().to_string());
    Catalog {
        schema_version: catalog::SCHEMA_VERSION,
        media_type: artifact::CATALOG_MEDIA_TYPE.into(),
        tool: crate::TOOL_VERSION.into(),
        platform,
        blueprint: options.blueprint.clone(),
        spec: options.spec.clone(),
        placeholder: PLACEHOLDER.into(),
        records: attribution.records.clone(),
        layers: built.iter().map(|(l, _)| l.clone()).collect(),
        environment: environment(prefix, walked),
    }
}

/// Writes the catalog and its manifest into the store and tags the manifest.
pub fn commit_catalog(
    store: &Store,
    scratch: &Scratch,
    catalog: &Catalog,
    layers: &[(LayerDigests, &'static str)],
    tag: &str,
) -> Result<(Digest, u64), Error> {
    let (catalog_digest, catalog_size, _) = store.put_json_blob(scratch, catalog)?;
    let manifest = artifact::build_manifest(catalog, (catalog_digest, catalog_size), layers);
    let (digest, size, _) = store.put_json_blob(scratch, &manifest)?;
    let mut descriptor = artifact::manifest_descriptor(&digest, size);
    descriptor.set_annotations(Some(HashMap::from([(
        store::ANNOTATION_PLATFORM.to_string(),
        catalog.platform.clone(),
    )])));
    store.set_tag(tag, &descriptor)?;
    Ok((digest, size))
}

/// Scans one planned layer's files and writes its blob, unless the same content was
/// written as a layer before. Returns its catalog entry and digests.
fn build_layer(
    ctx: &scan::Context<'_>,
    planned: &Planned<'_>,
    compression: Compression,
) -> Result<(CatalogLayer, LayerDigests), Error> {
    let (index_entries, relocations) = scan::scan_layer(ctx, &planned.entries)?;
    let digests = match ctx.store.known_layer(&index_entries, compression)? {
        // The same content was written as a layer before: no tar, no compression.
        Some(known) => known,
        None => ctx
            .store
            .write_layer(ctx.scratch, &index_entries, compression)?,
    };
    let owner = &planned.owner;
    let layer = CatalogLayer {
        digest: digests.digest,
        diff_id: digests.diff_id,
        size: digests.uncompressed_size,
        files: index_entries.len() as u64,
        kind: owner.kind,
        name: owner.name.clone(),
        version: owner.version.clone(),
        build: owner.build.clone(),
        subdir: owner.subdir.clone(),
        channel: owner.channel.clone(),
        sha256: owner.sha256.clone(),
        relocations,
        packages: planned.members.clone(),
    };
    Ok((layer, digests))
}

/// Variables from `conda-meta/state` and the activation scripts.
fn environment(prefix: &Path, walked: &[Walked]) -> Environment {
    let mut env = Environment::default();
    if let Ok(bytes) = fs::read(prefix.join("conda-meta/state")) {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if let Some(vars) = value.get("env_vars").and_then(|v| v.as_object()) {
                for (k, v) in vars {
                    if let Some(v) = v.as_str() {
                        env.variables.insert(k.clone(), v.to_string());
                    }
                }
            }
        }
    }
    env.activation_scripts = walked
        .iter()
        .filter(|w| {
            w.rel.starts_with("etc/conda/activate.d/") && !matches!(w.kind, WalkedKind::EmptyDir)
        })
        .map(|w| w.rel.clone())
        .collect();
    env
}

/// The prefix's directory name, made a valid tag (`env` if nothing is left).
fn default_tag(prefix: &Path) -> String {
    let name: String = prefix
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let name = name.trim_start_matches(['.', '-']).to_string();
    if name.is_empty() {
        "env".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_files_no_package_declares_get_a_canonical_placeholder_in_builds_only() {
        let build = Options {
            build_prefix: true,
            ..Options::default()
        };
        let snapshot = Options::default();
        let p80 = "/s/build-v1/bp-12".to_string() + &"_".repeat(63);
        let p255 = "/".repeat(PLACEHOLDER.len());
        assert_eq!(binary_placeholder(&build, &p80), Some(&PLACEHOLDER[..80]));
        assert_eq!(binary_placeholder(&snapshot, &p80), None);
        assert_eq!(binary_placeholder(&snapshot, &p255), Some(PLACEHOLDER));
        assert_eq!(binary_placeholder(&build, &(p255 + "/x")), None);
    }
}
