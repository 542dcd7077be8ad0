//! Solve: channels → repodata (rattler's gateway) → the package set (resolvo).

use std::path::Path;

use rattler_conda_types::{Channel, ChannelConfig, RepoDataRecord, Subdir};
use rattler_repodata_gateway::Gateway;
use rattler_solve::{SolverImpl, SolverTask};
use rattler_virtual_packages::{VirtualPackageOverrides, VirtualPackages};

use super::Error;
use crate::spec::Spec;

/// The channels of `spec`: names (`conda-forge`), URLs (`https://…`, `file://…`) or
/// directories relative to the spec's own directory.
pub fn channels(spec: &Spec) -> Result<Vec<Channel>, Error> {
    let config = ChannelConfig::default_with_root_dir(spec.dir.clone());
    spec.channels
        .iter()
        .map(|c| {
            let resolved = resolve_local(c, &spec.dir);
            Channel::from_str(&resolved, &config).map_err(|e| Error::Channel {
                channel: c.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// A relative directory (`./channel`, `channel`) becomes an absolute path when it exists
/// beside the spec, so that a bare directory name is not taken for a channel name.
fn resolve_local(channel: &str, dir: &Path) -> String {
    if channel.contains("://") || channel.starts_with('/') {
        return channel.to_string();
    }
    let candidate = dir.join(channel);
    if candidate.is_dir() {
        return candidate.to_string_lossy().into_owned();
    }
    channel.to_string()
}

/// The virtual packages to solve against: detected on this machine for its own platform,
/// a platform's baseline otherwise.
pub fn virtual_packages(
    platform: Subdir,
) -> Result<Vec<rattler_conda_types::GenericVirtualPackage>, Error> {
    let detected =
        VirtualPackages::detect_for_platform(platform, &VirtualPackageOverrides::default(), None)
            .map_err(|e| Error::Solve(format!("cannot detect virtual packages: {e}")))?;
    Ok(detected.into_generic_virtual_packages().collect())
}

/// Fetches repodata for `spec`'s dependencies (recursively) and solves them for
/// `platform`. Returns the records in the solver's order.
pub async fn solve(
    spec: &Spec,
    platform: Subdir,
    cache_dir: &Path,
) -> Result<Vec<RepoDataRecord>, Error> {
    let channels = channels(spec)?;
    let gateway = Gateway::builder().with_cache_dir(cache_dir).finish();
    let output = gateway
        .query(
            channels.clone(),
            [platform, Subdir::NoArch],
            spec.dependencies.clone(),
        )
        .recursive(true)
        .await
        .map_err(|e| Error::Channel {
            channel: spec.channels.join(", "),
            reason: crate::error_chain(&e),
        })?;
    let repodata = output.repodata;
    let for_platform = |r: &RepoDataRecord| r.package_record.subdir == platform.as_str();
    if platform != Subdir::NoArch && !repodata.iter().any(|r| r.iter().any(for_platform)) {
        check_platform(&gateway, &channels, spec, platform).await?;
    }
    let task = SolverTask {
        specs: spec.dependencies.clone(),
        virtual_packages: virtual_packages(platform)?,
        ..SolverTask::from_iter(&repodata)
    };
    let solved = rattler_solve::resolvo::Solver
        .solve(task)
        .map_err(|e| Error::Solve(shorten_solve_error(&e)))?;
    Ok(solved.records)
}

/// Fails when no channel has any package for `platform` (a subdir it lacks): the
/// solver would only say that no package matches.
async fn check_platform(
    gateway: &Gateway,
    channels: &[Channel],
    spec: &Spec,
    platform: Subdir,
) -> Result<(), Error> {
    let names = gateway
        .names(channels.to_vec(), [platform])
        .execute()
        .await
        .map_err(|e| Error::Channel {
            channel: spec.channels.join(", "),
            reason: crate::error_chain(&e),
        })?;
    if names.is_empty() {
        return Err(Error::PlatformMissing {
            platform: platform.to_string(),
            channels: spec.channels.join(", "),
        });
    }
    Ok(())
}

/// The solver's explanation without the framing a user does not need.
fn shorten_solve_error(err: &rattler_solve::SolveError) -> String {
    match err {
        rattler_solve::SolveError::Unsolvable(reasons) => reasons
            .iter()
            .map(|r| r.trim().to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}
