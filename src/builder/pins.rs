//! Pinned pip distributions: the lock's PyPI entries (name, version, location, sha256).
//!
//! `envoci lock` gets them from pip's installation report ([`from_report`]): what the
//! environment's own pip would install for the spec's `pip:` lines on top of its conda
//! packages. A build from the lock [`fetch`]es every pinned file (a local path, a `file:`
//! URL or a download) into a directory, checked against its sha256 before anything is
//! installed, then pip installs exactly those files with hashes required.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::Error;

/// One pinned distribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The distribution's name, as its metadata spells it.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where its file is.
    pub location: Location,
    /// The file's sha256, lowercase hex.
    pub sha256: String,
}

/// Where a pinned file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A URL (`https:`, or `file:` for a wheel outside the lock's directory).
    Url(url::Url),
    /// A path; a relative one is relative to the lock file's directory.
    Path(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Url(url) => write!(f, "{url}"),
            Location::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Pin {
    /// `name==version --hash=sha256:HEX`, the line pip installs it from.
    pub fn requirement(&self) -> String {
        format!(
            "{}=={} --hash=sha256:{}",
            self.name, self.version, self.sha256
        )
    }

    /// `name-version`, for messages.
    pub fn label(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    /// The file's name (the last part of its location), if it is a plain file name.
    pub fn file_name(&self) -> Option<String> {
        let name = match &self.location {
            Location::Url(url) => url.path_segments()?.next_back()?.to_string(),
            Location::Path(path) => path.file_name()?.to_str()?.to_string(),
        };
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
        plain.then_some(name)
    }
}

/// The part of pip's installation report (`pip install --dry-run --report`) envoci reads.
#[derive(Deserialize)]
struct Report {
    install: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    download_info: DownloadInfo,
    metadata: Metadata,
}

#[derive(Deserialize)]
struct DownloadInfo {
    url: String,
    archive_info: Option<ArchiveInfo>,
}

#[derive(Deserialize)]
struct ArchiveInfo {
    hash: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    version: String,
}

/// The pins of a pip installation report, sorted by name.
pub fn from_report(bytes: &[u8]) -> Result<Vec<Pin>, Error> {
    let report: Report = serde_json::from_slice(bytes).map_err(|e| Error::PipReport {
        reason: e.to_string(),
    })?;
    let mut pins = report
        .install
        .into_iter()
        .map(pin_of)
        .collect::<Result<Vec<_>, _>>()?;
    pins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pins)
}

fn pin_of(item: Item) -> Result<Pin, Error> {
    let package = format!("{}-{}", item.metadata.name, item.metadata.version);
    let unpinnable = |reason: &str| Error::PipUnpinnable {
        package: package.clone(),
        url: item.download_info.url.clone(),
        reason: reason.to_string(),
    };
    let archive = item.download_info.archive_info.as_ref().ok_or_else(|| {
        unpinnable("it is a directory or a VCS checkout, not an archive; build a wheel of it (`pip wheel`) and point `--find-links` at it")
    })?;
    let sha256 = archive
        .hashes
        .get("sha256")
        .cloned()
        .or_else(|| {
            archive
                .hash
                .as_deref()
                .and_then(|h| h.strip_prefix("sha256="))
                .map(str::to_string)
        })
        .filter(|h| is_sha256_hex(h))
        .ok_or_else(|| unpinnable("pip reports no sha256 for it"))?;
    let url = url::Url::parse(&item.download_info.url)
        .map_err(|e| unpinnable(&format!("its URL does not parse: {e}")))?;
    Ok(Pin {
        name: item.metadata.name,
        version: item.metadata.version,
        location: Location::Url(url),
        sha256: sha256.to_ascii_lowercase(),
    })
}

/// True for 64 hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Copies or downloads every pinned file into `dest` under its own name, each checked
/// against its sha256; relative paths are relative to `base` (the lock's directory).
/// A file that does not match is removed and refused.
pub async fn fetch(pins: &[Pin], base: &Path, dest: &Path) -> Result<(), Error> {
    let mut client = None;
    for pin in pins {
        let name = pin.file_name().ok_or_else(|| Error::PipUnpinnable {
            package: pin.label(),
            url: pin.location.to_string(),
            reason: "its location does not end in a file name".into(),
        })?;
        let target = dest.join(&name);
        let bytes = match local_path(&pin.location, base) {
            Some(path) => read_local(pin, &path).await?,
            None => download(pin, &mut client).await?,
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != pin.sha256 {
            return Err(Error::PipHash {
                package: pin.label(),
                location: pin.location.to_string(),
                expected: pin.sha256.clone(),
                actual,
            });
        }
        tokio::fs::write(&target, &bytes)
            .await
            .map_err(|e| Error::Io(format!("write {}", target.display()), e))?;
    }
    Ok(())
}

/// The local file a location names (a path, or a `file:` URL), if it names one.
fn local_path(location: &Location, base: &Path) -> Option<PathBuf> {
    match location {
        Location::Path(path) => Some(base.join(path)),
        Location::Url(url) if url.scheme() == "file" => url.to_file_path().ok(),
        Location::Url(_) => None,
    }
}

async fn read_local(pin: &Pin, path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path)
        .await
        .map_err(|source| Error::PipFile {
            package: pin.label(),
            path: path.to_path_buf(),
            source,
        })
}

/// Downloads a pinned file, making the HTTP client on the first download.
async fn download(pin: &Pin, client: &mut Option<reqwest::Client>) -> Result<Vec<u8>, Error> {
    let Location::Url(url) = &pin.location else {
        return Err(Error::PipUnpinnable {
            package: pin.label(),
            url: pin.location.to_string(),
            reason: "it is neither a local file nor a URL".into(),
        });
    };
    let failed = |source: reqwest::Error| Error::PipDownload {
        package: pin.label(),
        url: url.to_string(),
        source,
    };
    let client = match client {
        Some(c) => c,
        None => client.insert(http_client().map_err(failed)?),
    };
    let response = client
        .get(url.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(failed)?;
    Ok(response.bytes().await.map_err(failed)?.to_vec())
}

/// The client pinned files are downloaded with: envoci's User-Agent, bounded waits.
fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("envoci/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "a1a13339438c71020096fe97f1a789a10b06f4c6a34e3b3ad5597a073b992bd2";

    fn report(items: &str) -> Vec<u8> {
        format!(r#"{{"version": "1", "install": [{items}], "environment": {{}}}}"#).into_bytes()
    }

    fn item(name: &str, url: &str, archive: &str) -> String {
        format!(
            r#"{{"download_info": {{"url": "{url}"{archive}}}, "is_direct": false, "requested": true,
               "metadata": {{"metadata_version": "2.1", "name": "{name}", "version": "1.1"}}}}"#
        )
    }

    #[test]
    fn a_report_gives_pins_sorted_by_name() {
        let hashes = format!(r#", "archive_info": {{"hashes": {{"sha256": "{SHA}"}}}}"#);
        let hash = format!(
            r#", "archive_info": {{"hash": "sha256={}"}}"#,
            SHA.to_uppercase()
        );
        let items = [
            item("zed", "https://x.org/zed-1.1-py3-none-any.whl", &hashes),
            item("alpha", "file:///w/alpha-1.1-py3-none-any.whl", &hash),
        ]
        .join(",");
        let pins = from_report(&report(&items)).unwrap();
        let names: Vec<&str> = pins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zed"]);
        assert_eq!(pins[0].sha256, SHA);
        assert_eq!(
            pins[0].requirement(),
            format!("alpha==1.1 --hash=sha256:{SHA}")
        );
        assert_eq!(
            pins[0].file_name().as_deref(),
            Some("alpha-1.1-py3-none-any.whl")
        );
    }

    #[test]
    fn directories_and_missing_hashes_cannot_be_pinned() {
        let dir = item("local", "file:///src/local", r#", "dir_info": {}"#);
        let err = from_report(&report(&dir)).unwrap_err();
        assert!(matches!(err, Error::PipUnpinnable { .. }), "{err}");
        assert!(err.to_string().contains("pip wheel"), "{err}");
        let nohash = item(
            "x",
            "https://x.org/x-1.1.tar.gz",
            r#", "archive_info": {"hash": "md5=00"}"#,
        );
        let err = from_report(&report(&nohash)).unwrap_err();
        assert!(err.to_string().contains("no sha256"), "{err}");
        assert!(matches!(
            from_report(b"{}").unwrap_err(),
            Error::PipReport { .. }
        ));
    }

    #[test]
    fn file_names_must_be_plain() {
        let pin = |location| Pin {
            name: "a".into(),
            version: "1".into(),
            location,
            sha256: SHA.into(),
        };
        let url = |u: &str| Location::Url(url::Url::parse(u).unwrap());
        assert_eq!(
            pin(url("https://x.org/p/a-1.whl#sha256=00"))
                .file_name()
                .as_deref(),
            Some("a-1.whl")
        );
        assert_eq!(pin(url("https://x.org/p/")).file_name(), None);
        assert_eq!(pin(url("https://x.org/p/..")).file_name(), None);
        assert_eq!(
            pin(Location::Path("wheels/a-1.whl".into()))
                .file_name()
                .as_deref(),
            Some("a-1.whl")
        );
        assert_eq!(pin(Location::Path("wheels/..".into())).file_name(), None);
    }
}
