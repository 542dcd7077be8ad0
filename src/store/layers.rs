//! Per-layer indexes: the list of paths a layer holds, with each file's CAS key. Written
//! when a layer is created (ingest) or extracted (pull, import, repair); restore reads
//! only these and the CAS, never the layer blob, unless something is missing.
//!
//! Extraction is where a layer from elsewhere becomes trusted, and only once its blob
//! digest, its diff id (the uncompressed tar's digest) and its uncompressed size all
//! match the catalog: reading stops at the catalog's size, and the files are staged in
//! scratch and moved into the file CAS only after every check passed. A layer that
//! fails leaves nothing behind.

use std::fs;
use std::io::{self, BufReader};

use serde::{Deserialize, Serialize};

use super::unpack::Visitor;
use super::{CasKey, Error, Result, Scratch, Store};
use crate::catalog::CatalogLayer;
use crate::digest::Digest;
use crate::layer::{self, Compression, Entry, EntryKind, LayerDigests, ReadError};

/// The index of one layer blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerIndex {
    /// The layer blob's digest.
    pub digest: Digest,
    /// The digest of the uncompressed tar, as checked when the index was written
    /// (absent from indexes written before it was checked: those are rebuilt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The size of the uncompressed tar, as checked with `diff_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Every path in the layer, sorted.
    pub entries: Vec<Entry>,
}

impl LayerIndex {
    /// Whether this index was checked to be the content `layer` describes: blob digest,
    /// diff id and uncompressed size.
    pub fn is_of(&self, layer: &CatalogLayer) -> bool {
        self.digest == layer.digest
            && self.diff_id == Some(layer.diff_id)
            && self.size == Some(layer.size)
    }

    /// CAS keys and sizes of every file of the layer.
    pub fn files(&self) -> impl Iterator<Item = (CasKey, u64)> + '_ {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File { digest, size, exec } => Some((
                CasKey {
                    digest: *digest,
                    exec: *exec,
                },
                *size,
            )),
            _ => None,
        })
    }
}

/// A layer unpacked and checked, its files staged: nothing of it is in the store until
/// [`Store::commit_layer`]; dropped, its files are deleted.
#[derive(Debug)]
pub struct StagedLayer {
    index: LayerIndex,
    files: Vec<super::cas::Staged>,
}

/// What the layer cache remembers of a layer built from some content.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnownLayer {
    digest: Digest,
    size: u64,
    diff_id: Digest,
    uncompressed_size: u64,
}

/// The identity of a layer's content: its sorted entries and its compression.
fn content_key(entries: &[Entry], compression: Compression) -> Digest {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let doc = serde_json::json!({ "mediaType": compression.media_type(), "entries": sorted });
    Digest::of(&crate::json::to_canonical_vec(&doc).unwrap_or_default())
}

impl Store {
    fn known_layer_path(&self, key: &Digest) -> std::path::PathBuf {
        self.layers_dir()
            .join("by-content")
            .join(format!("{}.json", key.hex()))
    }

    /// The layer already written for exactly these entries, if its blob and index are
    /// still there (a repeated snapshot then hashes files and stops).
    pub fn known_layer(
        &self,
        entries: &[Entry],
        compression: Compression,
    ) -> Result<Option<LayerDigests>> {
        let path = self.known_layer_path(&content_key(entries, compression));
        let Ok(bytes) = fs::read(&path) else {
            return Ok(None);
        };
        let Ok(k) = serde_json::from_slice::<KnownLayer>(&bytes) else {
            return Ok(None);
        };
        let blob_ok = fs::metadata(self.blob_path(&k.digest)).is_ok_and(|m| m.len() == k.size);
        if !blob_ok || !matches!(self.layer_index(&k.digest), Ok(Some(_))) {
            return Ok(None);
        }
        Ok(Some(LayerDigests {
            digest: k.digest,
            size: k.size,
            diff_id: k.diff_id,
            uncompressed_size: k.uncompressed_size,
        }))
    }

