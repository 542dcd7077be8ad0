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

use super::registry::is_transient;
use super::{Error, Registry, RegistryOptions, RemoteRef, Report};
use crate::catalog::{self, CATALOG_MEDIA_TYPE};
use crate::digest::Digest;
use crate::fsutil::FileLock;
use crate::store::{self, Store};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

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
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| registry.error("reading the manifest", e))?;
    if is_index(&value) {
        let chosen = choose_platform(&value, platform, &remote.to_string())?;
        bytes = fetch_manifest(&registry, &remote.with_digest(&chosen)).await?;
        digest = Digest::of(&bytes);
        if digest.oci() != chosen {
            return Err(Error::DigestMismatch {
                registry: registry.host.clone(),
                what: "manifest",
                digest: chosen,
                actual: digest.oci(),
            });
        }
    }
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| registry.error("reading the manifest", e))?;
    check_envoci(&manifest, &remote.to_string())?;

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
        let parsed = Digest::parse(&d).map_err(|e| registry.error("reading the manifest", e))?;
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
    let descriptor = catalog::manifest_descriptor(&digest, bytes.len() as u64);
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
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| registry.error("reading the manifest", e))?;
    if !is_index(&value) {
        return Ok(None);
    }
    Ok(Some(
        value["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["annotations"][store::ANNOTATION_PLATFORM].as_str())
            .map(str::to_string)
            .collect(),
    ))
}

/// Whether a manifest document is an image index (several platforms).
pub(super) fn is_index(value: &serde_json::Value) -> bool {
    value.get("mediaType").and_then(|m| m.as_str()) == Some(OCI_INDEX)
        || value.get("manifests").is_some()
}

/// The digest of `platform`'s manifest (default this machine's) in an index, or an
/// error listing the platforms it has.
pub(super) fn choose_platform(
    index: &serde_json::Value,
    platform: Option<&str>,
    reference: &str,
) -> Result<String, Error> {
    let want = platform.unwrap_or(catalog::host_platform());
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let platform_of = |m: &serde_json::Value| {
        m["annotations"][store::ANNOTATION_PLATFORM]
            .as_str()
            .map(str::to_string)
    };
    entries
        .iter()
        .find(|m| platform_of(m).as_deref() == Some(want))
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::NotEnvoci {
            reference: reference.to_string(),
            what: format!(
                "it has no {want} environment (platforms present: {})",
                entries
                    .iter()
                    .filter_map(platform_of)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Refuses a manifest whose config is not an envoci catalog, saying what it is.
pub(super) fn check_envoci(
    manifest: &oci_spec::image::ImageManifest,
    reference: &str,
) -> Result<(), Error> {
    let config_type = manifest.config().media_type().to_string();
    if config_type == CATALOG_MEDIA_TYPE {
        return Ok(());
    }
    let what = if config_type.contains("image.config") || config_type.contains("container.image") {
        "it is a container image".to_string()
    } else {
        format!("its config is {config_type}")
    };
    Err(Error::NotEnvoci {
        reference: reference.to_string(),
        what,
    })
}

/// The raw manifest or index `remote` names (retried; "not found" says so).
async fn fetch_manifest(registry: &Registry, remote: &RemoteRef) -> Result<bytes::Bytes, Error> {
    let accepted = [super::push::MANIFEST_MEDIA_TYPE, OCI_INDEX];
    let (bytes, _) = registry
        .retry(|| {
            registry
                .client
                .pull_manifest_raw(&remote.0, &registry.auth, &accepted)
        })
        .await
        .map_err(|e| not_found_or(registry, remote, e))?;
    Ok(bytes)
}

fn not_found_or(
    registry: &Registry,
    remote: &RemoteRef,
    e: oci_client::errors::OciDistributionError,
) -> Error {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if ["manifest unknown", "name unknown", "not found", "404"]
        .iter()
        .any(|k| lower.contains(k))
    {
        return Error::NotFound {
            reference: remote.to_string(),
        };
    }
    registry.error(format!("pulling the manifest of {remote}"), e)
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
    let _permit = registry
        .limit
        .acquire()
        .await
        .map_err(|e| registry.error("scheduling", e))?;
    let partial = store.partial_path(&digest);
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir).map_err(store::Error::io("create directory", dir))?;
    }
    let lock_path = store
        .locks_dir()
        .join(format!("partial-{}.lock", digest.hex()));
    let _lock = tokio::task::spawn_blocking(move || {
        FileLock::exclusive(&lock_path).map_err(store::Error::io("lock", lock_path))
    })
    .await
    .map_err(|e| registry.error("locking", e))??;
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
        transient: is_transient(&e),
        error: registry.error(format!("downloading blob {digest}"), e),
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
    let interrupted = |offset: u64, reason: String| Interrupted {
        downloaded: offset - start,
        resumed,
        transient: true,
        error: registry.error(
            format!(
                "downloading blob {digest} (interrupted; {offset} of {size} bytes kept to resume)"
            ),
            reason,
        ),
    };
    while let Some(chunk) = body.stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) if e.to_string().to_lowercase().contains("digest") => {
                // oci-client checked the complete blob: corrupt, so not resumable.
                let actual = Digest(hasher.finalize().into());
                return Err(discard(offset - start, resumed, mismatch(actual)));
            }
            Err(e) => return Err(interrupted(offset, e.to_string())),
        };
        if offset + chunk.len() as u64 > size {
            let what = format!("downloading blob {digest}");
            let error = registry.error(what, "the registry sent more bytes than the manifest says");
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
        return Err(interrupted(offset, "the connection ended early".into()));
    }
    let actual = Digest(hasher.finalize().into());
    if actual != digest {
        return Err(discard(offset - start, resumed, mismatch(actual)));
    }
    Ok((offset - start, resumed))
}
