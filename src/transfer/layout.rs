//! OCI image layouts outside the store: a directory (`oci:DIR[:TAG]`) or a tar of one
//! (`oci-archive:FILE[:TAG]`) — how environments cross an air gap, and the form skopeo,
//! oras and crane read and write.
//!
//! Reading ([`Layout`], [`import`]) trusts nothing in the files: every blob copied into
//! the store is checked against its name while it streams (unless the caller trusts
//! the source), an archive may only hold plain files and directories (no `..`, no
//! absolute names, no links), and a truncated archive is noticed before anything is
//! committed. Blobs are staged in the store's scratch area and committed only once all
//! of them are in; tags come last. Writing ([`export`]) streams blobs as they are —
//! already compressed, so never recompressed — to a temporary name that is renamed
//! into place, so nobody sees half an archive; a directory's `index.json` is replaced
//! last.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::pull::{check_envoci, choose_platform, is_index};
use super::push::{index_document, IndexEntry, MANIFEST_MEDIA_TYPE};
use super::Report;
use crate::catalog::{self, CATALOG_MEDIA_TYPE};
use crate::digest::{Digest, HashingWriter};
use crate::fsutil::write_atomic;
use crate::store::Error as StoreError;
use crate::store::{self, Store, ANNOTATION_PLATFORM, ANNOTATION_REF_NAME};

/// Annotation of an incremental bundle's `index.json`: the base it leaves out
/// (`name@sha256:...`), named when an import lacks the base's blobs.
pub const ANNOTATION_SINCE: &str = "io.envoci.since";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Why reading or writing a layout failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or file is not an OCI image layout.
    #[error("{location} is not an OCI image layout: {reason}")]
    NotLayout {
        /// The layout's path.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// `index.json` does not parse or names nothing usable.
    #[error("{location}: index.json is not valid: {reason}")]
    BadIndex {
        /// The layout's path.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The tag asked for is not in the layout.
    #[error("{location} has no `{tag}` (tags present: {present})")]
    NoSuchTag {
        /// The layout's path.
        location: String,
        /// The tag.
        tag: String,
        /// The tags it has.
        present: String,
    },
    /// No tag given for an artifact to write, and it has none of its own.
    #[error("{location}: `{local}` has no tag to take along; name one as `…:TAG`")]
    NoTag {
        /// The layout's location.
        location: String,
        /// The artifact (a digest, or a name that is no valid tag).
        local: String,
    },
    /// No tag given, and the layout holds several artifacts.
    #[error("{location} holds several environments ({present}): name one as `…:TAG`")]
    Ambiguous {
        /// The layout's path.
        location: String,
        /// The tags it has.
        present: String,
    },
    /// A blob a manifest needs is neither in the layout nor in the store.
    #[error("{location} lacks blob {digest} and the store does not have it either{}", match base {
        Some(base) => format!(": this is an incremental bundle made on top of `{base}`; import or pull that first"),
        None => String::new(),
    })]
    MissingBlob {
        /// The layout's path.
        location: String,
        /// The blob.
        digest: String,
        /// The base an incremental bundle was made against.
        base: Option<String>,
    },
    /// A blob whose content does not match its name.
    #[error("blob {digest} in {location} does not match its name (its content is {actual}, {size} bytes); nothing was imported")]
    Mismatch {
        /// The layout's path.
        location: String,
        /// The blob's name.
        digest: String,
        /// What the content hashes to.
        actual: String,
        /// How many bytes it has.
        size: u64,
    },
    /// An archive entry that could write outside the layout, or a kind of entry a
    /// layout never has.
    #[error("{location}: refusing entry `{entry}`: {reason}; nothing was imported")]
    UnsafeEntry {
        /// The archive.
        location: String,
        /// The entry's name.
        entry: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The archive ends before its entries do.
    #[error("{location} is truncated or damaged: {reason}; nothing was imported")]
    Truncated {
        /// The archive.
        location: String,
        /// What was found.
        reason: String,
    },
    /// A file operation failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A layout entry being read.
type Entry = Box<dyn Read + Send>;

/// Where an archive entry's data lies in the file.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    offset: u64,
    size: u64,
}

/// An OCI image layout being read: a directory, or a tar archive indexed once (entry
/// headers only; data is read in place when needed).
pub enum Layout {
    /// A layout directory.
    Dir {
        /// Its root.
        root: PathBuf,
    },
    /// A tar archive of a layout.
    Archive {
        /// The file.
        path: PathBuf,
        /// Entry name → where its data is.
        entries: HashMap<String, Span>,
    },
}

