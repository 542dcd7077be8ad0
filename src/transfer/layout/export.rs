//! Export: store artifacts written as an OCI layout — a tar archive written to a
//! temporary name and renamed into place, or a directory merged with what it holds,
//! its `index.json` replaced last. Blobs go as they are (already compressed).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use rayon::prelude::*;

use super::{Error, Form, Layout, ANNOTATION_SINCE, OCI_LAYOUT};
use crate::artifact::{self, IndexEntry};
use crate::digest::Digest;
use crate::fsutil::write_atomic;
use crate::store::Error as StoreError;
use crate::store::{self, Store, ANNOTATION_PLATFORM, ANNOTATION_REF_NAME};
use crate::transfer::{Error as TransferError, Report};

/// One artifact to export: a store reference, and the tag it gets in the layout.
#[derive(Clone, Debug)]
pub struct Export {
    /// A tag or manifest digest in the store.
    pub local: String,
    /// Its tag in the layout.
    pub name: String,
}

/// Writes `artifacts` from the store as an OCI layout at `dest`, each blob once even
/// when several artifacts share it; blobs of `since` (a store reference) are left out,
/// making an incremental bundle for a site that has that base.
pub fn export(
    store: &Store,
    artifacts: &[Export],
    since: Option<&str>,
    dest: &Path,
    form: Form,
    progress: &crate::progress::Reporter,
) -> Result<Report, TransferError> {
    let bad = |reason: String| Error::BadIndex {
        location: dest.display().to_string(),
        reason,
    };
    let (tags, mut blobs) = gather(store, artifacts).map_err(|e| match e {
        Gathered::Bad(reason) => bad(reason).into(),
        Gathered::Other(e) => e,
    })?;
    let mut entries = Vec::new();
    for (name, platforms) in tags {
        let (descriptor, index_blob) = tag_entry(store, name, platforms)?;
        blobs.extend(index_blob);
        entries.push(descriptor);
    }
    let mut report = Report {
        reference: dest.display().to_string(),
        ..Report::default()
    };
    let mut annotations = HashMap::new();
    if let Some(base) = since {
        let artifact = artifact::load(store, base)?;
        blobs.remove(&artifact.digest);
        for (digest, size) in artifact.blobs() {
            if blobs.remove(&digest).is_some() {
                report.blobs_skipped += 1;
                report.bytes_skipped += size;
            }
        }
        annotations.insert(
            ANNOTATION_SINCE.to_string(),
            format!("{base}@{}", artifact.digest.oci()),
        );
    }
    if let Some(last) = entries.last() {
        report.digest = last.digest().to_string();
    }
    let total = crate::sum_sizes(blobs.values());
    progress.begin("exporting", total, crate::progress::Unit::Bytes);
    let contents = Contents {
        blobs,
        entries,
        annotations,
        progress: progress.clone(),
    };
    match form {
        Form::Archive => write_archive(store, dest, contents, &mut report)?,
        Form::Dir => write_dir(store, dest, contents, &mut report)?,
    }
    progress.end();
    Ok(report)
}

/// Why gathering the artifacts failed: a problem with what was asked for, or another.
enum Gathered {
    Bad(String),
    Other(TransferError),
}

impl<E: Into<TransferError>> From<E> for Gathered {
    fn from(e: E) -> Self {
        Gathered::Other(e.into())
    }
}

/// Per tag, in the order given, each platform's manifest; and every blob they need.
#[allow(clippy::type_complexity)]
fn gather(
    store: &Store,
    artifacts: &[Export],
) -> Result<(Vec<(String, Vec<IndexEntry>)>, BTreeMap<Digest, u64>), Gathered> {
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut tags: Vec<(String, Vec<IndexEntry>)> = Vec::new();
    for item in artifacts {
        store::validate_tag(&item.name).map_err(|e| Gathered::Bad(e.to_string()))?;
        let artifact = artifact::load(store, &item.local)?;
        // `load` has read and checked the manifest: only its size is wanted here.
        let manifest_size = store.blob_size(&artifact.digest)?;
        blobs.insert(artifact.digest, manifest_size);
        blobs.extend(artifact.blobs());
        let entry = IndexEntry {
            digest: artifact.digest,
            size: manifest_size,
            platform: artifact.catalog.platform.clone(),
        };
        match tags.iter_mut().find(|(name, _)| *name == item.name) {
            Some((_, platforms)) if platforms.iter().any(|p| p.platform == entry.platform) => {
                return Err(Gathered::Bad(format!(
                    "two {} environments would share the tag `{}`",
                    entry.platform, item.name
                )))
            }
            Some((_, platforms)) => platforms.push(entry),
            None => tags.push((item.name.clone(), vec![entry])),
        }
    }
    Ok((tags, blobs))
}

/// The `index.json` entry for one tag: its manifest, or — several platforms under one
/// tag — an image index, kept in the store as a blob like the manifests it names (and
/// returned, to be written with them).
fn tag_entry(
    store: &Store,
    name: String,
    platforms: Vec<IndexEntry>,
) -> Result<(Descriptor, Option<(Digest, u64)>), TransferError> {
    if let [only] = platforms.as_slice() {
        let mut descriptor = artifact::manifest_descriptor(&only.digest, only.size);
        descriptor.set_annotations(Some(HashMap::from([
            (ANNOTATION_REF_NAME.to_string(), name),
            (ANNOTATION_PLATFORM.to_string(), only.platform.clone()),
        ])));
        return Ok((descriptor, None));
    }
    let bytes = artifact::index_document(platforms).map_err(|e| Error::BadIndex {
        location: name.clone(),
        reason: e.to_string(),
    })?;
    let (digest, size) = store.put_blob(&store.scratch()?, &bytes)?;
    let mut descriptor = Descriptor::new(MediaType::ImageIndex, size, store::oci_digest(&digest));
    descriptor.set_artifact_type(Some(MediaType::Other(artifact::ARTIFACT_TYPE.into())));
    descriptor.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        name,
    )])));
    Ok((descriptor, Some((digest, size))))
}

