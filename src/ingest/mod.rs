//! Ingest: turn an installed environment (a *prefix*) into layers and a catalog.
//!
//! [`snapshot`] walks the prefix, [`attribute`]s every file to a layer owner, then
//! builds the layers in parallel. Each file is read once: hashed, scanned for the
//! prefix, rewritten to the placeholder if it holds it, put in the file CAS if new and
//! appended to its layer's tar. Blobs go to the store's scratch area and are committed
//! by rename; the manifest is tagged last, so an interrupted snapshot leaves nothing
//! visible.

pub mod attribute;
mod scan;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use attribute::{attribute, Attribution, Owner};

use crate::catalog::{self, Catalog, CatalogLayer, Environment, LayerKind};
use crate::digest::Digest;
use crate::layer::{Compression, LayerDigests};
use crate::relocate::PLACEHOLDER;
use crate::store::{self, Scratch, Store};

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The prefix cannot be used at all.
    #[error("cannot snapshot {}: {reason}", path.display())]
    Prefix {
        /// The prefix.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the prefix cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path that is not UTF-8 (layers and catalogs are UTF-8).
    #[error("{} has a name that is not UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A `conda-meta/*.json` that does not parse.
    #[error("{} is not a valid conda package record", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: io::Error,
    },
    /// The tag is not a valid OCI tag.
    #[error(transparent)]
    Tag(#[from] store::InvalidTag),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What to snapshot and how.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Tag to give the catalog (default: the prefix's directory name).
    pub tag: Option<String>,
    /// Layer compression.
    pub compression: Compression,
    /// The platform to record (default: what the packages say, else this machine's).
    pub platform: Option<String>,
    /// The blueprint, for an environment envoci built from a spec.
    pub blueprint: Option<String>,
    /// The canonical spec it was built from.
    pub spec: Option<serde_json::Value>,
    /// Most layers in the manifest [default: [`DEFAULT_MAX_LAYERS`]]; above it, small
    /// packages share layers (some registries refuse manifests with ~500 layers).
    pub max_layers: Option<usize>,
}

/// Default largest number of layers in a manifest.
pub const DEFAULT_MAX_LAYERS: usize = 256;

/// What a snapshot produced.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The manifest's digest.
    pub manifest: Digest,
    /// The manifest's size.
    pub manifest_size: u64,
    /// The tag it was given.
    pub tag: String,
    /// The catalog.
    pub catalog: Catalog,
    /// Files (regular) ingested.
    pub files: u64,
    /// Bytes of regular files ingested.
    pub bytes: u64,
}

/// One path found in the prefix.
#[derive(Clone, Debug)]
pub(crate) struct Walked {
    pub rel: String,
    pub kind: WalkedKind,
}

#[derive(Clone, Debug)]
pub(crate) enum WalkedKind {
    File { size: u64, exec: bool, mtime: i64 },
    Symlink { target: String },
    EmptyDir,
}

