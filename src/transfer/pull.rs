//! Pull: registry → store. Resolves the reference (an index picks this platform),
//! stores manifest and catalog, then downloads only the layers the store lacks, several
//! at a time, each streamed to a partial file that survives interruption: the next
//! pull continues it with a `Range` request (a 206 with the right offset is required;
//! a 200 starts over). Every blob is verified before it is committed, and each layer is
//! extracted into the file CAS as soon as it is complete.

use std::io::{Read, Write};
use std::path::Path;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::RegistryOperation;
use sha2::Digest as _;

use super::error::{classify_io, Failure};
use super::{Error, Registry, RegistryOptions, RemoteRef, Report};
use crate::artifact::{self, CATALOG_MEDIA_TYPE};
use crate::digest::Digest;
use crate::fsutil::FileLock;
use crate::store::{self, Store};

/// Pulls `remote` into `store` (for `platform`, default this machine's). Returns the
/// report and the local name the artifact got (the full reference).
pub async fn pull(
    store: &Store,
    remote: &RemoteRef,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<(Report, String), Error> {
    let registry = Registry::connect(remote, options, RegistryOperation::Pull).await?;
    let mut bytes = fetch_manifest(&registry, remote).await?;
    let mut digest = Digest::of(&bytes);
    if let Some(want) = remote.0.digest() {
        if want != digest.oci() {
            return Err(Error::DigestMismatch {
                registry: registry.host.clone(),
                what: "manifest",
                digest: want.into(),
                actual: digest.oci(),
            });
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
        bytes = fetch_manifest(&registry, &remote.with_digest(&chosen.digest.oci())).await?;
        digest = Digest::of(&bytes);
        if digest != chosen.digest {
            return Err(Error::DigestMismatch {
                registry: registry.host.clone(),
                what: "manifest",
                digest: chosen.digest.oci(),
                actual: digest.oci(),
            });
        }
    }
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| registry.malformed("reading the manifest", &e))?;
    artifact::check_envoci(&manifest).map_err(|what| Error::NotEnvoci {
        reference: remote.to_string(),
        what: format!("it is {what}"),
    })?;

    let scratch = store.scratch()?;
    let mut report = Report {
        reference: remote.to_string(),
        digest: digest.oci(),
        ..Report::default()
    };
    let mut blobs = vec![(
        manifest.config().digest().to_string(),
        manifest.config().size(),
        manifest.config().media_type().to_string(),
    )];
    blobs.extend(
        manifest
            .layers()
            .iter()
            .map(|d| (d.digest().to_string(), d.size(), d.media_type().to_string())),
    );
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|(d, _, _)| seen.insert(d.clone()));
    let mut missing = Vec::new();
    for (d, size, media) in blobs {
        let parsed =
            Digest::parse(&d).map_err(|e| registry.malformed("reading the manifest", &e))?;
        if store.has_blob(&parsed) {
            report.blobs_skipped += 1;
            report.bytes_skipped += size;
        } else {
            missing.push((parsed, size, media));
        }
    }
    let fetched: Vec<(u64, bool)> = stream::iter(missing)
        .map(|(d, size, media)| fetch_blob(store, &scratch, &registry, remote, d, size, media))
        .buffer_unordered(options.jobs.max(1))
        .try_collect()
        .await?;
    for (bytes, resumed) in fetched {
        report.blobs_transferred += 1;
        report.bytes_transferred += bytes;
        report.blobs_resumed += u64::from(resumed);
    }
    // The manifest last: once it is in the store, everything it names is there.
    store.put_blob(&scratch, &bytes)?;
    let local = remote.to_string();
    let descriptor = artifact::manifest_descriptor(&digest, bytes.len() as u64);
    store.set_ref(&local, &descriptor)?;
    Ok((report, local))
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

/// The raw manifest or index `remote` names (retried).
async fn fetch_manifest(registry: &Registry, remote: &RemoteRef) -> Result<bytes::Bytes, Error> {
    let accepted = [artifact::MANIFEST_MEDIA_TYPE, artifact::INDEX_MEDIA_TYPE];
    let (bytes, _) = registry
        .retry(|| {
            registry
                .client
                .pull_manifest_raw(&remote.0, &registry.auth, &accepted)
        })
        .await
        .map_err(|e| registry.fail(format!("pulling the manifest of {remote}"), e))?;
    Ok(bytes)
}

/// Downloads one blob into a partial file (continuing one a previous pull left), checks
/// it, commits it, and extracts it if it is a layer. Returns bytes downloaded now and
/// whether the download was resumed.
async fn fetch_blob(
    store: &Store,
    scratch: &store::Scratch,
    registry: &Registry,
    remote: &RemoteRef,
    digest: Digest,
    size: u64,
    media: String,
) -> Result<(u64, bool), Error> {
    let partial = store.partial_path(&digest);
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir).map_err(store::Error::io("create directory", dir))?;
    }
    let lock_path = store
        .locks_dir()
        .join(format!("partial-{}.lock", digest.hex()));
    let lock = {
        let lock_path = lock_path.clone();
        tokio::task::spawn_blocking(move || FileLock::exclusive(&lock_path)).await
    };
    let _lock = lock
        .map_err(std::io::Error::other)
        .and_then(|locked| locked)
        .map_err(store::Error::io("lock", lock_path))?;
    if store.has_blob(&digest) {
        return Ok((0, false)); // another process fetched it meanwhile
    }
    let mut attempt = 0;
    let mut total = 0;
    let mut resumed_any = false;
    loop {
        match download_once(registry, remote, digest, size, &partial).await {
            Ok((bytes, resumed)) => {
                total += bytes;
                resumed_any |= resumed;
                break;
            }
            Err(Interrupted {
                downloaded,
                resumed,
                transient: true,
                ..
            }) if attempt < registry.retries => {
                // Connection cut or the like: continue from what arrived.
                total += downloaded;
                resumed_any |= resumed;
                tokio::time::sleep(super::registry::backoff(attempt)).await;
                attempt += 1;
            }
            Err(Interrupted { error, .. }) => return Err(error),
        }
    }
    store.commit_file(&partial, &digest)?;
    if media != CATALOG_MEDIA_TYPE {
        // Extract while other downloads go on.
        tokio::task::block_in_place(|| store.extract_layer(scratch, &digest, &media, false))?;
    }
    Ok((total, resumed_any))
}

