//! Push: store → registry. Every blob is asked for first (HEAD) and only missing ones
//! are uploaded, streamed from the store, several at a time; the config goes before the
//! manifest, and the manifest — the exact bytes of the store's, so its digest is kept —
//! goes last, under the user's tag and the blueprint tag.

use futures_util::stream;
use oci_client::RegistryOperation;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Error, Registry, RegistryOptions, RemoteRef, Report};
use crate::artifact::{self, Artifact, IndexEntry};
use crate::digest::Digest;
use crate::store::Store;

/// Pushes the local artifact `local` (tag or digest) to `remote`.
pub async fn push(
    store: &Store,
    local: &str,
    remote: &RemoteRef,
    options: &RegistryOptions,
) -> Result<Report, Error> {
    let artifact = artifact::load(store, local)?;
    let manifest = store.read_blob(&artifact.digest)?;
    // Pushes go to the registry's location (registries.conf may move it), never to
    // a mirror.
    let (remote, options) = &options.mirrors.location(remote, options)?;
    let registry = Registry::connect(remote, options, RegistryOperation::Push).await?;
    let mut report = Report {
        reference: remote.to_string(),
        digest: artifact.digest.oci(),
        ..Report::default()
    };
    send_blobs(
        store,
        &registry,
        remote,
        &artifact,
        options.jobs,
        &mut report,
    )
    .await?;
    put_manifests(&registry, remote, &artifact, manifest).await?;
    Ok(report)
}

/// Gets every blob of `artifact` to the registry — layers first, the catalog next, a
/// blob shared by two layers once — unless the registry holds the manifest already (it
/// accepts a manifest only once it has every blob it names).
async fn send_blobs(
    store: &Store,
    registry: &Registry,
    remote: &RemoteRef,
    artifact: &Artifact,
    jobs: usize,
    report: &mut Report,
) -> Result<(), Error> {
    let blobs = artifact.blobs();
    let by_digest = remote.with_digest(&artifact.digest.oci());
    let accepted = [artifact::MANIFEST_MEDIA_TYPE];
    let complete = registry
        .manifest(&by_digest, &accepted)
        .await
        .is_ok_and(|bytes| Digest::of(&bytes) == artifact.digest);
    if complete {
        report.blobs_skipped = blobs.len() as u64;
        report.bytes_skipped = crate::sum_sizes(blobs.iter().map(|(_, s)| s));
        return Ok(());
    }
    let sources = mount_sources(store, remote);
    let total = crate::sum_sizes(blobs.iter().map(|(_, size)| size));
    let progress = &registry.progress;
    progress.begin("pushing", total, crate::progress::Unit::Bytes);
    let sent = super::bounded(blobs, jobs, |(digest, size)| {
        let source = sources.get(&digest);
        async move {
            let sent = push_blob(store, registry, remote, source, digest, size).await;
            progress.advance(size);
            sent
        }
    })
    .await?;
    progress.end();
    for (how, size) in sent {
        match how {
            Sent::Uploaded => {
                report.blobs_transferred += 1;
                report.bytes_transferred += size;
            }
            Sent::Mounted => {
                report.blobs_mounted += 1;
                report.bytes_skipped += size;
            }
            Sent::Present => {
                report.blobs_skipped += 1;
                report.bytes_skipped += size;
            }
        }
    }
    Ok(())
}

/// Puts the manifest — by digest first, so an index can point at it — then under the
/// tag (as itself, or as an index merging it with the other platforms there), then
/// under the blueprint tag.
async fn put_manifests(
    registry: &Registry,
    remote: &RemoteRef,
    artifact: &Artifact,
    manifest: Vec<u8>,
) -> Result<(), Error> {
    let manifest_type = artifact::MANIFEST_MEDIA_TYPE;
    let by_digest = remote.with_digest(&artifact.digest.oci());
    put_manifest(registry, &by_digest, manifest.clone(), manifest_type).await?;
    let platform = &artifact.catalog.platform;
    let ours = IndexEntry {
        digest: artifact.digest,
        size: manifest.len() as u64,
        platform: platform.clone(),
    };
    match merged_index(registry, remote, &ours).await? {
        Some(index) => put_manifest(registry, remote, index, artifact::INDEX_MEDIA_TYPE).await?,
        None => put_manifest(registry, remote, manifest.clone(), manifest_type).await?,
    }
    if let Some(bp) = &artifact.catalog.blueprint {
        let tag = remote.with_tag(&artifact::blueprint_tag(bp, platform));
        put_manifest(registry, &tag, manifest, manifest_type).await?;
    }
    Ok(())
}