    /// Records which layer `entries` produced.
    pub fn remember_layer(
        &self,
        entries: &[Entry],
        compression: Compression,
        d: &LayerDigests,
    ) -> Result<()> {
        let path = self.known_layer_path(&content_key(entries, compression));
        let known = KnownLayer {
            digest: d.digest,
            size: d.size,
            diff_id: d.diff_id,
            uncompressed_size: d.uncompressed_size,
        };
        super::write_rebuildable_json(&path, &known)
    }

    /// Reads the index of layer `digest`; `None` if it was never written. A damaged one
    /// (a power cut can leave it torn: see [`Store::write_layer_index`]) is
    /// [`Error::BadJson`]; whoever can, extracts the layer again, which rewrites it.
    pub fn layer_index(&self, digest: &Digest) -> Result<Option<LayerIndex>> {
        let path = self.layers_dir().join(format!("{}.json", digest.hex()));
        super::read_json(path)
    }

    /// Writes the index of a layer. Not flushed on its own (that cost two `fsync`s a
    /// layer, and environments have hundreds): like the CAS files it names, it is made
    /// durable by the sync before a tag references the layer, and one found damaged is
    /// made again from the layer's blob.
    pub fn write_layer_index(&self, index: &LayerIndex) -> Result<()> {
        let path = self
            .layers_dir()
            .join(format!("{}.json", index.digest.hex()));
        super::write_rebuildable_json(&path, index)
    }

    /// Writes the layer blob for `entries` (whose files are in the CAS) into the store,
    /// with its index and the record that lets the next snapshot of the same content
    /// skip all this. The inverse of [`Store::extract_layer`].
    pub fn write_layer(
        &self,
        scratch: &Scratch,
        entries: &[Entry],
        compression: Compression,
    ) -> Result<LayerDigests> {
        let blob = self.blob_writer(scratch)?;
        let (digests, blob) = layer::write_layer(entries, compression, blob, |entry| {
            let EntryKind::File { digest, exec, .. } = &entry.kind else {
                return Ok(Box::new(io::empty()));
            };
            let key = CasKey {
                digest: *digest,
                exec: *exec,
            };
            let file = fs::File::open(self.cas_path(&key))?;
            Ok(Box::new(BufReader::with_capacity(256 * 1024, file)))
        })
        .map_err(Error::io("read", self.files_dir()))?;
        let (digest, _) = blob.commit(Some((digests.digest, digests.size)))?;
        let mut sorted = entries.to_vec();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        self.write_layer_index(&LayerIndex {
            digest,
            diff_id: Some(digests.diff_id),
            size: Some(digests.uncompressed_size),
            entries: sorted,
        })?;
        self.remember_layer(entries, compression, &digests)?;
        Ok(digests)
    }

    /// Extracts the layer blob `layer` describes into the CAS (files it lacks, or, with
    /// `repair`, also those whose copy is damaged) and writes its index — only once the
    /// blob's digest, its diff id and its uncompressed size all match `layer`. Reading
    /// stops as soon as the uncompressed tar passes `layer.size`; until every check
    /// passed the files wait in `scratch`, so a layer that fails adds nothing to the CAS.
    pub fn extract_layer(
        &self,
        scratch: &Scratch,
        layer: &CatalogLayer,
        media_type: &str,
        repair: bool,
    ) -> Result<LayerIndex> {
        // A committed blob was checked against its digest when it was committed: only
        // its content is checked again (diff id and size), not its compressed bytes.
        let file = self.open_blob(&layer.digest)?;
        self.commit_layer(self.unpack(scratch, file, layer, media_type, repair, true)?)
    }

