//! Pull: registry → store. Resolves the reference (an index picks this platform),
//! stores manifest and catalog, then downloads only the layers the store lacks, several
//! at a time, each streamed to a partial file that survives interruption: the next
//! pull continues it with a `Range` request (a 206 with the right offset is required;
//! a 200 starts over). Every blob is verified before it is committed, and each layer is
//! extracted into the file CAS as soon as it is complete.

use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::RegistryOperation;
use oci_spec::image::ImageManifest;

use std::sync::Arc;

use super::blobs::BlobStore as _;
use super::error::{classify_io, Failure};
use super::sources::Sources;
use super::stream::{Feed, Unpacking};
use super::{Error, Registry, RegistryOptions, RemoteRef, Report};
use crate::artifact;
use crate::catalog::CatalogLayer;
use crate::digest::Digest;
use crate::store::{self, Store};

/// Pulls `remote` into `store` (for `platform`, default this machine's). Returns the
/// report and the local name the artifact got (the full reference). Each request goes
/// to the first endpoint that serves it ([`Sources`]: mirrors, then the registry).
pub async fn pull(
    store: &Store,
    remote: &RemoteRef,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<(Report, String), Error> {
    let (report, tag) = pull_untagged(store, remote, options, platform).await?;
    Ok((report, tag.apply(store)?))
}

/// [`pull`] but for the tag: everything is in the store, and the returned
/// [`PendingTag`] names it once applied (the store is synced first, which can go on
/// while the caller restores the environment).
pub async fn pull_untagged(
    store: &Store,
    remote: &RemoteRef,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<(Report, PendingTag), Error> {
    let sources = Sources::new(remote, options)?;
    let (digest, bytes, manifest) = resolve_anywhere(&sources, remote, platform).await?;
    // Held until the tag is written: gc must not take what is pulled before it is named.
    let writing = store.writing()?;
    let scratch = Arc::new(store.scratch()?);
    let mut report = Report {
        reference: remote.to_string(),
        digest: digest.oci(),
        ..Report::default()
    };
    let missing = missing_blobs(store, &manifest, &mut report)?;
    // The catalog first: it says what each layer must unpack to.
    let config = store::from_oci_digest(manifest.config().digest());
    let (catalog, mut layers): (Vec<_>, Vec<_>) =
        missing.into_iter().partition(|b| Some(b.0) == config);
    // Largest first: the layer that takes longest to fetch and unpack starts at once,
    // and the small ones fill the time around it instead of delaying it.
    layers.sort_by_key(|(_, size, _)| std::cmp::Reverse(*size));
    let total = crate::sum_sizes(catalog.iter().chain(&layers).map(|(_, size, _)| size));
    options
        .progress
        .begin("pulling", total, crate::progress::Unit::Bytes);
    let mut fetched = super::bounded(catalog, 1, |(d, size, _)| {
        fetch_blob_anywhere(store, &scratch, &sources, d, size, None)
    })
    .await?;
    // Validated before any layer is fetched against it.
    let artifact = artifact::parse_artifact(store, &remote.to_string(), digest, &bytes)?;
    let layer = |d: Digest| artifact.catalog.layers.iter().find(|l| l.digest == d);
    fetched.extend(
        super::bounded(layers, options.jobs, |(d, size, media)| {
            let layer = layer(d).map(|l| (l, media));
            fetch_blob_anywhere(store, &scratch, &sources, d, size, layer)
        })
        .await?,
    );
    for (bytes, resumed) in fetched {
        report.blobs_transferred += 1;
        report.bytes_transferred += bytes;
        report.blobs_resumed += u64::from(resumed);
    }
    options.progress.end();
    report.endpoints = sources.report();
    // The manifest last: once it is in the store, everything it names is there.
    store.put_blob(&scratch, &bytes)?;
    let mut descriptor = artifact::manifest_descriptor(&digest, bytes.len() as u64);
    let now = store::unix_now().to_string();
    let resolved_at = [(store::ANNOTATION_RESOLVED_AT.to_string(), now)];
    descriptor.set_annotations(Some(resolved_at.into_iter().collect()));
    let tag = PendingTag {
        name: remote.to_string(),
        descriptor,
        _writing: writing,
    };
    Ok((report, tag))
}

/// The name a pulled artifact gets in the store, not written yet.
#[must_use = "the pulled artifact has no name in the store until the tag is applied"]
#[derive(Debug)]
pub struct PendingTag {
    name: String,
    descriptor: oci_spec::image::Descriptor,
    /// The store's writers lock, shared: `gc` waits until the tag is written.
    _writing: crate::fsutil::FileLock,
}

impl PendingTag {
    /// Syncs the store (a power cut must not leave a tag naming content that never
    /// reached the disk) and writes the tag. Returns the name.
    pub fn apply(self, store: &Store) -> Result<String, store::Error> {
        store.set_ref(&self.name, &self.descriptor)?;
        Ok(self.name)
    }
}

/// The manifest and catalog `remote` names, without its layers (`diff`): the catalog
/// from the first endpoint that serves it, checked against its digest and capped.
pub async fn peek(
    remote: &RemoteRef,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<artifact::Artifact, Error> {
    let sources = Sources::new(remote, options)?;
    let (digest, _, manifest) = resolve_anywhere(&sources, remote, platform).await?;
    let reference = remote.to_string();
    let config = artifact::catalog_digest(&reference, &manifest)?;
    let what = format!("reading the catalog {}", config.oci());
    let read = async |registry: &Arc<Registry>, at: &RemoteRef| {
        let blobs = super::blobs::RegistryBlobs::over(registry.clone(), at.clone());
        blobs.read(&config, artifact::MAX_CATALOG_BYTES).await
    };
    let (_, catalog) = sources.first(what, read).await?;
    Ok(artifact::from_parts(
        &reference, digest, manifest, &catalog,
    )?)
}

/// [`resolve`] at the first endpoint that can; the artifact must be an envoci one
/// wherever it comes from.
async fn resolve_anywhere(
    sources: &Sources,
    remote: &RemoteRef,
    platform: Option<&str>,
) -> Result<(Digest, bytes::Bytes, ImageManifest), Error> {
    let what = format!("resolving {remote}");
    let resolve =
        async |registry: &Arc<Registry>, at: &RemoteRef| resolve(registry, at, platform).await;
    let (i, resolved) = sources.first(what, resolve).await?;
    sources.served_manifest(i);
    Ok(resolved)
}

/// The manifest `remote` names for `platform` — through an index when it is one —
/// checked against the digests that name it and to be an envoci environment.
async fn resolve(
    registry: &Registry,
    remote: &RemoteRef,
    platform: Option<&str>,
) -> Result<(Digest, bytes::Bytes, ImageManifest), Error> {
    let mut bytes = fetch_manifest(registry, remote).await?;
    let mut digest = Digest::of(&bytes);
    if let Some(want) = remote.0.digest() {
        if want != digest.oci() {
            return Err(manifest_mismatch(registry, want.to_string(), digest));
        }
    }
    let index = artifact::parse_index(&bytes)
        .map_err(|e| registry.malformed("reading the manifest", &e))?;
    if let Some(index) = index {
        let want = platform.unwrap_or(artifact::host_platform());
        let chosen = artifact::choose_platform(&index, want).map_err(|what| Error::NotEnvoci {
            reference: remote.to_string(),
            what,
        })?;
        bytes = fetch_manifest(registry, &remote.with_digest(&chosen.digest.oci())).await?;
        digest = Digest::of(&bytes);
        if digest != chosen.digest {
            return Err(manifest_mismatch(registry, chosen.digest.oci(), digest));
        }
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| registry.malformed("reading the manifest", &e))?;
    artifact::check_envoci(&manifest).map_err(|what| Error::NotEnvoci {
        reference: remote.to_string(),
        what: format!("it is {what}"),
    })?;
    let descriptors = std::iter::once(manifest.config()).chain(manifest.layers());
    for descriptor in descriptors {
        if store::from_oci_digest(descriptor.digest()).is_none() {
            let e = format!("unsupported digest {}", descriptor.digest());
            return Err(registry.malformed("reading the manifest", &e));
        }
    }
    Ok((digest, bytes, manifest))
}

fn manifest_mismatch(registry: &Registry, expected: String, actual: Digest) -> Error {
    Error::DigestMismatch {
        registry: registry.host.clone(),
        what: "manifest",
        digest: expected,
        actual: actual.oci(),
    }
}

/// The blobs `manifest` names that the store lacks — config first, each once — with
/// size and media type; those it has are counted as skipped.
fn missing_blobs(
    store: &Store,
    manifest: &ImageManifest,
    report: &mut Report,
) -> Result<Vec<(Digest, u64, String)>, Error> {
    let mut seen = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
        // `resolve` checked every digest parses.
        let Some(digest) = store::from_oci_digest(descriptor.digest()) else {
            continue;
        };
        if !seen.insert(digest) {
            continue;
        }
        if store.has_blob(&digest) {
            report.blobs_skipped += 1;
            report.bytes_skipped += descriptor.size();
        } else {
            let media = descriptor.media_type().to_string();
            missing.push((digest, descriptor.size(), media));
        }
    }
    Ok(missing)
}

/// The platforms `remote` holds when it is a multi-platform index (in its order), or
/// `None` for a single manifest.
pub async fn platforms(
    remote: &RemoteRef,
    options: &RegistryOptions,
) -> Result<Option<Vec<String>>, Error> {
    let registry = Registry::connect(remote, options, RegistryOperation::Pull).await?;
    let bytes = fetch_manifest(&registry, remote).await?;
    let index = artifact::parse_index(&bytes)
        .map_err(|e| registry.malformed("reading the manifest", &e))?;
    Ok(index.map(|index| {
        artifact::envoci_entries(&index)
            .into_iter()
            .map(|e| e.platform)
            .collect()
    }))
}

/// The raw manifest or index `remote` names (retried, size-capped).
async fn fetch_manifest(registry: &Registry, remote: &RemoteRef) -> Result<bytes::Bytes, Error> {
    let accepted = [artifact::MANIFEST_MEDIA_TYPE, artifact::INDEX_MEDIA_TYPE];
    registry.manifest(remote, &accepted).await
}

/// [`fetch_blob`] from the first endpoint that serves the blob.
async fn fetch_blob_anywhere(
    store: &Store,
    scratch: &Arc<store::Scratch>,
    sources: &Sources,
    digest: Digest,
    size: u64,
    layer: Option<(&CatalogLayer, String)>,
) -> Result<(u64, bool), Error> {
    let what = format!("downloading blob {}", digest.oci());
    let fetch = async |registry: &Arc<Registry>, remote: &RemoteRef| {
        let layer = layer.clone();
        fetch_blob(store, scratch, registry, remote, digest, size, layer).await
    };
    let (i, (bytes, resumed)) = sources.first(what, fetch).await?;
    tracing::info!(blob = %digest, endpoint = %sources.remote(i), bytes, resumed, "blob served");
    sources.served_blob(i, &digest, bytes);
    Ok((bytes, resumed))
}

/// Downloads one blob into its partial (continuing what a previous pull left), commits
/// it once its size and digest are right, and extracts it if it is a layer (the
/// catalog's entry for it, and its media type). Returns
/// bytes downloaded now and whether the download was resumed.
async fn fetch_blob(
    store: &Store,
    scratch: &Arc<store::Scratch>,
    registry: &Registry,
    remote: &RemoteRef,
    digest: Digest,
    size: u64,
    layer: Option<(&CatalogLayer, String)>,
) -> Result<(u64, bool), Error> {
    // Taking the partial waits for another process holding it and hashes what is
    // there: blocking work, off the async workers.
    let started = std::time::Instant::now();
    let taker = store.clone();
    let mut partial = blocking(move || taker.partial(&digest)).await?;
    if store.has_blob(&digest) {
        return Ok((0, false)); // another process fetched it meanwhile
    }
    // A layer downloaded from its start is unpacked as it arrives.
    let (unpacking, mut feed) = match &layer {
        Some((layer, media)) if partial.is_empty() => {
            let (unpacking, feed) = Unpacking::start(store, scratch, layer, media);
            (Some(unpacking), Some(feed))
        }
        _ => (None, None),
    };
    let mut attempt = 0;
    let mut total = 0;
    let mut resumed_any = false;
    loop {
        let (back, outcome) = download_once(registry, remote, partial, size, feed.take()).await;
        partial = back;
        match outcome {
            Ok(attempted) => {
                total += attempted.downloaded;
                resumed_any |= attempted.resumed;
                break;
            }
            Err(interrupted) if interrupted.transient && attempt < registry.retries => {
                // Connection cut or the like: continue from what arrived.
                total += interrupted.attempt.downloaded;
                resumed_any |= interrupted.attempt.resumed;
                tokio::time::sleep(super::registry::backoff(attempt)).await;
                attempt += 1;
            }
            Err(interrupted) if interrupted.corrupt => {
                blocking(move || {
                    partial.discard();
                    Ok(())
                })
                .await?;
                return Err(*interrupted.error);
            }
            Err(interrupted) => return Err(*interrupted.error),
        }
    }
    let actual = partial.digest_so_far();
    blocking(move || partial.commit(size))
        .await
        .map_err(|e| match e {
            store::Error::Corrupt { .. } => mismatch(registry, digest, actual),
            other => other.into(),
        })?;
    tracing::debug!(blob = %digest, ms = started.elapsed().as_millis(), "blob downloaded");
    if let Some((layer, media)) = layer {
        let started = std::time::Instant::now();
        let staged = match unpacking {
            Some(unpacking) => unpacking.finish().await,
            None => None,
        };
        let streamed = staged.is_some();
        // The blob's digest is checked (committed above): its staged files can follow.
        // Committed on the blocking pool: every download of this pull is polled by
        // this one task, and a layer's thousands of links and its index's write
        // would hold them all still.
        match staged {
            Some(staged) => {
                let committer = store.clone();
                blocking(move || committer.commit_layer(staged)).await?;
            }
            // A resumed download (rare): unpacked from the committed blob. Other
            // downloads wait meanwhile.
            None => {
                tokio::task::block_in_place(|| store.extract_layer(scratch, layer, &media, false))?;
            }
        }
        let ms = started.elapsed().as_millis();
        tracing::debug!(layer = %digest, files = layer.files, ms, streamed, "layer unpacked");
    }
    Ok((total, resumed_any))
}

/// Runs blocking store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, store::Error> + Send + 'static,
) -> Result<T, store::Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| store::Error::io("run", "a blocking task")(std::io::Error::other(e)))?
}