async fn put_manifest(
    registry: &Registry,
    target: &RemoteRef,
    body: Vec<u8>,
    media_type: &'static str,
) -> Result<(), Error> {
    registry
        .retry(&format!("pushing the manifest to {target}"), || {
            registry.client.push_manifest_raw(
                &target.0,
                body.clone(),
                http::HeaderValue::from_static(media_type),
            )
        })
        .await?;
    Ok(())
}

/// What the tag should become when `ours` is pushed to it: `None` for a plain manifest
/// (nothing there, the same platform, or something that is not envoci's), or an index
/// of `ours` plus the other platforms already there.
async fn merged_index(
    registry: &Registry,
    remote: &RemoteRef,
    ours: &IndexEntry,
) -> Result<Option<Vec<u8>>, Error> {
    let accepted = [artifact::MANIFEST_MEDIA_TYPE, artifact::INDEX_MEDIA_TYPE];
    let bytes = match registry.manifest(remote, &accepted).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == super::ErrorKind::NotFound => return Ok(None),
        // Anything else: the other platforms under the tag must not be lost.
        Err(e) => return Err(e),
    };
    let mut entries = match artifact::parse_index(&bytes) {
        Ok(Some(index)) => artifact::envoci_entries(&index),
        Ok(None) => match envoci_manifest_entry(&bytes) {
            Some(entry) => vec![entry],
            None => return Ok(None),
        },
        Err(_) => return Ok(None),
    };
    entries.retain(|e| e.platform != ours.platform);
    if entries.is_empty() {
        return Ok(None);
    }
    entries.push(ours.clone());
    Ok(Some(artifact::index_document(entries).map_err(|e| {
        registry.malformed("writing the index", &e)
    })?))
}

/// The index entry of an envoci manifest already under a tag (its platform from its
/// annotation), or `None` for anything else.
fn envoci_manifest_entry(bytes: &[u8]) -> Option<IndexEntry> {
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(bytes).ok()?;
    artifact::check_envoci(&manifest).ok()?;
    let platform = manifest
        .annotations()
        .as_ref()?
        .get(artifact::ANNOTATION_PLATFORM)?
        .clone();
    Some(IndexEntry {
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        platform,
    })
}

/// A file as a stream of 1 MiB chunks, for uploading without holding it in memory.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, oci_client::errors::OciDistributionError>>
{
    stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((
                Err(oci_client::errors::OciDistributionError::IoError(e)),
                file,
            )),
        }
    })
}

/// How a blob got to the registry.
enum Sent {
    /// It was there already.
    Present,
    /// Mounted from another repository of the same registry: no bytes moved.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Blobs of artifacts in the store that came from another repository of `remote`'s
/// registry (the store names pulled artifacts by their reference): the registry can
/// mount those instead of receiving them again.
fn mount_sources(
    store: &Store,
    remote: &RemoteRef,
) -> std::collections::HashMap<Digest, RemoteRef> {
    let mut sources = std::collections::HashMap::new();
    for tag in store.tags().unwrap_or_default() {
        let Ok(source) = RemoteRef::parse(&tag.name) else {
            continue;
        };
        if source.registry() != remote.registry() || source.0.repository() == remote.0.repository()
        {
            continue;
        }
        let Ok(artifact) = artifact::load(store, &tag.name) else {
            continue;
        };
        for (digest, _) in artifact.blobs() {
            sources.entry(digest).or_insert_with(|| source.clone());
        }
    }
    sources
}

/// Gets one blob to the registry unless it has it: mounted from `source` when the
/// registry agrees (201), else uploaded (a 202 or an error only means "upload").
async fn push_blob(
    store: &Store,
    registry: &Registry,
    remote: &RemoteRef,
    source: Option<&RemoteRef>,
    digest: Digest,
    size: u64,
) -> Result<(Sent, u64), Error> {
    let name = digest.oci();
    let exists = registry
        .retry(&format!("checking blob {digest}"), || {
            registry.client.blob_exists(&remote.0, &name)
        })
        .await?;
    if exists {
        return Ok((Sent::Present, size));
    }
    if let Some(source) = source {
        if registry
            .client
            .mount_blob(&remote.0, &source.0, &name)
            .await
            .is_ok()
        {
            return Ok((Sent::Mounted, size));
        }
    }
    // A failure to open the blob is the store's, not the registry's: open it first.
    let blob = tokio::task::block_in_place(|| store.open_blob(&digest))?;
    let blob = tokio::fs::File::from_std(blob);
    // Each attempt streams the file from its start again.
    registry
        .retry(&format!("uploading blob {digest}"), || async {
            let mut file = blob.try_clone().await?;
            file.seek(std::io::SeekFrom::Start(0)).await?;
            registry
                .client
                .push_blob_stream(&remote.0, file_chunks(file), &name, Some(size))
                .await
        })
        .await?;
    Ok((Sent::Uploaded, size))
}
