//! Deterministic layer tarballs.
//!
//! A layer is a tar of one package's files, byte-identical wherever and whenever it is
//! written: entries sorted by path, mtime fixed to [`LAYER_MTIME`], uid/gid 0 without
//! names, modes normalised to 0644/0755 (0755 for directories), no xattrs, and one pinned
//! compression level. That is what lets registries and stores share a package's layer
//! between environments. Reading a layer never trusts it: paths are checked by
//! [`safe_path`], and [`read_layer`] stops as soon as the uncompressed stream passes the
//! size the catalog gives, and returns the digests the caller checks before it commits
//! anything the layer held.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader, HashingWriter};

/// The mtime of every file in every layer and every restored file: 2000-01-01T00:00:00Z.
pub const LAYER_MTIME: u64 = 946_684_800;

/// The size of a tar header's link-name field.
const LINK_NAME_FIELD: usize = 100;

/// The most an extension entry (a GNU long name or long link, a pax header) may hold.
/// Linux paths are at most 4 KiB; a bigger one is an attack on memory and is refused
/// unread (the tar crate would read it whole, up to the layer's size).
pub const EXTENSION_CAP: u64 = 64 << 10;

/// The zstd level every zstd layer is written with. Changing it changes every digest.
pub const ZSTD_LEVEL: i32 = 3;

/// The gzip level every gzip layer is written with.
pub const GZIP_LEVEL: u32 = 6;

/// How a layer blob is compressed; each has its own media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// `application/vnd.envoci.layer.v1.tar+zstd` (default).
    #[default]
    Zstd,
    /// `application/vnd.envoci.layer.v1.tar+gzip`.
    Gzip,
    /// `application/vnd.envoci.layer.v1.tar`.
    None,
}

impl Compression {
    /// The layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Zstd => "application/vnd.envoci.layer.v1.tar+zstd",
            Compression::Gzip => "application/vnd.envoci.layer.v1.tar+gzip",
            Compression::None => "application/vnd.envoci.layer.v1.tar",
        }
    }

    /// The compression a layer media type names, if it is one of envoci's (OCI image
    /// layer media types are accepted too, so layouts written by other tools read).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if media_type.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// What one path in a layer is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file whose content is in the file CAS under (`digest`, `exec`).
    File {
        /// Digest of the content as stored in the layer (placeholders, not a prefix).
        digest: Digest,
        /// Size in bytes.
        size: u64,
        /// Mode 0755 rather than 0644.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exec: bool,
    },
    /// A symbolic link, recreated as a link and never followed while writing.
    Symlink {
        /// The link target, byte for byte.
        target: LinkTarget,
    },
    /// An (otherwise empty) directory.
    Dir,
}

/// A symbolic link's target, byte for byte: a Unix link target is any bytes but NUL, and
/// a package may ship one that is not UTF-8. In JSON (the layer index, a space's state)
/// it is a plain string when it is UTF-8, else `{"hex": "<the bytes in hex>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkTarget(Vec<u8>);