impl Layout {
    /// Opens a layout of either form.
    pub fn open(path: &Path, form: Form) -> Result<Self, Error> {
        match form {
            Form::Dir => Self::open_dir(path),
            Form::Archive => Self::open_archive(path),
        }
    }

    /// Opens a layout directory; it must have `oci-layout` and `index.json`.
    pub fn open_dir(root: &Path) -> Result<Self, Error> {
        let meta = fs::metadata(root).map_err(|e| Error::NotLayout {
            location: root.display().to_string(),
            reason: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(Error::NotLayout {
                location: root.display().to_string(),
                reason: "not a directory (an archive is named oci-archive:FILE)".into(),
            });
        }
        let layout = Layout::Dir {
            root: root.to_path_buf(),
        };
        layout.check_marker()?;
        Ok(layout)
    }

    /// Opens a tar archive of a layout, reading every entry header once: entries must
    /// be plain files or directories with relative names inside the layout, and every
    /// entry's data must be within the file.
    pub fn open_archive(path: &Path) -> Result<Self, Error> {
        let location = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::NotLayout {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        let len = file.metadata().map_err(StoreError::io("read", path))?.len();
        let mut archive = tar::Archive::new(file);
        let damaged = |e: io::Error| Error::Truncated {
            location: location.clone(),
            reason: e.to_string(),
        };
        let mut entries = HashMap::new();
        for entry in archive.entries_with_seek().map_err(damaged)? {
            let entry = entry.map_err(damaged)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let unsafe_entry = |reason| Error::UnsafeEntry {
                location: location.clone(),
                entry: raw.clone(),
                reason,
            };
            if raw.starts_with('/') {
                return Err(unsafe_entry("an absolute name"));
            }
            let parts: Vec<&str> = raw
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect();
            if parts.contains(&"..") {
                return Err(unsafe_entry("a name with `..`"));
            }
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                return Err(unsafe_entry("an OCI layout holds no links"));
            }
            if !kind.is_file() {
                return Err(unsafe_entry("not a plain file"));
            }
            let span = Span {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            if span.offset + span.size > len {
                return Err(Error::Truncated {
                    location,
                    reason: format!(
                        "entry `{raw}` needs {} bytes, the file ends after {}",
                        span.size,
                        len.saturating_sub(span.offset)
                    ),
                });
            }
            entries.insert(parts.join("/"), span);
        }
        let layout = Layout::Archive {
            path: path.to_path_buf(),
            entries,
        };
        layout.check_marker()?;
        Ok(layout)
    }

    /// The layout's path, for messages.
    pub fn location(&self) -> String {
        match self {
            Layout::Dir { root } => root.display().to_string(),
            Layout::Archive { path, .. } => path.display().to_string(),
        }
    }

    fn check_marker(&self) -> Result<(), Error> {
        let not_layout = |reason: String| Error::NotLayout {
            location: self.location(),
            reason,
        };
        let marker = self
            .read_file("oci-layout")?
            .ok_or_else(|| not_layout("it has no `oci-layout` file".into()))?;
        let value: serde_json::Value = serde_json::from_slice(&marker)
            .map_err(|e| not_layout(format!("`oci-layout` is not JSON: {e}")))?;
        if value["imageLayoutVersion"].as_str().is_none() {
            return Err(not_layout("`oci-layout` has no imageLayoutVersion".into()));
        }
        if !self.has("index.json") {
            return Err(not_layout("it has no `index.json`".into()));
        }
        Ok(())
    }

    /// Opens entry `name` (a path inside the layout); `None` if it is not there. In a
    /// directory, a link is refused rather than followed.
    fn open_entry(&self, name: &str) -> Result<Option<(Entry, u64)>, Error> {
        match self {
            Layout::Dir { root } => {
                let path = root.join(name);
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(StoreError::io("read", path)(e).into()),
                };
                if !meta.is_file() {
                    return Err(Error::UnsafeEntry {
                        location: self.location(),
                        entry: name.into(),
                        reason: "not a plain file (links are not followed)",
                    });
                }
                let file = File::open(&path).map_err(StoreError::io("open", &path))?;
                Ok(Some((Box::new(file), meta.len())))
            }
            Layout::Archive { path, entries } => {
                let Some(span) = entries.get(name) else {
                    return Ok(None);
                };
                let mut file = File::open(path).map_err(StoreError::io("open", path))?;
                file.seek(SeekFrom::Start(span.offset))
                    .map_err(StoreError::io("read", path))?;
                Ok(Some((Box::new(file.take(span.size)), span.size)))
            }
        }
    }

    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some((mut reader, size)) = self.open_entry(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(size.min(1 << 22) as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("read", self.location()))?;
        Ok(Some(bytes))
    }

    fn blob_name(digest: &Digest) -> String {
        format!("blobs/sha256/{}", digest.hex())
    }

    /// Whether the layout has entry `name` (a plain file).
    fn has(&self, name: &str) -> bool {
        match self {
            Layout::Dir { root } => {
                fs::symlink_metadata(root.join(name)).is_ok_and(|m| m.is_file())
            }
            Layout::Archive { entries, .. } => entries.contains_key(name),
        }
    }

    /// Whether the layout has blob `digest`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.has(&Self::blob_name(digest))
    }