    /// Like [`Store::extract_layer`], reading the layer from `file` — a blob not
    /// committed yet (a file being imported, a download as it arrives), so that the one
    /// pass that unpacks it is also the one that checks it, blob digest included.
    pub fn extract_layer_from(
        &self,
        scratch: &Scratch,
        file: impl io::Read,
        layer: &CatalogLayer,
        media_type: &str,
        repair: bool,
    ) -> Result<LayerIndex> {
        self.commit_layer(self.unpack(scratch, file, layer, media_type, repair, false)?)
    }

    /// Unpacks a layer from `reader` — a download as it arrives — into staged files and
    /// checks its diff id and uncompressed size against `layer`, but not its blob
    /// digest: that is the caller's to check (the download hashes the same bytes)
    /// before it commits the result with [`Store::commit_layer`].
    pub fn stage_layer_from(
        &self,
        scratch: &Scratch,
        reader: impl io::Read,
        layer: &CatalogLayer,
        media_type: &str,
    ) -> Result<StagedLayer> {
        self.unpack(scratch, reader, layer, media_type, false, true)
    }

    /// Moves a checked layer's staged files into the CAS and writes its index.
    pub fn commit_layer(&self, layer: StagedLayer) -> Result<LayerIndex> {
        for file in layer.files {
            file.commit(self)?;
        }
        self.write_layer_index(&layer.index)?;
        Ok(layer.index)
    }

    /// Unpacks a layer into staged CAS files and checks it against the catalog's entry
    /// (its blob digest too unless `blob_checked`).
    fn unpack(
        &self,
        scratch: &Scratch,
        file: impl io::Read,
        layer: &CatalogLayer,
        media_type: &str,
        repair: bool,
        blob_checked: bool,
    ) -> Result<StagedLayer> {
        let digest = layer.digest;
        let compression = Compression::from_media_type(media_type).unwrap_or_default();
        let reader = BufReader::with_capacity(256 * 1024, file);
        let read_error = |source| match source {
            ReadError::TooLarge { limit } => Error::Corrupt {
                what: "layer",
                digest,
                expected: format!("{limit} bytes uncompressed"),
                actual: "more (extraction stopped there)".into(),
            },
            source => Error::BadLayer { digest, source },
        };
        let read = |visit: &mut Visitor<'_>| {
            if blob_checked {
                layer::read_layer_content(reader, compression, layer.size, visit)
                    .map(|(entries, content)| (entries, (None, content)))
                    .map_err(read_error)
            } else {
                let (entries, got) = layer::read_layer(reader, compression, layer.size, visit)
                    .map_err(read_error)?;
                let content = layer::ContentDigest {
                    diff_id: got.diff_id,
                    size: got.uncompressed_size,
                };
                Ok((entries, (Some(got.digest), content)))
            }
        };
        let (entries, (blob_digest, got), staged) =
            self.stage_layer(scratch, repair, layer.size, read)?;
        let corrupt = |expected: String, actual: String| Error::Corrupt {
            what: "layer",
            digest,
            expected,
            actual,
        };
        if let Some(actual) = blob_digest.filter(|d| *d != digest) {
            return Err(corrupt(digest.oci(), actual.oci()));
        }
        if got.diff_id != layer.diff_id {
            return Err(corrupt(
                format!("diffId {}", layer.diff_id.oci()),
                format!("diffId {}", got.diff_id.oci()),
            ));
        }
        if got.size != layer.size {
            return Err(corrupt(
                format!("{} bytes uncompressed", layer.size),
                format!("{} bytes", got.size),
            ));
        }
        let index = LayerIndex {
            digest,
            diff_id: Some(got.diff_id),
            size: Some(got.size),
            entries,
        };
        Ok(StagedLayer {
            index,
            files: staged,
        })
    }
}

impl Store {
    /// Removes the index of layer `digest`, if there is one (its blob is gone).
    pub fn remove_layer_index(&self, digest: &Digest) -> Result<()> {
        let path = self.layers_dir().join(format!("{}.json", digest.hex()));
        super::remove_file_if_there(&path)
    }
}
