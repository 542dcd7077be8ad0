//! One vocabulary for every place blobs live — the local store, an OCI layout directory,
//! an OCI archive, a repository of a registry — so that one conformance suite
//! (`tests/conformance.rs`) holds all of them to the same behaviour, and so that pull,
//! push, copy and import may later be written once against [`BlobStore`].
//!
//! The verbs follow a content store's: a blob is named by its digest; nothing being
//! written is visible before it is complete and matches that digest (a write that does
//! not is refused with an [`ErrorKind::Integrity`](super::ErrorKind::Integrity) error
//! and leaves nothing behind); "already exists" is a write's own outcome, and a
//! success; reads are verified; an interrupted read continues from an offset, an
//! interrupted write from the bytes kept. What a backend cannot do at all it refuses
//! with [`Error::Unsupported`], never by doing something else:
//!
//! | backend                   | has, size, read, read_from | write          | kept, append |
//! |---------------------------|----------------------------|----------------|--------------|
//! | [`Store`]                 | yes                        | yes            | yes          |
//! | [`Layout::Dir`]           | yes                        | yes            | unsupported  |
//! | [`Layout::Archive`]       | yes                        | unsupported    | unsupported  |
//! | [`RegistryBlobs`]         | yes (`Range`, 206)         | yes (POST+PUT) | unsupported  |
//!
//! The file backends do their (small) I/O on the calling task: blobs pass through this
//! interface whole, in memory, so it is meant for documents and modest blobs.

use std::fs;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom, Write};

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, SizedStream};
use oci_client::RegistryOperation;

use super::error::{classify_io, Failure};
use super::layout::Layout;
use super::{Error, Registry, RegistryOptions, RemoteRef};
use crate::digest::Digest;
use crate::store::{self, Store};

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The blob is there now, from these bytes.
    Stored,
    /// The blob was there already; nothing was written.
    AlreadyExists,
}

/// What became of bytes added to an interrupted write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Kept, not visible: the blob has this many of its bytes so far.
    Partial {
        /// Bytes kept.
        kept: u64,
    },
    /// Complete, verified and committed (or it was there already).
    Committed(Written),
}

/// An operation some blob stores cannot do at all, named by [`Error::Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// [`BlobStore::write`].
    Write,
    /// [`BlobStore::kept`] and [`BlobStore::append`]: keeping an interrupted write to
    /// continue it.
    Resume,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Write => "write blobs",
            Operation::Resume => "keep an interrupted write of a blob",
        })
    }
}

/// A place blobs live, named by digest. See the [module](self) for what each backend
/// does.
pub trait BlobStore {
    /// Where the blobs are, for messages.
    fn location(&self) -> String;

