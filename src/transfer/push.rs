//! Push: store → registry. Every blob is asked for first (HEAD) and only missing ones
//! are uploaded, streamed from the store, several at a time; the config goes before the
//! manifest, and the manifest — the exact bytes of the store's, so its digest is kept —
//! goes last, under the user's tag and the blueprint tag.

use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_client::RegistryOperation;
use tokio::io::AsyncReadExt;

use super::{Error, Registry, RegistryOptions, RemoteRef, Report};
use crate::catalog;
use crate::digest::Digest;
use crate::store::Store;

/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes the local artifact `local` (tag or digest) to `remote`.
pub async fn push(
    store: &Store,
    local: &str,
    remote: &RemoteRef,
    options: &RegistryOptions,
) -> Result<Report, Error> {
    let artifact = catalog::load(store, local)?;
    let manifest = store.read_blob(&artifact.digest)?;
    let registry = Registry::connect(remote, options, RegistryOperation::Push).await?;

    let config = (
        crate::store::from_oci_digest(artifact.manifest.config().digest()),
        artifact.manifest.config().size(),
    );
    let mut blobs: Vec<(Digest, u64)> = artifact
        .manifest
        .layers()
        .iter()
        .map(|d| (crate::store::from_oci_digest(d.digest()), d.size()))
        .filter_map(|(d, s)| d.map(|d| (d, s)))
        .collect();
    // Layers first, config next; a blob shared by two layers is sent once.
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|(d, _)| seen.insert(*d));
    if let (Some(d), s) = config {
        if seen.insert(d) {
            blobs.push((d, s));
        }
    }

    let results: Vec<(bool, u64)> = stream::iter(blobs)
        .map(|(digest, size)| push_blob(store, &registry, remote, digest, size))
        .buffer_unordered(options.jobs.max(1))
        .try_collect()
        .await?;
    let mut report = Report {
        reference: remote.to_string(),
        digest: artifact.digest.oci(),
        ..Report::default()
    };
    for (sent, size) in results {
        if sent {
            report.blobs_transferred += 1;
            report.bytes_transferred += size;
        } else {
            report.blobs_skipped += 1;
            report.bytes_skipped += size;
        }
    }

    let mut targets = vec![remote.clone()];
    if let Some(bp) = &artifact.catalog.blueprint {
        targets.push(remote.with_tag(&format!(
            "bp-{}-{}",
            &bp[..32.min(bp.len())],
            artifact.catalog.platform
        )));
    }
    for target in targets {
        let content_type = http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
        registry
            .client
            .push_manifest_raw(&target.0, manifest.clone(), content_type)
            .await
            .map_err(|e| registry.error(format!("pushing the manifest to {target}"), e))?;
    }
    Ok(report)
}

/// Uploads one blob unless the registry has it. Returns whether it was sent.
async fn push_blob(
    store: &Store,
    registry: &Registry,
    remote: &RemoteRef,
    digest: Digest,
    size: u64,
) -> Result<(bool, u64), Error> {
    let _permit = registry
        .limit
        .acquire()
        .await
        .map_err(|e| registry.error("scheduling", e))?;
    let exists = registry
        .client
        .blob_exists(&remote.0, &digest.oci())
        .await
        .map_err(|e| registry.error(format!("checking blob {digest}"), e))?;
    if exists {
        return Ok((false, size));
    }
    let path = store.blob_path(&digest);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(crate::store::Error::io("open", &path))?;
    let chunks = stream::unfold(file, |mut file| async move {
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
    });
    registry
        .client
        .push_blob_stream(&remote.0, chunks, &digest.oci(), Some(size))
        .await
        .map_err(|e| registry.error(format!("uploading blob {digest}"), e))?;
    Ok((true, size))
}
