//! Import: the selected artifacts of a layout into the store, every blob checked
//! before anything is committed, tags last.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use oci_spec::image::{ImageIndex, ImageManifest};
use rayon::prelude::*;

use super::{Error, Layout, ANNOTATION_SINCE};
use crate::artifact;
use crate::catalog::CatalogLayer;
use crate::digest::Digest;
use crate::store::Error as StoreError;
use crate::store::{self, Store, ANNOTATION_REF_NAME};
use crate::transfer::{Error as TransferError, Report};

/// Which artifacts of a layout to take.
#[derive(Clone, Copy, Debug)]
pub enum Select<'a> {
    /// The one with this tag, or the only one there is.
    One(Option<&'a str>),
    /// Every tagged artifact.
    All,
}

/// An artifact taken from a layout into the store.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Imported {
    /// Its tag, now a name in the store.
    pub name: String,
    /// Its manifest digest.
    pub digest: String,
}

/// How an import treats the layout's blobs.
#[derive(Clone, Debug)]
pub struct ImportOptions<'a> {
    /// The platform to take from a multi-platform index [default: this machine's].
    pub platform: Option<&'a str>,
    /// Where progress (bytes staged and checked) goes.
    pub progress: crate::progress::Reporter,
}

/// Copies the selected artifacts of `layout` into `store`: only blobs the store lacks,
/// each verified while it streams into scratch; all are committed (and layers
/// extracted into the file CAS) only once every one is in, then the tags are set.
pub fn import(
    store: &Store,
    layout: &Layout,
    select: Select<'_>,
    options: ImportOptions<'_>,
) -> Result<(Report, Vec<Imported>), TransferError> {
    let index = layout.index()?;
    let since = index
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SINCE))
        .cloned();
    let chosen = selected(layout, &index, select)?;
    // Manifests first (small; always verified): what each artifact needs.
    let manifests = chosen
        .into_iter()
        .map(|(name, digest)| read_manifest(layout, name, &digest, options.platform))
        .collect::<Result<Vec<_>, _>>()?;
    let mut report = Report {
        reference: layout.location(),
        ..Report::default()
    };
    let missing = missing_blobs(store, layout, &manifests, since, &mut report)?;
    let scratch = store.scratch()?;
    let total = crate::sum_sizes(missing.iter().map(|(_, size, _)| size));
    let progress = &options.progress;
    progress.begin("importing", total, crate::progress::Unit::Bytes);
    let staged = (store, &scratch, layout, progress);
    stage_and_commit(staged, &manifests, &missing, &mut report)?;
    progress.end();
    let mut imported = Vec::new();
    for (name, bytes, _) in manifests {
        let (digest, size) = store.put_blob(&scratch, &bytes)?;
        let descriptor = artifact::manifest_descriptor(&digest, size);
        store.set_ref(&name, &descriptor)?;
        report.digest = digest.oci();
        imported.push(Imported {
            name,
            digest: digest.oci(),
        });
    }
    Ok((report, imported))
}

/// The artifact tag `tag` names in `layout` (the only one when `None`), manifest and
/// catalog only — no layer is read (`diff`).
pub fn peek(
    layout: &Layout,
    tag: Option<&str>,
    platform: Option<&str>,
) -> Result<artifact::Artifact, TransferError> {
    let index = layout.index()?;
    let chosen = selected(layout, &index, Select::One(tag))?;
    let Some((name, digest)) = chosen.into_iter().next() else {
        return Err(Error::BadIndex {
            location: layout.location(),
            reason: "it names no tagged artifact".into(),
        }
        .into());
    };
    let (name, bytes, manifest) = read_manifest(layout, name, &digest, platform)?;
    let reference = format!("{}:{name}", layout.location());
    let config = artifact::catalog_digest(&reference, &manifest)?;
    let catalog = layout.read_blob(&config)?;
    Ok(artifact::from_parts(
        &reference,
        Digest::of(&bytes),
        manifest,
        &catalog,
    )?)
}

