//! The lock file: the solved package list (URL + sha256 of every package), in rattler's
//! lock format (the one pixi writes), one environment `default` and one platform.
//! Building from a lock skips solving and checks every downloaded package against it.

use std::path::Path;

use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_lock::{LockFile, PlatformData};

use super::Error;
use crate::spec::Spec;

/// The environment name used in envoci's lock files.
pub const ENVIRONMENT: &str = "default";

/// Writes `records` for `platform` as a lock file at `path` (atomically).
pub fn write(
    path: &Path,
    spec: &Spec,
    platform: Subdir,
    records: &[RepoDataRecord],
) -> Result<(), Error> {
    let lock_error = |reason: String| Error::Lock {
        path: path.to_path_buf(),
        reason,
    };
    let channels = super::solve::channels(spec)?;
    let mut builder = LockFile::builder()
        .with_platforms(vec![PlatformData {
            name: (&platform).into(),
            subdir: platform,
            virtual_packages: Vec::new(),
        }])
        .map_err(|e| lock_error(e.to_string()))?
        .with_channels(
            ENVIRONMENT,
            channels
                .iter()
                .map(|c| rattler_lock::Channel::from(c.base_url.as_str())),
        );
    let name = platform.to_string();
    for record in records {
        builder
            .add_conda_package(ENVIRONMENT, &name, record.clone().into())
            .map_err(|e| lock_error(e.to_string()))?;
    }
    let text = builder
        .finish()
        .render_to_string()
        .map_err(|e| lock_error(e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| lock_error(e.to_string()))
}

/// Reads the records for `platform` from the lock file at `path`.
pub fn read(path: &Path, platform: Subdir) -> Result<Vec<RepoDataRecord>, Error> {
    let lock_error = |reason: String| Error::Lock {
        path: path.to_path_buf(),
        reason,
    };
    let lock = LockFile::from_path(path).map_err(|e| lock_error(crate::error_chain(&e)))?;
    let env = lock
        .environment(ENVIRONMENT)
        .or_else(|| lock.environments().next().map(|(_, e)| e))
        .ok_or_else(|| lock_error("it holds no environment".into()))?;
    let name = platform.to_string();
    let records = lock
        .platform(&name)
        .map(|p| env.conda_repodata_records(p))
        .transpose()
        .map_err(|e| lock_error(e.to_string()))?
        .flatten()
        .ok_or_else(|| lock_error(format!("it has no packages for {name}")))?;
    if records.iter().any(|r| r.package_record.sha256.is_none()) {
        return Err(lock_error(
            "a package has no sha256; envoci only builds from locks that pin hashes".into(),
        ));
    }
    Ok(records)
}