    /// Whether blob `digest` is there, complete (an interrupted write is not).
    fn has(&self, digest: &Digest) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The size of blob `digest` in bytes, as the backend records it (not verified); an
    /// error of kind `NotFound` when it is not there.
    fn size(&self, digest: &Digest) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The whole blob, checked against its digest (kind `Integrity` when it does not
    /// match); one of more than `limit` bytes is refused with [`Error::TooLarge`].
    fn read(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, Error>> + Send;

    /// The blob's bytes from `offset` (within the blob) to its end: how an interrupted
    /// read continues. A part cannot be checked alone; the caller checks the whole.
    fn read_from(
        &self,
        digest: &Digest,
        offset: u64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, Error>> + Send;

    /// Stores `bytes` as blob `digest`, once they are checked against it: bytes that do
    /// not match are refused (kind `Integrity`) and nothing becomes visible.
    fn write(
        &self,
        digest: &Digest,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Written, Error>> + Send;

    /// How many bytes of an interrupted write of blob `digest` are kept (0 when none):
    /// where [`BlobStore::append`] continues.
    fn kept(&self, digest: &Digest) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Adds `bytes` after those kept of blob `digest`, `size` bytes in all; once all
    /// are there they are checked and committed. More than `size` bytes, or a whole
    /// that does not match, is refused (kind `Integrity`) and what was kept is dropped.
    fn append(
        &self,
        digest: &Digest,
        size: u64,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Appended, Error>> + Send;
}

/// The error of content that does not match what it should be.
fn corrupt(digest: &Digest, expected: String, actual: String) -> Error {
    store::Error::Corrupt {
        what: "blob",
        digest: *digest,
        expected,
        actual,
    }
    .into()
}

/// The error of a blob larger than its reader allows.
fn too_large(location: String, digest: &Digest, limit: u64) -> Error {
    Error::TooLarge {
        location,
        digest: digest.oci(),
        limit,
    }
}

/// Reads all of `reader`, refusing more than `limit` bytes.
fn read_capped(
    reader: impl Read,
    limit: u64,
    too_large: impl FnOnce() -> Error,
    failed: impl FnOnce(io::Error) -> store::Error,
) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The local store: blobs in its `blobs/sha256/`, written through its scratch area;
/// an interrupted write is kept in `ingest/partial/<hex>`, where pull keeps an
/// interrupted download, so either continues the other's.
impl BlobStore for Store {
    fn location(&self) -> String {
        self.root().display().to_string()
    }

    async fn has(&self, digest: &Digest) -> Result<bool, Error> {
        Ok(self.has_blob(digest))
    }

    async fn size(&self, digest: &Digest) -> Result<u64, Error> {
        Ok(self.blob_size(digest)?)
    }

    async fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        if self.blob_size(digest)? > limit {
            return Err(too_large(self.location(), digest, limit));
        }
        Ok(self.read_blob(digest)?)
    }

    async fn read_from(&self, digest: &Digest, offset: u64, limit: u64) -> Result<Vec<u8>, Error> {
        let mut file = self.open_blob(digest)?;
        let failed = || store::Error::io("read", self.location());
        file.seek(SeekFrom::Start(offset)).map_err(failed())?;
        read_capped(
            file,
            limit,
            || too_large(self.location(), digest, limit),
            failed(),
        )
    }

    async fn write(&self, digest: &Digest, bytes: &[u8]) -> Result<Written, Error> {
        if self.has_blob(digest) {
            return Ok(Written::AlreadyExists);
        }
        let scratch = self.scratch()?;
        let mut writer = self.blob_writer(&scratch)?;
        writer
            .write_all(bytes)
            .map_err(store::Error::io("write", scratch.dir()))?;
        writer.commit(Some((*digest, bytes.len() as u64)))?;
        Ok(Written::Stored)
    }

    async fn kept(&self, digest: &Digest) -> Result<u64, Error> {
        Ok(take_partial(self, digest).await?.len())
    }

    async fn append(&self, digest: &Digest, size: u64, bytes: &[u8]) -> Result<Appended, Error> {
        let mut partial = take_partial(self, digest).await?;
        if self.has_blob(digest) {
            partial.discard();
            return Ok(Appended::Committed(Written::AlreadyExists));
        }
        let after = partial.len() + bytes.len() as u64;
        if after > size {
            partial.discard();
            return Err(corrupt(
                digest,
                format!("{size} bytes"),
                format!("at least {after} bytes"),
            ));
        }
        partial.append(bytes)?;
        if after < size {
            return Ok(Appended::Partial { kept: after });
        }
        partial.commit(size)?;
        Ok(Appended::Committed(Written::Stored))
    }
}

/// The store's partial of `digest`, taken off the async workers (it waits for a lock).
async fn take_partial(store: &Store, digest: &Digest) -> Result<store::Partial, Error> {
    let (taker, digest) = (store.clone(), *digest);
    tokio::task::spawn_blocking(move || taker.partial(&digest))
        .await
        .map_err(|e| store::Error::io("lock", "a partial blob")(io::Error::other(e)))?
        .map_err(Error::from)
}

/// An OCI layout: a directory takes blobs one by one (each to a temporary name in
/// `blobs/sha256/`, renamed once checked); an archive is written whole by export and
/// only read here.
impl BlobStore for Layout {
    fn location(&self) -> String {
        Layout::location(self)
    }

    async fn has(&self, digest: &Digest) -> Result<bool, Error> {
        Ok(self.has_blob(digest))
    }

    async fn size(&self, digest: &Digest) -> Result<u64, Error> {
        let (_, size) = self.open_blob(digest)?;
        Ok(size)
    }

    async fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let (reader, size) = self.open_blob(digest)?;
        if size > limit {
            return Err(too_large(self.location(), digest, limit));
        }
        let bytes = read_capped(
            reader,
            limit,
            || too_large(self.location(), digest, limit),
            store::Error::io("read", self.location()),
        )?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(super::layout::Error::Mismatch {
                location: self.location(),
                digest: digest.oci(),
                actual: actual.oci(),
                size: bytes.len() as u64,
            }
            .into());
        }
        Ok(bytes)
    }

    async fn read_from(&self, digest: &Digest, offset: u64, limit: u64) -> Result<Vec<u8>, Error> {
        let (mut reader, _) = self.open_blob(digest)?;
        io::copy(&mut (&mut reader).take(offset), &mut io::sink())
            .map_err(store::Error::io("read", self.location()))?;
        read_capped(
            reader,
            limit,
            || too_large(self.location(), digest, limit),
            store::Error::io("read", self.location()),
        )
    }

    async fn write(&self, digest: &Digest, bytes: &[u8]) -> Result<Written, Error> {
        let Layout::Dir { root } = self else {
            return Err(self.unsupported(Operation::Write));
        };
        if self.has_blob(digest) {
            return Ok(Written::AlreadyExists);
        }
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(corrupt(digest, digest.oci(), actual.oci()));
        }
        let dir = root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(store::Error::io("create directory", &dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)
            .map_err(store::Error::io("create a file in", &dir))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(store::Error::io("write", tmp.path().to_path_buf()))?;
        let dest = dir.join(digest.hex());
        match tmp.persist_noclobber(&dest) {
            Ok(_) => Ok(Written::Stored),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(Written::AlreadyExists),
            Err(e) => Err(store::Error::io("commit", dest)(e.error).into()),
        }
    }

    async fn kept(&self, _digest: &Digest) -> Result<u64, Error> {
        Err(self.unsupported(Operation::Resume))
    }

    async fn append(&self, _digest: &Digest, _size: u64, _bytes: &[u8]) -> Result<Appended, Error> {
        Err(self.unsupported(Operation::Resume))
    }
}

impl Layout {
    /// Opens blob `digest` and gives its size; kind `NotFound` when it is not there.
    fn open_blob(&self, digest: &Digest) -> Result<(Box<dyn Read + Send>, u64), Error> {
        self.open_entry(&Layout::blob_name(digest))?.ok_or_else(|| {
            super::layout::Error::MissingBlob {
                location: self.location(),
                digest: digest.oci(),
                base: None,
            }
            .into()
        })
    }

    /// Why this form of layout cannot do `operation`.
    fn unsupported(&self, operation: Operation) -> Error {
        let reason = match (self, operation) {
            (Layout::Archive { .. }, _) => {
                "an archive is written whole (by export) and only read afterwards"
            }
            (Layout::Dir { .. }, _) => {
                "a layout has no place for partial blobs (one kept inside it would be a stray file every other tool sees)"
            }
        };
        Error::Unsupported {
            location: self.location(),
            operation,
            reason,
        }
    }
}

/// The blobs of one repository of a registry. Uploads are monolithic (POST then PUT,
/// as everywhere in envoci), so an interrupted upload is not kept: the registry's
/// upload session lives and dies inside one call.
pub struct RegistryBlobs {
    registry: std::sync::Arc<Registry>,
    remote: RemoteRef,
}

impl RegistryBlobs {
    /// Connects to the repository of `remote` (its tag or digest does not matter),
    /// with the rights to read and write blobs.
    pub async fn connect(remote: &RemoteRef, options: &RegistryOptions) -> Result<Self, Error> {
        let (remote, options) = options.mirrors.location(remote, options)?;
        let registry = Registry::connect(&remote, &options, RegistryOperation::Push).await?;
        Ok(Self::over(std::sync::Arc::new(registry), remote))
    }

    /// The blobs of `remote`'s repository through a client already connected.
    pub fn over(registry: std::sync::Arc<Registry>, remote: RemoteRef) -> Self {
        RegistryBlobs { registry, remote }
    }

    /// Reads a response body, at most `limit` bytes.
    async fn collect(
        &self,
        digest: &Digest,
        mut body: SizedStream,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        if body.content_length.is_some_and(|n| n > limit) {
            return Err(too_large(self.location(), digest, limit));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = body.stream.next().await {
            let chunk = chunk.map_err(|e| {
                let failure =
                    classify_io(&e, &self.registry.context).unwrap_or(Failure::Interrupted {
                        detail: String::new(),
                    });
                self.registry.error(
                    format!("downloading blob {digest}"),
                    failure,
                    Some(Box::new(e)),
                )
            })?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large(self.location(), digest, limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// The error of content from the registry that does not match its digest.
    /// The body of blob `digest` (retried), a failure named as `what`.
    async fn open(&self, digest: &Digest, what: &str) -> Result<SizedStream, Error> {
        let (registry, name) = (&self.registry, digest.oci());
        registry
            .retry(what, || {
                registry
                    .client
                    .pull_blob_stream(&self.remote.0, name.as_str())
            })
            .await
    }

    fn mismatch(&self, digest: &Digest, actual: Digest) -> Error {
        Error::DigestMismatch {
            registry: self.registry.host.clone(),
            what: "blob",
            digest: digest.oci(),
            actual: actual.oci(),
        }
    }

    fn unsupported(&self) -> Error {
        Error::Unsupported {
            location: self.location(),
            operation: Operation::Resume,
            reason: "uploads are monolithic (POST then PUT); an interrupted one is not kept",
        }
    }
}

impl BlobStore for RegistryBlobs {
    fn location(&self) -> String {
        format!("{}/{}", self.registry.host, self.remote.0.repository())
    }

    async fn has(&self, digest: &Digest) -> Result<bool, Error> {
        let (registry, name) = (&self.registry, digest.oci());
        registry
            .retry(&format!("checking blob {digest}"), || {
                registry.client.blob_exists(&self.remote.0, &name)
            })
            .await
    }

    /// The `Content-Length` of a GET whose body is not read (oci-client's HEAD says
    /// only whether the blob is there).
    async fn size(&self, digest: &Digest) -> Result<u64, Error> {
        let what = format!("sizing blob {digest}");
        let body = self.open(digest, &what).await?;
        body.content_length
            .ok_or_else(|| self.registry.malformed(what, &"no Content-Length"))
    }

    async fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, Error> {
        let body = self
            .open(digest, &format!("downloading blob {digest}"))
            .await?;
        let bytes = self.collect(digest, body, limit).await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(self.mismatch(digest, actual));
        }
        Ok(bytes)
    }

    /// A `Range` request; a registry that ignores it (200, the whole blob) still gives
    /// the right tail, checked as a whole first.
    async fn read_from(&self, digest: &Digest, offset: u64, limit: u64) -> Result<Vec<u8>, Error> {
        let (registry, name) = (&self.registry, digest.oci());
        let response = registry
            .retry(&format!("downloading blob {digest} from {offset}"), || {
                registry.client.pull_blob_stream_partial(
                    &self.remote.0,
                    name.as_str(),
                    offset,
                    None,
                )
            })
            .await?;
        match response {
            BlobResponse::Partial(body) => self.collect(digest, body, limit).await,
            BlobResponse::Full(body) => {
                let whole = self
                    .collect(digest, body, limit.saturating_add(offset))
                    .await?;
                let actual = Digest::of(&whole);
                if actual != *digest {
                    return Err(self.mismatch(digest, actual));
                }
                let start = usize::try_from(offset).map_or(whole.len(), |o| o.min(whole.len()));
                Ok(whole[start..].to_vec())
            }
        }
    }

    /// Checks with a HEAD first (as push does); the registry checks the digest of
    /// what it receives and refuses a mismatch (`DIGEST_INVALID`).
    async fn write(&self, digest: &Digest, bytes: &[u8]) -> Result<Written, Error> {
        if self.has(digest).await? {
            return Ok(Written::AlreadyExists);
        }
        let (registry, name) = (&self.registry, digest.oci());
        registry
            .retry(&format!("uploading blob {digest}"), || {
                let data = bytes::Bytes::copy_from_slice(bytes);
                registry.client.push_blob(&self.remote.0, data, &name)
            })
            .await?;
        Ok(Written::Stored)
    }

    async fn kept(&self, _digest: &Digest) -> Result<u64, Error> {
        Err(self.unsupported())
    }

    async fn append(&self, _digest: &Digest, _size: u64, _bytes: &[u8]) -> Result<Appended, Error> {
        Err(self.unsupported())
    }
}
