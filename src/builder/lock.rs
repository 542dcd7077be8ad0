//! The lock file: the solved package list (URL + sha256 of every conda package) and the
//! pinned pip distributions (name, version, location + sha256 of each), in rattler's
//! lock format (the one pixi writes), one environment `default` and one platform.
//! Building from a lock skips solving and resolving, and checks every downloaded
//! package and pip file against it.
//!
//! A lock for a spec with `pip:` entries carries the environment's PyPI `indexes` (and
//! `find-links`), as pixi writes them, even when pip had nothing to add: that says the
//! lock pinned the pip set. A pip file under the lock's directory is recorded by its
//! path relative to it, so a checked-out project's lock works wherever it is checked out.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_lock::{
    FindLinksUrlOrPath, LockFile, LockFileBuilder, PackageHashes, PlatformData,
    PypiDistributionData, PypiIndexes, PypiPackageData, UrlOrPath, Verbatim,
};

use super::pins::{Location, Pin};
use super::Error;
use crate::spec::Spec;

/// The environment name used in envoci's lock files.
pub const ENVIRONMENT: &str = "default";

/// What a lock file pins for one platform.
#[derive(Clone, Debug)]
pub struct Locked {
    /// The conda packages, in the lock's order.
    pub records: Vec<RepoDataRecord>,
    /// The pip distributions, sorted by name; `None` when the lock has no PyPI section.
    pub pip: Option<Vec<Pin>>,
    /// The lock file's directory (relative pip paths resolve here).
    pub dir: PathBuf,
}