impl LinkTarget {
    /// The target's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The target as an OS string (what `symlink(2)` takes).
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The target as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl From<Vec<u8>> for LinkTarget {
    fn from(bytes: Vec<u8>) -> Self {
        LinkTarget(bytes)
    }
}

impl From<String> for LinkTarget {
    fn from(s: String) -> Self {
        LinkTarget(s.into_bytes())
    }
}

impl From<&str> for LinkTarget {
    fn from(s: &str) -> Self {
        LinkTarget(s.as_bytes().to_vec())
    }
}

impl From<std::path::PathBuf> for LinkTarget {
    fn from(p: std::path::PathBuf) -> Self {
        LinkTarget(p.into_os_string().into_encoded_bytes())
    }
}

/// How a [`LinkTarget`] is written in JSON.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LinkTargetRepr<'a> {
    Text(std::borrow::Cow<'a, str>),
    Raw { hex: String },
}

impl Serialize for LinkTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_str() {
            Some(text) => LinkTargetRepr::Text(text.into()),
            None => LinkTargetRepr::Raw {
                hex: hex::encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for LinkTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match LinkTargetRepr::deserialize(d)? {
            LinkTargetRepr::Text(text) => Ok(LinkTarget(text.into_owned().into_bytes())),
            LinkTargetRepr::Raw { hex } => hex::decode(hex)
                .map(LinkTarget)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One path of a layer: the unit of the per-layer index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, validated by [`safe_path`].
    pub path: String,
    /// What is at the path.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// A path in a layer that could make a write land outside the space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe path `{path}` in layer: {reason}")]
pub struct UnsafePath {
    /// The offending path, as found.
    pub path: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// Validates and normalises a layer path: relative, no `..`, no empty or NUL component.
/// A leading `./` is dropped. Returns the normalised path.
pub fn safe_path(path: &str) -> Result<String, UnsafePath> {
    let bad = |reason| {
        Err(UnsafePath {
            path: path.to_string(),
            reason,
        })
    };
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\0') || path.contains('\\') {
        return bad("NUL or backslash in path");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return bad("`..` component"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return bad("empty path");
    }
    Ok(parts.join("/"))
}

/// Sizes and digests of a written layer: the blob's and the uncompressed tar's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDigests {
    /// Digest of the blob (compressed).
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar (the OCI "diff id").
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// Writes a deterministic layer entry by entry. Entries must come in strictly
/// increasing path order (checked), which is what makes the tar reproducible.
pub struct LayerWriter<W: Write> {
    tar: tar::Builder<HashingWriter<Encoder<W>>>,
    last_path: Option<String>,
}

/// The compression stage under the tar writer, hashing the blob below it.
enum Encoder<W: Write> {
    Zstd(zstd::Encoder<'static, HashingWriter<W>>),
    Gzip(flate2::write::GzEncoder<HashingWriter<W>>),
    None(HashingWriter<W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::None(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::None(e) => e.flush(),
        }
    }
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer written to `out` with `compression`.
    pub fn new(out: W, compression: Compression) -> io::Result<Self> {
        let blob = HashingWriter::new(out);
        let encoder = match compression {
            Compression::Zstd => {
                let mut enc = zstd::Encoder::new(blob, ZSTD_LEVEL)?;
                enc.include_checksum(false)?;
                enc.include_contentsize(false)?;
                Encoder::Zstd(enc)
            }
            Compression::Gzip => {
                let header = flate2::GzBuilder::new().mtime(0).operating_system(255);
                Encoder::Gzip(header.write(blob, flate2::Compression::new(GZIP_LEVEL)))
            }
            Compression::None => Encoder::None(blob),
        };
        Ok(LayerWriter {
            tar: tar::Builder::new(HashingWriter::new(encoder)),
            last_path: None,
        })
    }

    fn header(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
    ) -> io::Result<tar::Header> {
        if self.last_path.as_deref().is_some_and(|last| last >= path) {
            return Err(io::Error::other(format!(
                "layer entries out of order at `{path}`"
            )));
        }
        self.last_path = Some(path.to_string());
        let mut header = tar::Header::new_gnu();
        header.set_mtime(LAYER_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        Ok(header)
    }

    /// Appends a regular file of `size` bytes read from `content`.
    pub fn append_file(
        &mut self,
        path: &str,
        exec: bool,
        size: u64,
        content: impl Read,
    ) -> io::Result<()> {
        let mut header = self.header(
            path,
            tar::EntryType::Regular,
            if exec { 0o755 } else { 0o644 },
            size,
        )?;
        let mut checked = SizeChecked {
            inner: content,
            left: size,
            path,
        };
        self.tar.append_data(&mut header, path, &mut checked)?;
        if checked.left != 0 {
            return Err(size_changed(path));
        }
        Ok(())
    }

    /// Appends a symbolic link.
    /// The target is written byte for byte (`a//b` stays `a//b`, `dir/` keeps its
    /// slash): in the header when it fits, else in a GNU long-link entry.
    pub fn append_symlink(&mut self, path: &str, target: &LinkTarget) -> io::Result<()> {
        let mut header = self.header(path, tar::EntryType::Symlink, 0o777, 0)?;
        if target.as_bytes().len() <= LINK_NAME_FIELD {
            header.set_link_name_literal(target.as_bytes())?;
            return self.tar.append_data(&mut header, path, io::empty());
        }
        // The tar crate writes a long target's long-link entry from its bytes as they are.
        self.tar.append_link(&mut header, path, target.as_os_str())
    }

    /// Appends a directory.
    pub fn append_dir(&mut self, path: &str) -> io::Result<()> {
        let mut header = self.header(path, tar::EntryType::Directory, 0o755, 0)?;
        self.tar
            .append_data(&mut header, format!("{path}/"), io::empty())
    }

    /// Appends an entry whose file content comes from `content`.
    pub fn append_entry(
        &mut self,
        entry: &Entry,
        content: impl FnOnce() -> io::Result<Box<dyn Read>>,
    ) -> io::Result<()> {
        match &entry.kind {
            EntryKind::File { size, exec, .. } => {
                self.append_file(&entry.path, *exec, *size, content()?)
            }
            EntryKind::Symlink { target } => self.append_symlink(&entry.path, target),
            EntryKind::Dir => self.append_dir(&entry.path),
        }
    }

    /// Ends the tar and the compression; returns the digests and the output.
    pub fn finish(self) -> io::Result<(LayerDigests, W)> {
        let tar = self.tar.into_inner()?;
        let (diff_id, uncompressed_size, encoder) = tar.finish();
        let blob = match encoder {
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::None(b) => b,
        };
        let (digest, size, out) = blob.finish();
        Ok((
            LayerDigests {
                digest,
                size,
                diff_id,
                uncompressed_size,
            },
            out,
        ))
    }
}

/// Writes `entries` (sorted here by path) as a deterministic layer into `out`; file
/// contents come from `open`, which is asked once per file entry.
pub fn write_layer<W: Write>(
    entries: &[Entry],
    compression: Compression,
    out: W,
    mut open: impl FnMut(&Entry) -> io::Result<Box<dyn Read>>,
) -> io::Result<(LayerDigests, W)> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut writer = LayerWriter::new(out, compression)?;
    for entry in sorted {
        writer.append_entry(entry, || open(entry))?;
    }
    writer.finish()
}

fn size_changed(path: &str) -> io::Error {
    io::Error::other(format!("{path} changed size while the layer was written"))
}

/// A reader that fails if its source yields more or fewer bytes than promised, so a
/// file changing under ingest cannot produce a corrupt tar.
struct SizeChecked<'p, R> {
    inner: R,
    left: u64,
    path: &'p str,
}

impl<R: Read> Read for SizeChecked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(size_changed(self.path));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads a layer blob, calling `visit(path, content, exec)` for each regular file; `visit`
/// consumes the content and returns its digest (it is the one hashing it, usually while
/// staging it). Paths are validated with [`safe_path`]. Reading stops with
/// [`ReadError::TooLarge`] as soon as the uncompressed tar passes `limit` bytes, whatever
/// its headers claim, so a small hostile blob cannot make the caller write more than
/// that. Returns the entries and the digests and sizes of the blob and of the
/// uncompressed tar (the diff id): the caller compares them with what it expected
/// before it trusts anything `visit` was given.
pub fn read_layer<R: Read>(
    blob: R,
    compression: Compression,
    limit: u64,
    visit: impl FnMut(&str, &mut dyn Read, bool) -> io::Result<Digest>,
) -> Result<(Vec<Entry>, LayerDigests), ReadError> {
    let mut hashed = HashingReader::new(blob);
    let (entries, content) = read_layer_content(&mut hashed, compression, limit, visit)?;
    // Drain what follows the compressed stream so the blob digest covers every byte.
    io::copy(&mut hashed, &mut io::sink()).map_err(ReadError::Io)?;
    let (digest, size) = hashed.finish();
    Ok((
        entries,
        LayerDigests {
            digest,
            size,
            diff_id: content.diff_id,
            uncompressed_size: content.size,
        },
    ))
}

/// What the uncompressed tar of a layer was: its digest (the diff id) and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Its size.
    pub size: u64,
}

/// Like [`read_layer`] without hashing the compressed blob: for a blob already checked
/// against its digest (committed to the store), whose content the diff id and size
/// still vouch for. Stops at `limit` uncompressed bytes the same way.
pub fn read_layer_content<R: Read>(
    blob: R,
    compression: Compression,
    limit: u64,
    mut visit: impl FnMut(&str, &mut dyn Read, bool) -> io::Result<Digest>,
) -> Result<(Vec<Entry>, ContentDigest), ReadError> {
    let mut blob = blob;
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::Zstd => Box::new(zstd::Decoder::new(&mut blob).map_err(ReadError::Io)?),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut blob)),
        Compression::None => Box::new(&mut blob),
    };
    let mut tar_stream = Bounded::new(decoder, limit);
    let result = read_entries(&mut tar_stream, &mut visit).and_then(|entries| {
        // Drain the tar's trailing blocks so the diff id covers every byte.
        io::copy(&mut tar_stream, &mut io::sink()).map_err(ReadError::Io)?;
        Ok(entries)
    });
    if tar_stream.exceeded {
        return Err(ReadError::TooLarge { limit });
    }
    let entries = result?;
    let (diff_id, size) = tar_stream.inner.finish();
    Ok((entries, ContentDigest { diff_id, size }))
}

/// The entries of the tar read from `stream`, file contents handed to `visit`. The
/// tar is read raw: extension entries (GNU long names and links, pax headers) are read
/// here through [`EXTENSION_CAP`] and applied to the entry that follows.
fn read_entries(
    stream: &mut dyn Read,
    visit: &mut impl FnMut(&str, &mut dyn Read, bool) -> io::Result<Digest>,
) -> Result<Vec<Entry>, ReadError> {
    let mut archive = tar::Archive::new(stream);
    let mut entries = Vec::new();
    let mut names = Names::default();
    for item in archive.entries().map_err(ReadError::Io)?.raw(true) {
        let mut item = item.map_err(ReadError::Io)?;
        if names.take_extension(&mut item)? {
            continue;
        }
        let names = std::mem::take(&mut names);
        let raw_path = names.path.unwrap_or_else(|| item.path_bytes().into_owned());
        let raw = String::from_utf8(raw_path)
            .map_err(|e| ReadError::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into_owned()))?;
        let path = safe_path(&raw)?;
        let header = item.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let exec = header.mode().map_err(ReadError::Io)? & 0o111 != 0;
                let size = header.size().map_err(ReadError::Io)?;
                let digest = visit(&path, &mut item, exec).map_err(ReadError::Io)?;
                EntryKind::File { digest, size, exec }
            }
            tar::EntryType::Symlink => {
                let target = names
                    .link
                    .or_else(|| item.link_name_bytes().map(|t| t.into_owned()))
                    .ok_or_else(|| {
                        ReadError::Unsupported(path.clone(), "symlink without target")
                    })?;
                EntryKind::Symlink {
                    target: LinkTarget(target),
                }
            }
            tar::EntryType::Directory => EntryKind::Dir,
            _ => {
                return Err(ReadError::Unsupported(
                    path,
                    "entry type (only files, directories and symlinks)",
                ))
            }
        };
        entries.push(Entry { path, kind });
    }
    if names.path.is_some() || names.link.is_some() {
        return Err(ReadError::Unsupported(
            String::new(),
            "long name or pax header with no entry after it",
        ));
    }
    Ok(entries)
}