fn mismatch(registry: &Registry, digest: Digest, actual: Digest) -> Error {
    Error::DigestMismatch {
        registry: registry.host.clone(),
        what: "blob",
        digest: digest.oci(),
        actual: actual.oci(),
    }
}

/// What one download attempt moved.
#[derive(Default)]
struct Attempt {
    /// Bytes received.
    downloaded: u64,
    /// Whether it continued a partial (the registry answered the `Range` with 206).
    resumed: bool,
}

/// A download attempt that failed; `error` says why. Only `transient` failures (the
/// connection, a timeout, 429, 5xx) are retried, continuing after the bytes kept; a
/// `corrupt` blob is discarded.
struct Interrupted {
    attempt: Attempt,
    transient: bool,
    corrupt: bool,
    error: Box<Error>,
}

impl Interrupted {
    fn new(attempt: Attempt, transient: bool, error: Error) -> Self {
        Interrupted {
            attempt,
            transient,
            corrupt: false,
            error: Box::new(error),
        }
    }
}

/// One attempt at downloading the rest of a blob into `partial`: a `Range` request for
/// what it lacks, honoured only if the registry answers 206 (else it starts over). The
/// network is read here; the bytes are written and hashed by a blocking task fed through
/// a bounded channel, so file I/O never runs on the async workers. The partial comes
/// back whatever happened.
async fn download_once(
    registry: &Registry,
    remote: &RemoteRef,
    partial: store::Partial,
    size: u64,
    feed: Option<Feed>,
) -> (store::Partial, Result<Attempt, Interrupted>) {
    let offset = partial.len();
    if offset >= size {
        return (partial, Ok(Attempt::default())); // complete: the commit checks it
    }
    let layer = partial.digest().oci();
    tracing::debug!(method = "GET", registry = %registry.host, blob = %layer, offset, "blob request");
    let (mut body, resumed) = match request_body(registry, remote, &layer, offset).await {
        Ok(ok) => ok,
        Err(error) => {
            let transient = error.is_transient();
            let interrupted = Interrupted::new(Attempt::default(), transient, error);
            return (partial, Err(interrupted));
        }
    };
    let (chunks, writer) = spawn_writer(partial, !resumed, feed.filter(|_| offset == 0), size);
    let start = if resumed { offset } else { 0 };
    let mut received = 0u64;
    let mut stop = None;
    // Small network chunks are gathered into larger writes: fewer hand-offs to the
    // writer, whose queue stays short (memory: a few batches per download).
    let mut pending = bytes::BytesMut::with_capacity(WRITE_BATCH);
    let deadline = tokio::time::Instant::now() + registry.download_budget(size - start);
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, body.stream.next()).await else {
            stop = Some(Stop::TooSlow);
            break;
        };
        let Some(chunk) = next else {
            break;
        };
        match chunk {
            Ok(chunk) if start + received + chunk.len() as u64 > size => {
                stop = Some(Stop::TooLong);
                break;
            }
            Ok(chunk) => {
                received += chunk.len() as u64;
                registry.progress.advance(chunk.len() as u64);
                pending.extend_from_slice(&chunk);
                if pending.len() >= WRITE_BATCH
                    && chunks.send(pending.split().freeze()).await.is_err()
                {
                    break; // the writer failed: its error is reported below
                }
            }
            Err(e) => {
                stop = Some(Stop::Stream(e));
                break;
            }
        }
    }
    // What arrived before a failure is kept too, for the next attempt to continue.
    if !pending.is_empty() {
        let _ = chunks.send(pending.freeze()).await;
    }
    drop(chunks);
    // A blocking task runs to its end once started: the only join error is its panic.
    let (partial, written) = writer
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let attempt = Attempt {
        downloaded: received,
        resumed,
    };
    let outcome = judge(registry, &partial, size, attempt, written, stop);
    (partial, outcome)
}