    /// Reads a small blob (a manifest) and checks it against its name.
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let bytes =
            self.read_file(&Self::blob_name(digest))?
                .ok_or_else(|| Error::MissingBlob {
                    location: self.location(),
                    digest: digest.oci(),
                    base: None,
                })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::Mismatch {
                location: self.location(),
                digest: digest.oci(),
                actual: actual.oci(),
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// The parsed `index.json`.
    fn index(&self) -> Result<serde_json::Value, Error> {
        let bad = |reason: String| Error::BadIndex {
            location: self.location(),
            reason,
        };
        let bytes = self
            .read_file("index.json")?
            .ok_or_else(|| bad("missing".into()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if !value["manifests"].is_array() {
            return Err(bad("it has no `manifests` list".into()));
        }
        Ok(value)
    }
}

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
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions<'a> {
    /// Hash the catalog blob as it is copied (off only for a trusted source); layers
    /// are checked regardless, by the extraction that reads them.
    pub verify: bool,
    /// The platform to take from a multi-platform index [default: this machine's].
    pub platform: Option<&'a str>,
}

/// Copies the selected artifacts of `layout` into `store`: only blobs the store lacks,
/// each verified while it streams into scratch; all are committed (and layers
/// extracted into the file CAS) only once every one is in, then the tags are set.
pub fn import(
    store: &Store,
    layout: &Layout,
    select: Select<'_>,
    options: ImportOptions<'_>,
) -> Result<(Report, Vec<Imported>), super::Error> {
    let location = layout.location();
    let index = layout.index()?;
    let bad_index = |reason: String| Error::BadIndex {
        location: location.clone(),
        reason,
    };
    let since = index["annotations"][ANNOTATION_SINCE]
        .as_str()
        .map(str::to_string);
    // (name, manifest digest) of every tagged entry.
    let mut tagged = Vec::new();
    let mut untagged = 0;
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let digest = entry["digest"]
            .as_str()
            .and_then(|d| Digest::parse(d).ok())
            .ok_or_else(|| bad_index(format!("an entry has no sha256 digest: {entry}")))?;
        match entry["annotations"][ANNOTATION_REF_NAME].as_str() {
            Some(name) => tagged.push((name.to_string(), digest)),
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
    let chosen: Vec<(String, Digest)> = match select {
        Select::One(Some(tag)) => {
            let found: Vec<_> = tagged.iter().filter(|(n, _)| n == tag).cloned().collect();
            if found.is_empty() {
                return Err(Error::NoSuchTag {
                    location,
                    tag: tag.into(),
                    present: present(),
                }
                .into());
            }
            found
        }
        Select::All | Select::One(None) if tagged.is_empty() => {
            return Err(
                bad_index(format!("it names no tagged artifact ({untagged} untagged)")).into(),
            )
        }
        Select::One(None) if tagged.len() == 1 => tagged.clone(),
        Select::One(None) => {
            return Err(Error::Ambiguous {
                location,
                present: present(),
            }
            .into())
        }
        Select::All => tagged.clone(),
    };

    // Manifests first (small; always verified): what each artifact needs.
    let mut manifests = Vec::new();
    for (name, digest) in chosen {
        let reference = format!("{location}:{name}");
        let mut bytes = layout.read_blob(&digest)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad_index(format!("manifest {digest} is not JSON: {e}")))?;
        if is_index(&value) {
            let chosen = choose_platform(&value, options.platform, &reference)?;
            let digest = Digest::parse(&chosen)
                .map_err(|e| bad_index(format!("index entry {chosen}: {e}")))?;
            bytes = layout.read_blob(&digest)?;
        }
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad_index(format!("manifest of `{name}`: {e}")))?;
        check_envoci(&manifest, &reference)?;
        manifests.push((name, bytes, manifest));
    }
    let mut needed: BTreeMap<Digest, (u64, String)> = BTreeMap::new();
    for (_, _, manifest) in &manifests {
        let config = manifest.config();
        for d in std::iter::once(config).chain(manifest.layers()) {
            let digest = store::from_oci_digest(d.digest())
                .ok_or_else(|| bad_index(format!("unsupported digest {}", d.digest())))?;
            needed.insert(digest, (d.size(), d.media_type().to_string()));
        }
    }
    let mut report = Report {
        reference: location.clone(),
        ..Report::default()
    };
    let mut missing = Vec::new();
    for (digest, (size, media)) in needed {
        if store.has_blob(&digest) {
            report.blobs_skipped += 1;
            report.bytes_skipped += size;
        } else if layout.has_blob(&digest) {
            missing.push((digest, size, media));
        } else {
            return Err(Error::MissingBlob {
                location,
                digest: digest.oci(),
                base: since,
            }
            .into());
        }
    }

    // Stage every missing blob, then commit them all. The catalog is hashed as it is
    // copied (unless the source is trusted); a layer is unpacked into the file CAS from
    // its staged copy, and that one pass hashes it too — so a layer is checked whatever
    // the option, before anything is committed.
    let scratch = store.scratch()?;
    let staged: Vec<(Digest, u64, tempfile::TempPath)> = missing
        .par_iter()
        .map(|(digest, size, media)| {
            let layer = media != CATALOG_MEDIA_TYPE;
            let path = stage_blob(&scratch, layout, digest, *size, options.verify && !layer)?;
            if layer {
                let file = File::open(&path).map_err(StoreError::io("read", &*path))?;
                if let Err(e) = store.extract_layer_from(&scratch, file, digest, media, false) {
                    return Err(mismatch_or(e, layout, digest, &path));
                }
            }
            Ok((*digest, *size, path))
        })
        .collect::<Result<_, super::Error>>()?;
    for (digest, size, path) in &staged {
        store.commit_file(path, digest)?;
        report.blobs_transferred += 1;
        report.bytes_transferred += size;
    }
    let mut imported = Vec::new();
    for (name, bytes, _) in manifests {
        let (digest, size) = store.put_blob(&scratch, &bytes)?;
        let descriptor = catalog::manifest_descriptor(&digest, size);
        store.set_ref(&name, &descriptor)?;
        report.digest = digest.oci();
        imported.push(Imported {
            name,
            digest: digest.oci(),
        });
    }
    Ok((report, imported))
}

/// Copies one blob from the layout into a scratch file, hashing as it goes (unless
/// `verify` is off); the file is deleted if anything is wrong or when dropped.
fn stage_blob(
    scratch: &store::Scratch,
    layout: &Layout,
    digest: &Digest,
    size: u64,
    verify: bool,
) -> Result<tempfile::TempPath, super::Error> {
    let location = layout.location();
    let (mut reader, _) = layout
        .open_entry(&Layout::blob_name(digest))?
        .ok_or_else(|| Error::MissingBlob {
            location: location.clone(),
            digest: digest.oci(),
            base: None,
        })?;
    let tmp = scratch.temp_file()?;
    let (file, path) = tmp.into_parts();
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let (actual, copied) = if verify {
        let mut hashing = HashingWriter::new(&mut writer);
        io::copy(&mut reader, &mut hashing)
            .map_err(StoreError::io("copy a blob from", &location))?;
        let (actual, copied, _) = hashing.finish();
        (Some(actual), copied)
    } else {
        let copied = io::copy(&mut reader, &mut writer)
            .map_err(StoreError::io("copy a blob from", &location))?;
        (None, copied)
    };
    writer
        .into_inner()
        .map_err(|e| StoreError::io("write", scratch.dir())(e.into_error()))?;
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

/// The error for a staged layer that could not be unpacked: that its content does not
/// match its name when it does not (the usual cause: a damaged copy), else `error`.
fn mismatch_or(error: StoreError, layout: &Layout, digest: &Digest, staged: &Path) -> super::Error {
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

/// The form of a layout to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// A directory (merged with what is there).
    Dir,
    /// A tar archive (replaced whole).
    Archive,
}

impl Form {
    /// An archive when the path names a `.tar` file or an existing file; else a
    /// directory.
    pub fn guess(path: &Path) -> Form {
        if path.extension().is_some_and(|e| e == "tar") || path.is_file() {
            Form::Archive
        } else {
            Form::Dir
        }
    }
}

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
) -> Result<Report, super::Error> {
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    // Per tag, in the order given: each platform's manifest.
    let mut tags: Vec<(String, Vec<IndexEntry>)> = Vec::new();
    for item in artifacts {
        store::validate_tag(&item.name).map_err(|e| Error::BadIndex {
            location: dest.display().to_string(),
            reason: e.to_string(),
        })?;
        let artifact = catalog::load(store, &item.local)?;
        // `load` has read and checked the manifest: only its size is wanted here.
        let path = store.blob_path(&artifact.digest);
        let manifest_size = fs::metadata(&path)
            .map_err(StoreError::io("read", &path))?
            .len();
        blobs.insert(artifact.digest, manifest_size);
        blobs.extend(artifact.blobs());
        let entry = IndexEntry {
            digest: artifact.digest,
            size: manifest_size,
            platform: artifact.catalog.platform.clone(),
        };
        match tags.iter_mut().find(|(name, _)| *name == item.name) {
            Some((_, platforms)) if platforms.iter().any(|p| p.platform == entry.platform) => {
                return Err(Error::BadIndex {
                    location: dest.display().to_string(),
                    reason: format!(
                        "two {} environments would share the tag `{}`",
                        entry.platform, item.name
                    ),
                }
                .into())
            }
            Some((_, platforms)) => platforms.push(entry),
            None => tags.push((item.name.clone(), vec![entry])),
        }
    }
    let mut entries = Vec::new();
    for (name, platforms) in tags {
        if let [only] = platforms.as_slice() {
            entries.push(serde_json::json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "artifactType": catalog::ARTIFACT_TYPE,
                "digest": only.digest.oci(),
                "size": only.size,
                "annotations": {
                    ANNOTATION_REF_NAME: name,
                    ANNOTATION_PLATFORM: only.platform,
                },
            }));
            continue;
        }
        // Several platforms under one tag: an image index, kept in the store as a blob
        // like the manifests it names.
        let bytes = index_document(platforms).map_err(|e| Error::BadIndex {
            location: dest.display().to_string(),
            reason: e.to_string(),
        })?;
        let (digest, size) = store.put_blob(&store.scratch()?, &bytes)?;
        blobs.insert(digest, size);
        entries.push(serde_json::json!({
            "mediaType": super::push::INDEX_MEDIA_TYPE,
            "artifactType": catalog::ARTIFACT_TYPE,
            "digest": digest.oci(),
            "size": size,
            "annotations": { ANNOTATION_REF_NAME: name },
        }));
    }
    let mut report = Report {
        reference: dest.display().to_string(),
        ..Report::default()
    };
    let mut annotations = serde_json::Map::new();
    if let Some(base) = since {
        let artifact = catalog::load(store, base)?;
        blobs.remove(&artifact.digest);
        for (digest, size) in artifact.blobs() {
            if blobs.remove(&digest).is_some() {
                report.blobs_skipped += 1;
                report.bytes_skipped += size;
            }
        }
        annotations.insert(
            ANNOTATION_SINCE.into(),
            format!("{base}@{}", artifact.digest.oci()).into(),
        );
    }
    if let Some(last) = entries.last() {
        report.digest = last["digest"].as_str().unwrap_or_default().to_string();
    }
    let contents = Contents {
        blobs,
        entries,
        annotations,
    };
    match form {
        Form::Archive => write_archive(store, dest, contents, &mut report)?,
        Form::Dir => write_dir(store, dest, contents, &mut report)?,
    }
    Ok(report)
}