/// A path and link target that extension entries give the next entry.
#[derive(Default)]
struct Names {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
}

impl Names {
    /// Takes `item` if it is an extension entry (true); a plain entry is left alone.
    fn take_extension<R: Read>(&mut self, item: &mut tar::Entry<'_, R>) -> Result<bool, ReadError> {
        let kind = item.header().entry_type();
        match kind {
            tar::EntryType::GNULongName => {
                let name = without_nul(read_extension(item)?);
                set_once(&mut self.path, name)?;
            }
            tar::EntryType::GNULongLink => {
                let name = without_nul(read_extension(item)?);
                set_once(&mut self.link, name)?;
            }
            tar::EntryType::XHeader => {
                let records = read_extension(item)?;
                for record in tar::PaxExtensions::new(&records) {
                    let record = record.map_err(ReadError::Io)?;
                    match record.key_bytes() {
                        b"path" => set_once(&mut self.path, record.value_bytes().to_vec())?,
                        b"linkpath" => set_once(&mut self.link, record.value_bytes().to_vec())?,
                        // The entry's size in its header is the one read: a different
                        // one here would be read wrongly, so it is refused.
                        b"size" => {
                            return Err(ReadError::Unsupported(
                                String::new(),
                                "pax size record (files over 8 GiB)",
                            ))
                        }
                        _ => {} // times, owners, xattrs: not restored
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// An extension entry's data, refused unread past [`EXTENSION_CAP`].
fn read_extension<R: Read>(item: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, ReadError> {
    let size = item.header().size().map_err(ReadError::Io)?;
    if size > EXTENSION_CAP {
        return Err(ReadError::HugeExtension { size });
    }
    let mut data = Vec::with_capacity(size as usize);
    item.read_to_end(&mut data).map_err(ReadError::Io)?;
    Ok(data)
}

/// A GNU long name without its terminating NUL.
fn without_nul(mut name: Vec<u8>) -> Vec<u8> {
    if name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// Sets a name an extension entry gives, refusing a second one for the same entry.
fn set_once(slot: &mut Option<Vec<u8>>, name: Vec<u8>) -> Result<(), ReadError> {
    if slot.is_some() {
        return Err(ReadError::Unsupported(
            String::from_utf8_lossy(&name).into_owned(),
            "second long name for one entry",
        ));
    }
    *slot = Some(name);
    Ok(())
}

/// A hashing reader that refuses to yield more than `limit` bytes: the read that would
/// pass it fails (and sets `exceeded`) instead.
struct Bounded<R> {
    inner: HashingReader<R>,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Bounded<R> {
    fn new(inner: R, limit: u64) -> Self {
        Bounded {
            inner: HashingReader::new(inner),
            left: limit,
            exceeded: false,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded {
            return Err(io::Error::other("layer larger than its catalog says"));
        }
        // One byte more than is left is asked for: getting it proves the stream too long.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("layer larger than its catalog says"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The blob is not a readable (compressed) tar.
    #[error("layer is not a readable tar archive")]
    Io(#[source] io::Error),
    /// A path that would escape the space.
    #[error(transparent)]
    Unsafe(#[from] UnsafePath),
    /// A path that is not UTF-8.
    #[error("path `{0}` in layer is not UTF-8")]
    NotUtf8(String),
    /// An entry envoci does not restore.
    #[error("unsupported {1} at `{0}` in layer")]
    Unsupported(String, &'static str),
    /// The uncompressed tar is longer than the size it was given; reading stopped there.
    #[error(
        "layer unpacks to more than the {limit} bytes its catalog says; reading stopped there"
    )]
    TooLarge {
        /// The most it was allowed.
        limit: u64,
    },
    /// A long name or pax header bigger than any real one.
    #[error("layer has a {size}-byte long name or pax header; more than {EXTENSION_CAP} bytes is refused unread")]
    HugeExtension {
        /// Its size.
        size: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<Entry>, Vec<(String, Vec<u8>)>) {
        let files = vec![
            ("b/long/".repeat(30) + "x.txt", b"hello".to_vec()),
            ("a.sh".into(), b"#!/bin/sh\n".to_vec()),
        ];
        let mut entries: Vec<Entry> = files
            .iter()
            .map(|(p, c)| Entry {
                path: p.clone(),
                kind: EntryKind::File {
                    digest: Digest::of(c),
                    size: c.len() as u64,
                    exec: p.ends_with(".sh"),
                },
            })
            .collect();
        entries.push(Entry {
            path: "lib/link".into(),
            kind: EntryKind::Symlink {
                target: "../a.sh".into(),
            },
        });
        entries.push(Entry {
            path: "empty-dir".into(),
            kind: EntryKind::Dir,
        });
        (entries, files)
    }

    fn write(
        entries: &[Entry],
        files: &[(String, Vec<u8>)],
        c: Compression,
    ) -> (LayerDigests, Vec<u8>) {
        write_layer(entries, c, Vec::new(), |e| {
            let content = files.iter().find(|(p, _)| *p == e.path).unwrap().1.clone();
            Ok(Box::new(io::Cursor::new(content)))
        })
        .unwrap()
    }

    #[test]
    fn layers_are_deterministic_and_order_independent() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let (mut entries, files) = sample();
            let (a, blob_a) = write(&entries, &files, c);
            entries.reverse();
            let (b, blob_b) = write(&entries, &files, c);
            assert_eq!(a, b);
            assert_eq!(blob_a, blob_b);
            assert_eq!(Digest::of(&blob_a), a.digest);
        }
    }

    #[test]
    fn round_trip_gives_back_entries_and_digest() {
        let (entries, files) = sample();
        let (digests, blob) = write(&entries, &files, Compression::Zstd);
        let mut seen = Vec::new();
        let (read, got) = read_layer(&blob[..], Compression::Zstd, u64::MAX, |p, r, _| {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf)?;
            let d = Digest::of(&buf);
            seen.push((p.to_string(), buf));
            Ok(d)
        })
        .unwrap();
        assert_eq!(got, digests, "blob and diff id, both sizes");
        assert_eq!(got.size, blob.len() as u64);
        let mut want = entries.clone();
        want.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(read, want);
        assert_eq!(seen.len(), 2);
    }

    /// Reads an uncompressed tar's entries, hashing file contents.
    fn entries_of(tar: &[u8]) -> Result<Vec<Entry>, ReadError> {
        read_layer(tar, Compression::None, u64::MAX, hash).map(|(entries, _)| entries)
    }

    #[test]
    fn symlink_targets_are_written_byte_for_byte() {
        let long = format!("..//{}/./x/", "d".repeat(120));
        let targets = ["a//b", "dir/", "x/./y", "./z", long.as_str()];
        let entries: Vec<Entry> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                path: format!("link{i}"),
                kind: EntryKind::Symlink {
                    target: (*t).into(),
                },
            })
            .collect();
        let (_, blob) = write(&entries, &[], Compression::None);
        let read = entries_of(&blob).unwrap();
        assert_eq!(read, entries);
    }

    #[test]
    fn pax_names_apply_to_the_next_entry_and_pax_sizes_are_refused() {
        let name = "p/".repeat(80) + "file";
        let pax = |records: &[(&str, &[u8])]| {
            let mut builder = tar::Builder::new(Vec::new());
            builder
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_path("short").unwrap();
            h.set_mode(0o644);
            h.set_size(1);
            h.set_cksum();
            builder.append(&h, &b"x"[..]).unwrap();
            builder.into_inner().unwrap()
        };
        let read = entries_of(&pax(&[("path", name.as_bytes()), ("mtime", b"1")])).unwrap();
        assert_eq!(read[0].path, name);
        let err = entries_of(&pax(&[("size", b"1")])).unwrap_err();
        assert!(matches!(err, ReadError::Unsupported(..)), "{err}");
    }

    #[test]
    fn extension_entries_beyond_the_cap_are_refused_and_dangling_ones_too() {
        let extension = |kind: tar::EntryType, size: u64, then_file: bool| {
            let mut builder = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            h.set_size(size);
            h.set_cksum();
            builder
                .append(&h, io::Read::take(io::repeat(b'n'), size))
                .unwrap();
            if then_file {
                let mut f = tar::Header::new_gnu();
                f.set_path("f").unwrap();
                f.set_mode(0o644);
                f.set_size(0);
                f.set_cksum();
                builder.append(&f, io::empty()).unwrap();
            }
            builder.into_inner().unwrap()
        };
        for kind in [
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XHeader,
        ] {
            let err = entries_of(&extension(kind, EXTENSION_CAP + 1, true)).unwrap_err();
            assert!(
                matches!(err, ReadError::HugeExtension { size } if size == EXTENSION_CAP + 1),
                "{err}"
            );
        }
        let read = entries_of(&extension(tar::EntryType::GNULongName, 4000, true)).unwrap();
        assert_eq!(read[0].path, "n".repeat(4000));
        assert!(entries_of(&extension(tar::EntryType::GNULongName, 10, false)).is_err());
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for p in ["/etc/passwd", "../x", "a/../../x", "", "./", "a\\..\\b"] {
            assert!(safe_path(p).is_err(), "{p}");
        }
        assert_eq!(safe_path("./a//b/./c").unwrap(), "a/b/c");
    }

    #[test]
    fn tar_with_escaping_path_is_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // Write the name bytes directly: the tar crate refuses `..` through set_path.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil\0\0");
        h.set_cksum();
        builder.append(&h, &b"x"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let err = read_layer(&tar[..], Compression::None, u64::MAX, hash).unwrap_err();
        assert!(matches!(err, ReadError::Unsafe(_)), "{err}");
    }

    fn hash(_: &str, r: &mut dyn Read, _: bool) -> io::Result<Digest> {
        Ok(Digest::of_reader(r)?.0)
    }

    #[test]
    fn reading_stops_at_the_limit_whatever_the_headers_say() {
        // 64 MiB of zeros compress to a few KB; the limit says 4 bytes.
        let big = 64 << 20;
        let entries = vec![Entry {
            path: "zeros".into(),
            kind: EntryKind::File {
                digest: Digest::of(b""),
                size: big,
                exec: false,
            },
        }];
        let (digests, blob) = write_layer(&entries, Compression::Zstd, Vec::new(), |_| {
            Ok(Box::new(io::repeat(0).take(big)))
        })
        .unwrap();
        assert!(blob.len() < 64 << 10, "{}", blob.len());
        let mut consumed = 0u64;
        let err = read_layer(&blob[..], Compression::Zstd, 4, |_, r, _| {
            let n = io::copy(r, &mut io::sink());
            consumed += *n.as_ref().unwrap_or(&0);
            n.map(|_| Digest::of(b""))
        })
        .unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { limit: 4 }), "{err}");
        assert_eq!(consumed, 0, "not one byte of content past the limit");
        // Exactly the real size passes; one byte less does not.
        let exact = digests.uncompressed_size;
        let (_, got) = read_layer(&blob[..], Compression::Zstd, exact, hash).unwrap();
        assert_eq!(got, digests);
        let err = read_layer(&blob[..], Compression::Zstd, exact - 1, hash).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn non_utf8_symlink_targets_are_kept_byte_exact() {
        let target = LinkTarget::from(b"lib\xff\xfe.so".to_vec());
        let entries = vec![Entry {
            path: "link".into(),
            kind: EntryKind::Symlink {
                target: target.clone(),
            },
        }];
        let (_, blob) = write_layer(&entries, Compression::Gzip, Vec::new(), |_| {
            unreachable!("no files")
        })
        .unwrap();
        let (read, _) = read_layer(&blob[..], Compression::Gzip, u64::MAX, hash).unwrap();
        assert_eq!(read, entries);
        // The index keeps it too; UTF-8 targets stay plain strings.
        let json = serde_json::to_string(&read).unwrap();
        assert!(
            json.contains(r#""target":{"hex":"6c6962fffe2e736f"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Vec<Entry>>(&json).unwrap(), entries);
        let plain = serde_json::to_string(&LinkTarget::from("../a.sh")).unwrap();
        assert_eq!(plain, r#""../a.sh""#);
    }
}