/// A download attempt that failed; `error` says why. Only `transient` failures (the
/// connection, a timeout, 429, 5xx) are retried; the `downloaded` bytes were kept.
struct Interrupted {
    downloaded: u64,
    resumed: bool,
    transient: bool,
    error: Error,
}

impl From<store::Error> for Interrupted {
    fn from(e: store::Error) -> Self {
        Interrupted {
            downloaded: 0,
            resumed: false,
            transient: false,
            error: e.into(),
        }
    }
}

/// One attempt at downloading a blob into `partial`, continuing what is there: a
/// `Range` request for the rest, honoured only if the registry answers 206.
async fn download_once(
    registry: &Registry,
    remote: &RemoteRef,
    digest: Digest,
    size: u64,
    partial: &Path,
) -> Result<(u64, bool), Interrupted> {
    let request_failed = |e: oci_client::errors::OciDistributionError| Interrupted {
        downloaded: 0,
        resumed: false,
        transient: registry.is_transient(&e),
        error: registry.fail(format!("downloading blob {digest}"), e),
    };
    // Hash what a previous attempt left, then continue after it.
    let mut hasher = sha2::Sha256::new();
    let mut offset = 0u64;
    if let Ok(mut f) = std::fs::File::open(partial) {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(store::Error::io("read", partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
    }
    let layer = digest.oci();
    let mut resumed = false;
    let mut body = if offset > 0 && offset < size {
        match registry
            .client
            .pull_blob_stream_partial(&remote.0, layer.as_str(), offset, None)
            .await
            .map_err(request_failed)?
        {
            BlobResponse::Partial(s) => {
                resumed = true;
                s
            }
            // The registry ignored the Range: start over.
            BlobResponse::Full(s) => s,
        }
    } else {
        registry
            .client
            .pull_blob_stream(&remote.0, layer.as_str())
            .await
            .map_err(request_failed)?
    };
    if !resumed {
        hasher = sha2::Sha256::new();
        offset = 0;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!resumed)
        .open(partial)
        .map_err(store::Error::io("open", partial))?;
    if resumed {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(store::Error::io("seek", partial))?;
    }
    let start = offset;
    // A blob that cannot be right: its partial file goes, and the attempt is not retried.
    let discard = |downloaded: u64, resumed: bool, error: Error| {
        let _ = std::fs::remove_file(partial);
        Interrupted {
            downloaded,
            resumed,
            transient: false,
            error,
        }
    };
    let mismatch = |actual: Digest| Error::DigestMismatch {
        registry: registry.host.clone(),
        what: "blob",
        digest: digest.oci(),
        actual: actual.oci(),
    };
    let interrupted = |offset: u64, failure: Failure, source: Option<std::io::Error>| Interrupted {
        downloaded: offset - start,
        resumed,
        transient: failure.is_transient(),
        error: registry.error(
            format!(
                "downloading blob {digest} (interrupted; {offset} of {size} bytes kept to resume)"
            ),
            failure,
            source.map(|e| Box::new(e) as super::error::BoxError),
        ),
    };
    while let Some(chunk) = body.stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let failure = classify_io(&e, &registry.context).unwrap_or(Failure::Interrupted {
                    detail: String::new(),
                });
                if let Failure::Integrity { .. } = failure {
                    // oci-client checked the complete blob: corrupt, so not resumable.
                    let actual = Digest(hasher.finalize().into());
                    return Err(discard(offset - start, resumed, mismatch(actual)));
                }
                return Err(interrupted(offset, failure, Some(e)));
            }
        };
        if offset + chunk.len() as u64 > size {
            let failure = Failure::Integrity {
                detail: "the registry sent more bytes than the manifest says".into(),
            };
            let error = registry.error(format!("downloading blob {digest}"), failure, None);
            return Err(discard(offset - start, resumed, error));
        }
        file.write_all(&chunk)
            .map_err(store::Error::io("write", partial))?;
        hasher.update(&chunk);
        offset += chunk.len() as u64;
    }
    file.flush().map_err(store::Error::io("write", partial))?;
    drop(file);
    if offset != size {
        let failure = Failure::Interrupted {
            detail: "the connection ended early".into(),
        };
        return Err(interrupted(offset, failure, None));
    }
    let actual = Digest(hasher.finalize().into());
    if actual != digest {
        return Err(discard(offset - start, resumed, mismatch(actual)));
    }
    Ok((offset - start, resumed))
}