/// What an export writes: blobs from the store, `index.json` entries and annotations.
struct Contents {
    blobs: BTreeMap<Digest, u64>,
    entries: Vec<Descriptor>,
    annotations: HashMap<String, String>,
    progress: crate::progress::Reporter,
}

/// A layout's `index.json`, canonical JSON.
fn index_json(
    manifests: Vec<Descriptor>,
    annotations: HashMap<String, String>,
) -> Result<Vec<u8>, Error> {
    let mut index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("schema version and manifests make a complete index");
    if !annotations.is_empty() {
        index.set_annotations(Some(annotations));
    }
    crate::json::to_canonical_vec(&index).map_err(|e| Error::BadIndex {
        location: "index.json".into(),
        reason: e.to_string(),
    })
}

/// The tag an `index.json` entry carries.
fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

fn write_archive(
    store: &Store,
    dest: &Path,
    Contents {
        blobs,
        entries,
        annotations,
        progress,
    }: Contents,
    report: &mut Report,
) -> Result<(), TransferError> {
    let dir = crate::fsutil::parent_of(dest);
    let tmp = tempfile::Builder::new()
        .prefix(".envoci-export-")
        .tempfile_in(dir)
        .map_err(StoreError::io("create a file in", dir))?;
    let failed = StoreError::io("write", tmp.path().to_path_buf());
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp));
    let header = |size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(kind);
        h
    };
    let result = (|| -> io::Result<()> {
        let index = index_json(entries, annotations).map_err(io::Error::other)?;
        for (name, bytes) in [("oci-layout", OCI_LAYOUT), ("index.json", &index[..])] {
            let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
            tar.append_data(&mut h, name, bytes)?;
        }
        for name in ["blobs/", "blobs/sha256/"] {
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            tar.append_data(&mut h, name, io::empty())?;
        }
        for (digest, size) in &blobs {
            let file = store.open_blob(digest).map_err(io::Error::other)?;
            let mut h = header(*size, 0o644, tar::EntryType::Regular);
            tar.append_data(&mut h, Layout::blob_name(digest), file.take(*size))?;
            progress.advance(*size);
            report.blobs_transferred += 1;
            report.bytes_transferred += size;
        }
        Ok(())
    })();
    result.map_err(StoreError::io("write", dest))?;
    let tmp = tar
        .into_inner()
        .map_err(StoreError::io("write", dest))?
        .into_inner()
        .map_err(|e| failed(e.into_error()))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(StoreError::io("set permissions on", dest))?;
    tmp.as_file()
        .sync_all()
        .map_err(StoreError::io("sync", dest))?;
    tmp.persist(dest)
        .map_err(|e| StoreError::io("write", dest)(e.error))?;
    Ok(())
}

fn write_dir(
    store: &Store,
    dest: &Path,
    Contents {
        blobs,
        entries,
        annotations,
        progress,
    }: Contents,
    report: &mut Report,
) -> Result<(), TransferError> {
    let location = dest.display().to_string();
    let existing = match fs::read_dir(dest) {
        Ok(mut d) => d.next().is_some(),
        Err(_) => false,
    };
    let mut manifests = Vec::new();
    if existing {
        let layout = Layout::open_dir(dest).map_err(|e| Error::NotLayout {
            location: location.clone(),
            reason: format!("it exists and is not empty, and it is not a layout either ({e}); refusing to write into it"),
        })?;
        let ours: Vec<&str> = entries.iter().filter_map(ref_name).collect();
        manifests = layout.index()?.manifests().clone();
        manifests.retain(|m| ref_name(m).is_none_or(|n| !ours.contains(&n)));
    }
    let blob_dir = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(StoreError::io("create directory", &blob_dir))?;
    let marker = dest.join("oci-layout");
    if !marker.exists() {
        write_atomic(&marker, OCI_LAYOUT).map_err(StoreError::io("write", &marker))?;
    }
    let outcomes: Vec<Option<u64>> = blobs
        .par_iter()
        .map(|(digest, size)| {
            let target = blob_dir.join(digest.hex());
            progress.advance(*size);
            if target.is_file() {
                return Ok(None);
            }
            let tmp = blob_dir.join(format!(".tmp-{}-{}", digest.hex(), store::rand_u64()));
            let copied = store.copy_blob_to(digest, &tmp).and_then(|()| {
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| fs::rename(&tmp, &target))
                    .map_err(StoreError::io("write", &target))
            });
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            Ok(Some(*size))
        })
        .collect::<Result<_, StoreError>>()?;
    for outcome in outcomes {
        match outcome {
            Some(size) => {
                report.blobs_transferred += 1;
                report.bytes_transferred += size;
            }
            None => report.blobs_skipped += 1,
        }
    }
    manifests.extend(entries);
    let index = index_json(manifests, annotations)?;
    let path = dest.join("index.json");
    write_atomic(&path, &index).map_err(StoreError::io("write", &path))?;
    Ok(())
}