/// The (tag, manifest digest) pairs `select` picks from the layout's index.
fn selected(
    layout: &Layout,
    index: &ImageIndex,
    select: Select<'_>,
) -> Result<Vec<(String, Digest)>, Error> {
    let location = layout.location();
    let mut tagged = Vec::new();
    let mut untagged = 0;
    for entry in index.manifests() {
        let digest = store::from_oci_digest(entry.digest()).ok_or_else(|| Error::BadIndex {
            location: location.clone(),
            reason: format!("an entry has no sha256 digest: {}", entry.digest()),
        })?;
        match entry
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME))
        {
            Some(name) => tagged.push((name.clone(), digest)),
            None => untagged += 1,
        }
    }
    let present = || {
        let names: Vec<&str> = tagged.iter().map(|(n, _)| n.as_str()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    match select {
        Select::One(Some(tag)) => {
            let found: Vec<_> = tagged.iter().filter(|(n, _)| n == tag).cloned().collect();
            if found.is_empty() {
                return Err(Error::NoSuchTag {
                    location,
                    tag: tag.into(),
                    present: present(),
                });
            }
            Ok(found)
        }
        Select::All | Select::One(None) if tagged.is_empty() => Err(Error::BadIndex {
            location,
            reason: format!("it names no tagged artifact ({untagged} untagged)"),
        }),
        Select::One(None) if tagged.len() == 1 => Ok(tagged),
        Select::One(None) => Err(Error::Ambiguous {
            location,
            present: present(),
        }),
        Select::All => Ok(tagged),
    }
}

/// The manifest tag `name` names (through an index, for `platform`), checked against
/// its digest and to be an envoci environment.
fn read_manifest(
    layout: &Layout,
    name: String,
    digest: &Digest,
    platform: Option<&str>,
) -> Result<(String, Vec<u8>, ImageManifest), TransferError> {
    let location = layout.location();
    let reference = format!("{location}:{name}");
    let bad = |reason: String| Error::BadIndex {
        location: location.clone(),
        reason,
    };
    let mut bytes = layout.read_blob(digest)?;
    let index = artifact::parse_index(&bytes)
        .map_err(|e| bad(format!("manifest {digest} is not JSON: {e}")))?;
    if let Some(index) = index {
        let want = platform.unwrap_or(artifact::host_platform());
        let chosen =
            artifact::choose_platform(&index, want).map_err(|what| TransferError::NotEnvoci {
                reference: reference.clone(),
                what,
            })?;
        bytes = layout.read_blob(&chosen.digest)?;
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest of `{name}`: {e}")))?;
    artifact::check_envoci(&manifest).map_err(|what| TransferError::NotEnvoci {
        reference,
        what: format!("it is {what}"),
    })?;
    Ok((name, bytes, manifest))
}

/// The blobs the manifests name that the store lacks (each once), with size and media
/// type; those the store has are counted as skipped. A blob neither has is an error
/// naming the base of an incremental bundle.
fn missing_blobs(
    store: &Store,
    layout: &Layout,
    manifests: &[(String, Vec<u8>, ImageManifest)],
    since: Option<String>,
    report: &mut Report,
) -> Result<Vec<(Digest, u64, String)>, Error> {
    let mut needed: BTreeMap<Digest, (u64, String)> = BTreeMap::new();
    for (_, _, manifest) in manifests {
        for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let digest = store::from_oci_digest(d.digest()).ok_or_else(|| Error::BadIndex {
                location: layout.location(),
                reason: format!("unsupported digest {}", d.digest()),
            })?;
            needed.insert(digest, (d.size(), d.media_type().to_string()));
        }
    }
    let mut missing = Vec::new();
    for (digest, (size, media)) in needed {
        if store.has_blob(&digest) {
            report.blobs_skipped += 1;
            report.bytes_skipped += size;
        } else if layout.has_blob(&digest) {
            missing.push((digest, size, media));
        } else {
            return Err(Error::MissingBlob {
                location: layout.location(),
                digest: digest.oci(),
                base: since,
            });
        }
    }
    Ok(missing)
}

/// Where an import stages blobs from, into which store, reporting progress where.
type Staging<'a> = (
    &'a Store,
    &'a store::Scratch,
    &'a Layout,
    &'a crate::progress::Reporter,
);

/// Stages every missing blob, then commits them all. The catalogs come first, hashed
/// as they are copied and validated: each says what its layers must unpack to. A
/// layer is unpacked into the file CAS from its staged copy, and that one pass hashes
/// it — digest, diff id and uncompressed size checked — so every blob is checked, each
/// read once (copied into scratch and unpacked in the same pass), before anything is
/// committed.
fn stage_and_commit(
    (store, scratch, layout, progress): Staging<'_>,
    manifests: &[(String, Vec<u8>, ImageManifest)],
    missing: &[(Digest, u64, String)],
    report: &mut Report,
) -> Result<(), TransferError> {
    let configs: Vec<Option<Digest>> = manifests
        .iter()
        .map(|(_, _, m)| store::from_oci_digest(m.config().digest()))
        .collect();
    let (catalogs, mut layers): (Vec<_>, Vec<_>) =
        missing.iter().partition(|b| configs.contains(&Some(b.0)));
    // Largest first: the longest unpacking starts at once, small ones fill around it.
    layers.sort_by_key(|(_, size, _)| std::cmp::Reverse(*size));
    let mut staged: Vec<(Digest, u64, tempfile::TempPath)> = catalogs
        .par_iter()
        .map(|(digest, size, _)| {
            let path = stage_blob(scratch, layout, digest, *size, hash_it)?;
            progress.advance(*size);
            Ok((*digest, *size, path))
        })
        .collect::<Result<_, TransferError>>()?;
    let expected = expected_layers(store, manifests, &staged)?;
    let staged_layers: Vec<(Digest, u64, tempfile::TempPath)> = layers
        .par_iter()
        .map(|(digest, size, media)| {
            let path = match expected.iter().find(|l| l.digest == *digest) {
                // Unpacked as it is copied: the unpacking checks the blob digest.
                Some(layer) => stage_blob(scratch, layout, digest, *size, |blob| {
                    store.extract_layer_from(scratch, blob, layer, media, false)?;
                    Ok(None)
                })?,
                None => stage_blob(scratch, layout, digest, *size, hash_it)?,
            };
            progress.advance(*size);
            Ok((*digest, *size, path))
        })
        .collect::<Result<_, TransferError>>()?;
    staged.extend(staged_layers);
    for (digest, size, path) in &staged {
        store.commit_file(path, digest)?;
        report.blobs_transferred += 1;
        report.bytes_transferred += size;
    }
    Ok(())
}