/// What an export writes: blobs from the store, `index.json` entries and annotations.
struct Contents {
    blobs: BTreeMap<Digest, u64>,
    entries: Vec<serde_json::Value>,
    annotations: serde_json::Map<String, serde_json::Value>,
}

fn index_json(
    manifests: Vec<serde_json::Value>,
    annotations: serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u8>, Error> {
    let mut index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": super::push::INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    if !annotations.is_empty() {
        index["annotations"] = annotations.into();
    }
    crate::json::to_canonical_vec(&index).map_err(|e| Error::BadIndex {
        location: "index.json".into(),
        reason: e.to_string(),
    })
}

fn write_archive(
    store: &Store,
    dest: &Path,
    Contents {
        blobs,
        entries,
        annotations,
    }: Contents,
    report: &mut Report,
) -> Result<(), super::Error> {
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
    }: Contents,
    report: &mut Report,
) -> Result<(), super::Error> {
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
        let ours: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["annotations"][ANNOTATION_REF_NAME].as_str())
            .collect();
        manifests = layout.index()?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        manifests.retain(|m| {
            m["annotations"][ANNOTATION_REF_NAME]
                .as_str()
                .is_none_or(|n| !ours.contains(&n))
        });
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
            if target.is_file() {
                return Ok(None);
            }
            let tmp = blob_dir.join(format!(".tmp-{}-{}", digest.hex(), store::rand_u64()));
            let copied = reflink_copy::reflink_or_copy(store.blob_path(digest), &tmp)
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| fs::rename(&tmp, &target));
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::io("write", target)(e));
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