/// Snapshots the environment at `prefix` into `store`.
pub fn snapshot(store: &Store, prefix: &Path, options: &Options) -> Result<Snapshot, Error> {
    let prefix = fs::canonicalize(prefix).map_err(|e| Error::Prefix {
        path: prefix.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !prefix.is_dir() {
        return Err(Error::Prefix {
            path: prefix,
            reason: "not a directory".into(),
        });
    }
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
    let attribution = attribute(&prefix, &linkables)?;

    let mut groups: Vec<Vec<&Walked>> = vec![Vec::new(); attribution.owners.len()];
    for w in &walked {
        let owner = match w.kind {
            WalkedKind::EmptyDir => attribution.env_owner(),
            _ => attribution.owner(&w.rel),
        };
        groups[owner].push(w);
    }
    let py_sources: HashMap<&str, (i64, u64)> = walked
        .iter()
        .filter_map(|w| match w.kind {
            WalkedKind::File { mtime, size, .. } if w.rel.ends_with(".py") => {
                Some((w.rel.as_str(), (mtime, size)))
            }
            _ => None,
        })
        .collect();

    let scratch = store.scratch()?;
    let ctx = scan::Context {
        store,
        scratch: &scratch,
        prefix: &prefix,
        prefix_str: &prefix_str,
        attribution: &attribution,
        py_sources: &py_sources,
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

    let files = walked
        .iter()
        .filter(|w| matches!(w.kind, WalkedKind::File { .. }))
        .count() as u64;
    let bytes = walked
        .iter()
        .map(|w| {
            if let WalkedKind::File { size, .. } = w.kind {
                size
            } else {
                0
            }
        })
        .sum();
    let platform = options
        .platform
        .clone()
        .or_else(|| attribution.platform.clone())
        .unwrap_or_else(|| catalog::host_platform().to_string());
    let catalog = Catalog {
        schema_version: catalog::SCHEMA_VERSION,
        media_type: catalog::CATALOG_MEDIA_TYPE.into(),
        tool: crate::TOOL_VERSION.into(),
        platform,
        blueprint: options.blueprint.clone(),
        spec: options.spec.clone(),
        placeholder: PLACEHOLDER.into(),
        records: attribution.records.clone(),
        layers: built.iter().map(|(l, _)| l.clone()).collect(),
        environment: environment(&prefix, &walked),
    };
    let media = options.compression.media_type();
    let layer_digests: Vec<(LayerDigests, &'static str)> =
        built.iter().map(|(_, d)| (*d, media)).collect();
    let (manifest, manifest_size) =
        commit_catalog(store, &scratch, &catalog, &layer_digests, &tag)?;
    Ok(Snapshot {
        manifest,
        manifest_size,
        tag,
        catalog,
        files,
        bytes,
    })
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
    let manifest = catalog::build_manifest(catalog, (catalog_digest, catalog_size), layers);
    let (digest, size, _) = store.put_json_blob(scratch, &manifest)?;
    let mut descriptor = catalog::manifest_descriptor(&digest, size);
    descriptor.set_annotations(Some(HashMap::from([(
        store::ANNOTATION_PLATFORM.to_string(),
        catalog.platform.clone(),
    )])));
    store.set_tag(tag, &descriptor)?;
    Ok((digest, size))
}

/// One layer to write: its owner (a package, the environment, or a group) and, for a
/// group, the packages it holds.
struct Planned<'a> {
    owner: Owner,
    members: Vec<Owner>,
    entries: Vec<&'a Walked>,
}

/// The layers of an environment: one per owner (the environment's own last), unless
/// that is more than `limit`. Then the largest packages keep their own layers and the
/// others share `limit / 8` group layers, each package's group chosen by a hash of its
/// name, so a small package lands in the same group in every environment. Each path
/// has exactly one owner, so merging owners never changes which file wins a path.
fn plan_layers<'a>(
    owners: &[Owner],
    groups: Vec<Vec<&'a Walked>>,
    limit: usize,
) -> Vec<Planned<'a>> {
    let single = |owner: &Owner, entries: Vec<&'a Walked>| Planned {
        owner: owner.clone(),
        members: Vec::new(),
        entries,
    };
    let limit = limit.max(3);
    if owners.len() <= limit {
        return owners
            .iter()
            .zip(groups)
            .map(|(owner, entries)| single(owner, entries))
            .collect();
    }
    let env = owners.len() - 1;
    let shared = (limit / 8).max(1);
    let keep = limit - 1 - shared;
    let sizes: Vec<u64> = groups
        .iter()
        .map(|entries| {
            entries
                .iter()
                .map(|w| match w.kind {
                    WalkedKind::File { size, .. } => size,
                    _ => 0,
                })
                .sum()
        })
        .collect();
    let mut by_size: Vec<usize> = (0..env).collect();
    by_size.sort_by(|&a, &b| {
        sizes[b]
            .cmp(&sizes[a])
            .then_with(|| owners[a].name.cmp(&owners[b].name))
    });
    let kept: std::collections::HashSet<usize> = by_size.into_iter().take(keep).collect();
    let bucket_of = |name: &str| {
        let hash = Digest::of(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.0[..8]);
        (u64::from_be_bytes(first) % shared as u64) as usize
    };
    let mut buckets: Vec<(Vec<Owner>, Vec<&'a Walked>)> = vec![(Vec::new(), Vec::new()); shared];
    let mut planned = Vec::new();
    let mut env_layer = None;
    for (i, entries) in groups.into_iter().enumerate() {
        if i == env {
            env_layer = Some(single(&owners[i], entries));
        } else if kept.contains(&i) {
            planned.push(single(&owners[i], entries));
        } else {
            let bucket = &mut buckets[bucket_of(&owners[i].name)];
            bucket.0.push(owners[i].clone());
            bucket.1.extend(entries);
        }
    }
    for (i, (members, entries)) in buckets.into_iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let owner = Owner {
            kind: LayerKind::Group,
            name: format!("group-{i:02}-of-{shared:02}"),
            version: None,
            build: None,
            subdir: None,
            channel: None,
            sha256: None,
        };
        planned.push(Planned {
            owner,
            members,
            entries,
        });
    }
    planned.extend(env_layer);
    planned
}

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

fn walk(prefix: &Path) -> Result<Vec<Walked>, Error> {
    let mut out = Vec::new();
    let mut parents_with_children = std::collections::HashSet::new();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(prefix)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| prefix.to_path_buf());
            Error::Read {
                path,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("filesystem loop")),
            }
        })?;
        let rel_path = entry.path().strip_prefix(prefix).unwrap_or(entry.path());
        let rel = rel_path
            .to_str()
            .ok_or_else(|| Error::NotUtf8 {
                path: entry.path().to_path_buf(),
            })?
            .to_string();
        if let Some((parent, _)) = rel.rsplit_once('/') {
            parents_with_children.insert(parent.to_string());
        }
        let ft = entry.file_type();
        if ft.is_dir() {
            dirs.push(rel);
            continue;
        }
        let read_err = |source| Error::Read {
            path: entry.path().to_path_buf(),
            source,
        };
        if ft.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(read_err)?;
            let target = target
                .to_str()
                .ok_or_else(|| Error::NotUtf8 {
                    path: entry.path().to_path_buf(),
                })?
                .to_string();
            out.push(Walked {
                rel,
                kind: WalkedKind::Symlink { target },
            });
        } else if ft.is_file() {
            let meta = entry.metadata().map_err(|e| {
                read_err(
                    e.into_io_error()
                        .unwrap_or_else(|| io::Error::other("metadata")),
                )
            })?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.push(Walked {
                rel,
                kind: WalkedKind::File {
                    size: meta.len(),
                    exec,
                    mtime: meta.mtime(),
                },
            });
        }
        // Sockets, FIFOs and devices are not environment content: skipped.
    }
    for dir in dirs {
        if !parents_with_children.contains(&dir) {
            out.push(Walked {
                rel: dir,
                kind: WalkedKind::EmptyDir,
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

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
