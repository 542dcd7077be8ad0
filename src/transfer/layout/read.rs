//! Opening a layout without trusting it: a directory whose links are never followed,
//! or a tar archive whose entry headers are read once (plain files and directories
//! only, relative names inside the layout, data within the file); documents are read
//! through a size cap.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageIndex;

use super::{Error, Form, DOCUMENT_CAP};
use crate::digest::Digest;
use crate::store::Error as StoreError;

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
        let mut archive = tar::Archive::new(HeaderReader::new(file));
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
    pub(crate) fn open_entry(&self, name: &str) -> Result<Option<(Entry, u64)>, Error> {
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

    /// A small file of the layout (`index.json`, a manifest), refused when it is
    /// larger than a document may be.
    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some((reader, size)) = self.open_entry(name)? else {
            return Ok(None);
        };
        if size > DOCUMENT_CAP {
            return Err(Error::BadIndex {
                location: self.location(),
                reason: format!(
                    "`{name}` holds {size} bytes, more than a document may ({DOCUMENT_CAP})"
                ),
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .take(DOCUMENT_CAP)
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("read", self.location()))?;
        Ok(Some(bytes))
    }

    /// The entry name of blob `digest`.
    pub(crate) fn blob_name(digest: &Digest) -> String {
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
    pub(super) fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
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
    pub(super) fn index(&self) -> Result<ImageIndex, Error> {
        let bad = |reason: String| Error::BadIndex {
            location: self.location(),
            reason,
        };
        let bytes = self
            .read_file("index.json")?
            .ok_or_else(|| bad("missing".into()))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
    }
}

/// The most an archive's reader takes between two seeks: a header and the extended
/// header after it (a GNU long name or link, PAX records), which legitimately hold a
/// path or a few attributes.
const HEADER_READ_CAP: u64 = 1 << 20;

/// An archive file as the tar reader indexing it sees it: it seeks to every header, so
/// the only bytes it reads are headers and the extended headers it keeps in memory
/// whole; capping the bytes read between two seeks keeps a long name that claims
/// gigabytes from being read into memory.
struct HeaderReader {
    file: File,
    left: u64,
}

impl HeaderReader {
    fn new(file: File) -> Self {
        HeaderReader {
            file,
            left: HEADER_READ_CAP,
        }
    }
}

impl Read for HeaderReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            return Err(io::Error::other(format!(
                "an extended header (long name or PAX records) holds more than {HEADER_READ_CAP} bytes"
            )));
        }
        let most = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..most])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl Seek for HeaderReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.left = HEADER_READ_CAP;
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_with(dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("layout.tar");
        let mut tar = tar::Builder::new(File::create(&path).unwrap());
        for (name, data) in [
            ("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
            ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
            (extra, b"x"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, data).unwrap();
        }
        tar.finish().unwrap();
        path
    }

    #[test]
    fn long_names_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/file", "d".repeat(3000));
        let layout = Layout::open_archive(&archive_with(dir.path(), &long)).unwrap();
        assert!(layout.has(&long));
    }

    /// A GNU long name claiming 3 GiB (a sparse file of 4 KiB on disk) made the index
    /// of the archive read all of it into memory (4.2 GB resident for `import`).
    #[test]
    fn a_huge_long_name_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostile.tar");
        let claimed: u64 = 3 << 30;
        let mut header = tar::Header::new_gnu();
        header.set_path("././@LongLink").unwrap();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(claimed);
        header.set_cksum();
        let mut file = File::create(&path).unwrap();
        io::Write::write_all(&mut file, header.as_bytes()).unwrap();
        file.set_len(512 + claimed + 1024).unwrap();
        drop(file);
        let error = Layout::open_archive(&path).err().expect("refused");
        assert!(
            matches!(&error, Error::Truncated { reason, .. } if reason.contains("extended header")),
            "{error}"
        );
    }
}