/// The body of blob `layer`: the rest after `offset` when the registry honours the
/// `Range` (206: true), else all of it (false). Not retried here: the download loop
/// retries, resuming what arrived.
async fn request_body(
    registry: &Registry,
    remote: &RemoteRef,
    layer: &str,
    offset: u64,
) -> Result<(oci_client::client::SizedStream, bool), Error> {
    let what = format!("downloading blob {layer}");
    if offset == 0 {
        let body = registry
            .once(&what, || registry.client.pull_blob_stream(&remote.0, layer))
            .await?;
        return Ok((body, false));
    }
    let response = registry
        .once(&what, || {
            registry
                .client
                .pull_blob_stream_partial(&remote.0, layer, offset, None)
        })
        .await?;
    Ok(match response {
        BlobResponse::Partial(body) => (body, true),
        // The registry ignored the Range: start over.
        BlobResponse::Full(body) => (body, false),
    })
}

/// How an attempt ended: complete, or interrupted — retried when the cause may pass,
/// its partial discarded when the bytes cannot be right.
fn judge(
    registry: &Registry,
    partial: &store::Partial,
    size: u64,
    attempt: Attempt,
    written: Result<(), store::Error>,
    stop: Option<Stop>,
) -> Result<Attempt, Interrupted> {
    let (layer, kept) = (partial.digest().oci(), partial.len());
    let interrupted = |failure: Failure, source: Option<std::io::Error>| {
        registry.error(
            format!(
                "downloading blob {layer} (interrupted; {kept} of {size} bytes kept to resume)"
            ),
            failure,
            source.map(|e| Box::new(e) as super::error::BoxError),
        )
    };
    match (written, stop) {
        (Err(e), _) => Err(Interrupted::new(attempt, false, e.into())),
        (Ok(()), Some(Stop::TooLong)) => {
            let failure = Failure::Integrity {
                detail: "the registry sent more bytes than the manifest says".into(),
            };
            let error = registry.error(format!("downloading blob {layer}"), failure, None);
            Err(Interrupted {
                corrupt: true,
                ..Interrupted::new(attempt, false, error)
            })
        }
        (Ok(()), Some(Stop::TooSlow)) => {
            let failure = Failure::TooSlow {
                min_speed: registry.min_speed,
            };
            Err(Interrupted::new(attempt, true, interrupted(failure, None)))
        }
        (Ok(()), Some(Stop::Stream(e))) => {
            let failure = classify_io(&e, &registry.context).unwrap_or(Failure::Interrupted {
                detail: String::new(),
            });
            if let Failure::Integrity { .. } = failure {
                // oci-client checked the complete blob and found it corrupt: not resumable.
                let error = mismatch(registry, partial.digest(), partial.digest_so_far());
                return Err(Interrupted {
                    corrupt: true,
                    ..Interrupted::new(attempt, false, error)
                });
            }
            let transient = failure.is_transient();
            Err(Interrupted::new(
                attempt,
                transient,
                interrupted(failure, Some(e)),
            ))
        }
        (Ok(()), None) if kept != size => {
            let failure = Failure::Interrupted {
                detail: "the connection ended early".into(),
            };
            Err(Interrupted::new(attempt, true, interrupted(failure, None)))
        }
        (Ok(()), None) => Ok(attempt),
    }
}

