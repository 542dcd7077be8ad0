//! Download packages into the store's persistent package cache (in parallel, each
//! checked against its sha256), then install them into the build prefix with rattler's
//! `Installer`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use rattler::install::{AppleCodeSignBehavior, Installer};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{MatchSpec, RepoDataRecord, Subdir};
use rattler_networking::LazyClient;

use super::Error;

/// What the download phase found and did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Downloads {
    /// Packages fetched (downloaded or copied from a local channel) and extracted.
    pub fetched: usize,
    /// Packages the cache had already.
    pub cached: usize,
}

/// Makes sure every record is in `cache`, fetching `jobs` at a time; returns each
/// record's extracted directory, in the records' order (their `paths.json` say how
/// long the build prefix may be).
pub async fn download(
    cache: &PackageCache,
    records: &[RepoDataRecord],
    jobs: usize,
) -> Result<(Downloads, Vec<PathBuf>), Error> {
    let index = cache
        .index()
        .await
        .map_err(|e| Error::Io("read the package cache".into(), e))?;
    let missing = records.iter().filter(|r| !index.contains_record(r)).count();
    let client = LazyClient::default();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    // A package the cache holds is found there, not fetched again.
    let dirs = stream::iter(records.iter().map(|record| {
        let client = client.clone();
        let semaphore = semaphore.clone();
        async move { fetch(cache, record, client, semaphore).await }
    }))
    .buffered(jobs.max(1))
    .try_collect::<Vec<PathBuf>>()
    .await?;
    let downloads = Downloads {
        fetched: missing,
        cached: records.len() - missing,
    };
    Ok((downloads, dirs))
}

async fn fetch(
    cache: &PackageCache,
    record: &RepoDataRecord,
    client: LazyClient,
    semaphore: Arc<tokio::sync::Semaphore>,
) -> Result<PathBuf, Error> {
    let failed = |e: rattler::package_cache::PackageCacheError| Error::Fetch {
        package: record.identifier.to_string(),
        url: record.url.to_string(),
        reason: crate::error_chain(&e),
    };
    let entry = if record.url.scheme() == "file" {
        let path = record.url.to_file_path().map_err(|()| Error::Fetch {
            package: record.identifier.to_string(),
            url: record.url.to_string(),
            reason: "not a local path".into(),
        })?;
        cache
            .get_or_fetch_from_path(&path, Some(&record.package_record), None)
            .await
            .map_err(failed)?
    } else {
        cache
            .get_or_fetch_from_url_with_retry(
                &record.package_record,
                record.url.clone(),
                client,
                rattler_networking::retry_policies::default_retry_policy(),
                None,
                Some(semaphore),
            )
            .await
            .map_err(failed)?
    };
    Ok(entry.path().to_path_buf())
}

/// Installs `records` into `prefix` from `cache` (every package is there already).
/// Nothing runs: no link scripts, and for another platform no ad-hoc code signing of
/// macOS binaries whose placeholder was replaced (`codesign` is macOS's; a restore
/// rewrites those bytes again anyway).
pub async fn install(
    cache: PackageCache,
    prefix: &Path,
    records: Vec<RepoDataRecord>,
    requested: Vec<MatchSpec>,
    platform: Subdir,
) -> Result<(), Error> {
    let signing = if super::runs_here(platform) {
        AppleCodeSignBehavior::default()
    } else {
        AppleCodeSignBehavior::DoNothing
    };
    Installer::new()
        .with_package_cache(cache)
        .with_target_platform(platform)
        .with_apple_code_signing_behavior(signing)
        .with_execute_link_scripts(false)
        .with_requested_specs(requested)
        .install(prefix, records)
        .await
        .map_err(|e| Error::Install(crate::error_chain(&e)))?;
    Ok(())
}