/// What each layer of `manifests` must unpack to, from their catalogs (staged, or
/// already in the store).
fn expected_layers(
    store: &Store,
    manifests: &[(String, Vec<u8>, ImageManifest)],
    staged: &[(Digest, u64, tempfile::TempPath)],
) -> Result<Vec<CatalogLayer>, TransferError> {
    let mut expected = Vec::new();
    for (name, _, manifest) in manifests {
        let invalid = |reason: String| artifact::LoadError::Invalid {
            reference: name.clone(),
            what: "catalog",
            reason,
        };
        let config = store::from_oci_digest(manifest.config().digest())
            .ok_or_else(|| invalid("its digest is not sha256".into()))?;
        let bytes = match staged.iter().find(|(d, ..)| *d == config) {
            Some((_, _, path)) => std::fs::read(path).map_err(StoreError::io("read", &**path))?,
            None => store.read_blob(&config)?,
        };
        // Validated before any layer is unpacked against it.
        let catalog = artifact::parse_catalog(&bytes, manifest)
            .map_err(|e| invalid(crate::error_chain(&e)))?;
        let layers = catalog.layers.into_iter().zip(manifest.layers());
        expected.extend(
            layers
                .filter(|(l, d)| store::from_oci_digest(d.digest()) == Some(l.digest))
                .map(|(l, _)| l),
        );
    }
    Ok(expected)
}

/// Copies one blob from the layout into a scratch file — never more than one byte past
/// its size — while `read` reads it (to its end) and returns its digest, or `None`
/// when it checked the digest itself (a layer's unpacking does); the file is deleted if
/// anything is wrong or when dropped.
fn stage_blob(
    scratch: &store::Scratch,
    layout: &Layout,
    digest: &Digest,
    size: u64,
    read: impl FnOnce(&mut dyn Read) -> Result<Option<Digest>, StoreError>,
) -> Result<tempfile::TempPath, TransferError> {
    let location = layout.location();
    let (reader, _) = layout
        .open_entry(&Layout::blob_name(digest))?
        .ok_or_else(|| Error::MissingBlob {
            location: location.clone(),
            digest: digest.oci(),
            base: None,
        })?;
    let tmp = scratch.temp_file()?;
    let (file, path) = tmp.into_parts();
    let mut copy = Copying {
        reader: reader.take(size.saturating_add(1)),
        copy: BufWriter::with_capacity(1 << 20, file),
        copied: 0,
    };
    let read = read(&mut copy);
    // Whatever `read` left (it failed midway) is copied too: the error then says
    // whether the whole blob matches its name.
    io::copy(&mut copy, &mut io::sink()).map_err(StoreError::io("copy a blob from", &location))?;
    let copied = copy.copied;
    copy.copy
        .into_inner()
        .map_err(|e| StoreError::io("write", scratch.dir())(e.into_error()))?;
    let actual = read.map_err(|e| mismatch_or(e, layout, digest, &path))?;
    if copied != size || actual.is_some_and(|a| a != *digest) {
        return Err(Error::Mismatch {
            location,
            digest: digest.oci(),
            actual: actual.map_or_else(|| "unchecked".into(), |a| a.oci()),
            size: copied,
        }
        .into());
    }
    Ok(path)
}

/// Hashes a whole blob (one that no unpacking checks).
fn hash_it(blob: &mut dyn Read) -> Result<Option<Digest>, StoreError> {
    let (digest, _) = Digest::of_reader(blob).map_err(StoreError::io("read", "a blob"))?;
    Ok(Some(digest))
}

/// A reader that writes a copy of what it yields.
struct Copying<R, W> {
    reader: R,
    copy: W,
    copied: u64,
}

impl<R: Read, W: Write> Read for Copying<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.copied += n as u64;
        Ok(n)
    }
}

/// The error for a staged layer that could not be unpacked: that its content does not
/// match its name when it does not (the usual cause: a damaged copy), else `error`.
fn mismatch_or(
    error: StoreError,
    layout: &Layout,
    digest: &Digest,
    staged: &Path,
) -> TransferError {
    match File::open(staged).and_then(Digest::of_reader) {
        Ok((actual, size)) if actual != *digest => Error::Mismatch {
            location: layout.location(),
            digest: digest.oci(),
            actual: actual.oci(),
            size,
        }
        .into(),
        _ => error.into(),
    }
}