/// How many bytes of a download are handed to its writer at a time.
const WRITE_BATCH: usize = 256 << 10;

/// Why reading a blob's body stopped early.
enum Stop {
    /// More bytes than the manifest says.
    TooLong,
    /// Slower than the least speed tolerated.
    TooSlow,
    /// The stream failed.
    Stream(std::io::Error),
}

/// Starts the blocking task that writes a download's chunks into `partial` (emptied
/// first when `restart`) and hands them on to `feed`, which it completes once the
/// partial holds all `size` bytes; it hands the partial back when the channel closes.
#[allow(clippy::type_complexity)]
fn spawn_writer(
    mut partial: store::Partial,
    restart: bool,
    mut feed: Option<Feed>,
    size: u64,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<(store::Partial, Result<(), store::Error>)>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
    let writer = tokio::task::spawn_blocking(move || {
        let mut result = if restart { partial.restart() } else { Ok(()) };
        while let Some(chunk) = rx.blocking_recv() {
            if result.is_ok() {
                result = partial.append(&chunk);
            }
            if result.is_err() {
                break;
            }
            if let Some(feed) = feed.as_mut() {
                feed.send(&chunk);
            }
        }
        if let Some(feed) = feed.filter(|_| result.is_ok() && partial.len() == size) {
            feed.complete();
        }
        (partial, result)
    });
    (tx, writer)
}