impl Locked {
    /// The pinned pip set, refusing a lock without one for a spec with `pip:` entries.
    pub fn pip_for(&self, spec: &Spec, path: &Path) -> Result<&[Pin], Error> {
        match &self.pip {
            Some(pins) => Ok(pins),
            None if spec.pip.is_empty() => Ok(&[]),
            None => Err(Error::PipNotLocked {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// Writes `records` and the pinned pip set (`None`: the spec has no `pip:` entries) for
/// `platform` as a lock file at `path` (atomically).
pub fn write(
    path: &Path,
    spec: &Spec,
    platform: Subdir,
    records: &[RepoDataRecord],
    pip: Option<&[Pin]>,
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
    if let Some(pins) = pip {
        let dir = lock_dir(path);
        add_pins(&mut builder, &name, pins, &dir).map_err(lock_error)?;
        builder.set_pypi_indexes(ENVIRONMENT, indexes(&spec.pip));
    }
    let text = builder
        .finish()
        .render_to_string()
        .map_err(|e| lock_error(e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| lock_error(e.to_string()))
}

/// The directory of the lock file at `path`, absolute where it can be.
fn lock_dir(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Adds each pin as a PyPI distribution of the platform `name`.
fn add_pins(
    builder: &mut LockFileBuilder,
    name: &str,
    pins: &[Pin],
    dir: &Path,
) -> Result<(), String> {
    for pin in pins {
        let bad = |what: &str, e: String| format!("{}: {what}: {e}", pin.label());
        let sha256 = rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&pin.sha256)
            .ok_or_else(|| bad("sha256", pin.sha256.clone()))?;
        let data = PypiDistributionData {
            name: pep508_rs::PackageName::new(pin.name.clone())
                .map_err(|e| bad("name", e.to_string()))?,
            version: pep440_rs::Version::from_str(&pin.version)
                .map_err(|e| bad("version", e.to_string()))?,
            location: Verbatim::new(location_in_lock(&pin.location, dir)),
            index_url: None,
            hash: Some(PackageHashes::Sha256(sha256)),
            requires_dist: Vec::new(),
            requires_python: None,
        };
        builder
            .add_pypi_package(
                ENVIRONMENT,
                name,
                PypiPackageData::Distribution(Box::new(data)),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A pin's location as the lock records it: a `file:` URL under `dir` becomes a path
/// relative to it.
fn location_in_lock(location: &Location, dir: &Path) -> UrlOrPath {
    let relative = match location {
        Location::Url(url) if url.scheme() == "file" => url
            .to_file_path()
            .ok()
            .and_then(|p| p.strip_prefix(dir).ok().map(Path::to_path_buf))
            .and_then(|p| p.to_str().map(str::to_string)),
        Location::Path(path) => path.to_str().map(str::to_string),
        Location::Url(_) => None,
    };
    match (relative, location) {
        (Some(path), _) => UrlOrPath::Path(path.as_str().into()),
        (None, Location::Url(url)) => UrlOrPath::Url(url.clone()),
        (None, Location::Path(path)) => UrlOrPath::Path(path.to_string_lossy().as_ref().into()),
    }
}

/// The indexes and find-links the `pip:` lines name (`--index-url`/`-i`,
/// `--extra-index-url`, `--find-links`/`-f`; PyPI unless `--no-index` or another index).
fn indexes(lines: &[String]) -> PypiIndexes {
    let mut indexes = Vec::new();
    let mut find_links = Vec::new();
    let mut no_index = false;
    let mut replaced = false;
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        let (option, value) = match first.split_once('=') {
            Some((o, v)) if o.starts_with('-') => (o, Some(v.to_string())),
            _ => (first, words.next().map(str::to_string)),
        };
        match (option, value) {
            ("--no-index", _) => no_index = true,
            ("--index-url" | "-i", Some(v)) => {
                replaced = true;
                indexes.extend(url::Url::parse(&v).ok());
            }
            ("--extra-index-url", Some(v)) => indexes.extend(url::Url::parse(&v).ok()),
            ("--find-links" | "-f", Some(v)) => find_links.push(match url::Url::parse(&v) {
                Ok(url) => FindLinksUrlOrPath::Url(url),
                Err(_) => FindLinksUrlOrPath::Path(PathBuf::from(v)),
            }),
            _ => {}
        }
    }
    if no_index {
        indexes.clear();
    } else if !replaced {
        indexes.extend(url::Url::parse("https://pypi.org/simple").ok());
    }
    PypiIndexes {
        indexes,
        find_links,
    }
}

/// Reads what the lock file at `path` pins for `platform`.
pub fn read(path: &Path, platform: Subdir) -> Result<Locked, Error> {
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
    let locked_platform = lock
        .platform(&name)
        .ok_or_else(|| lock_error(format!("it has no packages for {name}")))?;
    let records = env
        .conda_repodata_records(locked_platform)
        .map_err(|e| lock_error(e.to_string()))?
        .ok_or_else(|| lock_error(format!("it has no packages for {name}")))?;
    if records.iter().any(|r| r.package_record.sha256.is_none()) {
        return Err(lock_error(
            "a package has no sha256; envoci only builds from locks that pin hashes".into(),
        ));
    }
    let pins = env
        .pypi_packages(locked_platform)
        .map(|packages| packages.map(pin_of).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(lock_error)?
        .unwrap_or_default();
    let pip = (env.pypi_indexes().is_some() || !pins.is_empty()).then_some(pins);
    Ok(Locked {
        records,
        pip,
        dir: lock_dir(path),
    })
}

/// A lock's PyPI entry as a pin: only distributions with a sha256.
fn pin_of(package: &PypiPackageData) -> Result<Pin, String> {
    let label = format!("{}-{}", package.name(), package.version_string());
    let PypiPackageData::Distribution(data) = package else {
        return Err(format!(
            "{label} is a source directory; envoci only builds from pinned archives"
        ));
    };
    let sha256 = data.hash.as_ref().and_then(|h| h.sha256()).ok_or_else(|| {
        format!("{label} has no sha256; envoci only builds from locks that pin hashes")
    })?;
    let location = match data.location.inner() {
        UrlOrPath::Url(url) => Location::Url(url.clone()),
        UrlOrPath::Path(path) => Location::Path(PathBuf::from(path.as_str())),
    };
    Ok(Pin {
        name: data.name.to_string(),
        version: data.version.to_string(),
        location,
        sha256: hex::encode(sha256),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn indexes_follow_the_pip_options() {
        let plain = indexes(&lines(&["tiny==1"]));
        assert_eq!(plain.indexes[0].as_str(), "https://pypi.org/simple");
        let local = indexes(&lines(&["--no-index", "--find-links wheels", "tiny"]));
        assert!(local.indexes.is_empty());
        assert_eq!(
            local.find_links,
            [FindLinksUrlOrPath::Path("wheels".into())]
        );
        let mirror = indexes(&lines(&[
            "-i https://m.example/simple",
            "--extra-index-url=https://x.example/simple",
            "-f https://f.example/links",
        ]));
        let urls: Vec<&str> = mirror.indexes.iter().map(|u| u.as_str()).collect();
        assert_eq!(
            urls,
            ["https://m.example/simple", "https://x.example/simple"]
        );
        assert!(matches!(mirror.find_links[0], FindLinksUrlOrPath::Url(_)));
    }

    #[test]
    fn file_urls_under_the_lock_directory_become_relative_paths() {
        let url = |u: &str| Location::Url(url::Url::parse(u).unwrap());
        let dir = Path::new("/p/project");
        let inside = location_in_lock(&url("file:///p/project/wheels/a-1.whl"), dir);
        assert_eq!(inside.as_str(), "wheels/a-1.whl");
        let outside = location_in_lock(&url("file:///elsewhere/a-1.whl"), dir);
        assert_eq!(outside.as_str(), "file:///elsewhere/a-1.whl");
        let remote = location_in_lock(&url("https://x.org/a-1.whl"), dir);
        assert_eq!(remote.as_str(), "https://x.org/a-1.whl");
    }
}
