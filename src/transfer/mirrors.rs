//! Where a reference is fetched from: the registry it names, rewritten and mirrored the
//! way the container tools configure it — containers-registries.conf(5), the file
//! skopeo, podman and buildah read — plus mirrors given for one command
//! (`--mirror HOST[/PATH]`, `ENVOCI_MIRROR`).
//!
//! A `[[registry]]` entry matches references by `prefix` (a host, optionally with a
//! repository path, matched at `/` boundaries; or `*.domain` for any host below a
//! domain); the longest match wins. Its `location` replaces the matched part (pulls and
//! pushes go there), `insecure` allows plain HTTP, `blocked` refuses the reference,
//! and its `[[registry.mirror]]` entries are tried, in order, before the location on
//! pulls — each only for the references its `pull-from-mirror` allows (`all`,
//! `digest-only`, `tag-only`). Pushes never go to mirrors.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Error, RemoteRef};

/// One place a reference can be fetched from or sent to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The reference at this endpoint.
    pub remote: RemoteRef,
    /// Plain HTTP allowed (the configuration's `insecure`).
    pub insecure: bool,
    /// A mirror, not the registry's own location: credentials are only those stored
    /// for its host.
    pub mirror: bool,
}

impl Endpoint {
    /// `host/repository`, for messages and reports.
    pub fn name(&self) -> String {
        format!("{}/{}", self.remote.registry(), self.remote.0.repository())
    }
}

/// What the endpoints are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Fetching: mirrors first, then the location.
    Pull,
    /// Sending: the location only.
    Push,
}

/// Which references a mirror serves.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PullFrom {
    /// Every pull.
    #[default]
    All,
    /// Pulls by digest only (a mirror whose tags may be stale).
    DigestOnly,
    /// Pulls by tag only.
    TagOnly,
}

/// A `[[registry.mirror]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Mirror {
    /// Host and optional path replacing the matched prefix.
    pub location: String,
    /// Plain HTTP allowed.
    #[serde(default)]
    pub insecure: bool,
    /// Which pulls may use it.
    #[serde(default)]
    pub pull_from_mirror: PullFrom,
}

/// A `[[registry]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    /// What references it applies to (default: its location).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Where they really are (default: the prefix).
    #[serde(default)]
    pub location: Option<String>,
    /// Plain HTTP allowed.
    #[serde(default)]
    pub insecure: bool,
    /// References it matches are refused.
    #[serde(default)]
    pub blocked: bool,
    /// The older spelling of `pull-from-mirror = "digest-only"` for all its mirrors.
    #[serde(default)]
    pub mirror_by_digest_only: bool,
    /// Mirrors, tried in order before the location on pulls.
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

impl RegistryEntry {
    /// The prefix it matches.
    fn prefix(&self) -> &str {
        self.prefix
            .as_deref()
            .or(self.location.as_deref())
            .unwrap_or("")
    }
}

/// The part of a registries.conf file envoci reads; other keys (search registries,
/// short-name aliases, version 1 tables) are for other tools and ignored.
#[derive(Debug, Default, Deserialize)]
struct ConfFile {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

/// The mirror configuration: registries.conf entries and one-off mirrors.
#[derive(Clone, Debug, Default)]
pub struct Mirrors {
    /// The `[[registry]]` entries, later files' entries replacing earlier ones with the
    /// same prefix.
    entries: Vec<RegistryEntry>,
    /// Mirrors given on the command line, tried first for every registry.
    one_off: Vec<String>,
    /// The files read, for messages.
    files: Vec<PathBuf>,
}

impl Mirrors {
    /// Reads registries.conf as the container tools do: `$CONTAINERS_REGISTRIES_CONF`
    /// alone when set; else `~/.config/containers/registries.conf` if it exists, else
    /// `/etc/containers/registries.conf`, then the `*.conf` drop-ins of
    /// `/etc/containers/registries.conf.d` and `~/.config/containers/registries.conf.d`
    /// in name order. Missing files are no error; a file that does not parse is.
    pub fn load(one_off: Vec<String>) -> Result<Mirrors, Error> {
        for location in &one_off {
            check_location(location).map_err(|reason| conf_error(Path::new("--mirror"), reason))?;
        }
        let mut mirrors = Mirrors {
            one_off,
            ..Mirrors::default()
        };
        for file in conf_files() {
            mirrors.read(&file)?;
        }
        Ok(mirrors)
    }

    /// Mirrors from `one_off` only (no configuration file).
    pub fn only(one_off: Vec<String>) -> Mirrors {
        Mirrors {
            one_off,
            ..Mirrors::default()
        }
    }

    /// Adds the entries of `file`, if it exists.
    fn read(&mut self, file: &Path) -> Result<(), Error> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(conf_error(file, e.to_string())),
        };
        self.add(file, &text)
    }

    /// Adds the entries of a file's `text`, checking each.
    fn add(&mut self, file: &Path, text: &str) -> Result<(), Error> {
        let parsed: ConfFile = toml::from_str(text).map_err(|e| conf_error(file, e.to_string()))?;
        for entry in parsed.registry {
            check_entry(&entry).map_err(|reason| conf_error(file, reason))?;
            self.entries.retain(|e| e.prefix() != entry.prefix());
            self.entries.push(entry);
        }
        self.files.push(file.to_path_buf());
        Ok(())
    }

    /// Where `remote` is fetched from (mirrors in order, then its location) or sent to
    /// (its location); refused when its entry is `blocked`.
    pub fn endpoints(&self, remote: &RemoteRef, purpose: Purpose) -> Result<Vec<Endpoint>, Error> {
        let name = format!("{}/{}", remote.registry(), remote.0.repository());
        let entry = self.entry_for(&name);
        if let Some(entry) = entry.filter(|e| e.blocked) {
            return Err(Error::Blocked {
                reference: remote.to_string(),
                prefix: entry.prefix().to_string(),
                files: self.files.clone(),
            });
        }
        let (matched, location, insecure) = match entry {
            Some(entry) => {
                let matched = matched_part(entry.prefix(), &name);
                let location = entry.location.clone().unwrap_or_else(|| matched.clone());
                (matched, location, entry.insecure)
            }
            None => (
                remote.registry().to_string(),
                remote.registry().to_string(),
                false,
            ),
        };
        let at = |base: &str, insecure: bool, mirror: bool| {
            rewrite(remote, &name, &matched, base).map(|remote| Endpoint {
                remote,
                insecure,
                mirror,
            })
        };
        let mut endpoints = Vec::new();
        if purpose == Purpose::Pull {
            let by_digest = remote.0.digest().is_some();
            for one_off in &self.one_off {
                // A one-off mirror stands in for the registry host.
                let host = remote.registry();
                endpoints.push(
                    rewrite(remote, &name, host, one_off).map(|remote| Endpoint {
                        remote,
                        insecure: false,
                        mirror: true,
                    })?,
                );
            }
            for mirror in entry.map_or(&[][..], |e| &e.mirror[..]) {
                let pull_from = match entry {
                    Some(e) if e.mirror_by_digest_only => PullFrom::DigestOnly,
                    _ => mirror.pull_from_mirror,
                };
                let serves = match pull_from {
                    PullFrom::All => true,
                    PullFrom::DigestOnly => by_digest,
                    PullFrom::TagOnly => !by_digest,
                };
                if serves {
                    endpoints.push(at(&mirror.location, mirror.insecure, true)?);
                }
            }
        }
        endpoints.push(at(&location, insecure, false)?);
        Ok(endpoints)
    }

    /// Where `remote` is sent to: its location, and the options to reach it with.
    pub fn location(
        &self,
        remote: &RemoteRef,
        options: &super::RegistryOptions,
    ) -> Result<(RemoteRef, super::RegistryOptions), Error> {
        let mut endpoints = self.endpoints(remote, Purpose::Push)?;
        let mut options = options.clone();
        let location = endpoints.pop().map_or_else(
            || remote.clone(),
            |endpoint| {
                options.insecure |= endpoint.insecure;
                endpoint.remote
            },
        );
        Ok((location, options))
    }

    /// The entry with the longest prefix matching `name` (`host/repository`).
    fn entry_for(&self, name: &str) -> Option<&RegistryEntry> {
        self.entries
            .iter()
            .filter(|e| prefix_matches(e.prefix(), name))
            .max_by_key(|e| e.prefix().len())
    }
}

/// The configuration files to read, in order.
fn conf_files() -> Vec<PathBuf> {
    if let Some(file) = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(file)];
    }
    let user = dirs::home_dir().map(|home| home.join(".config/containers"));
    let system = PathBuf::from("/etc/containers");
    let main = match &user {
        Some(dir) if dir.join("registries.conf").is_file() => dir.join("registries.conf"),
        _ => system.join("registries.conf"),
    };
    let mut files = vec![main];
    for dir in std::iter::once(system).chain(user) {
        let Ok(listing) = std::fs::read_dir(dir.join("registries.conf.d")) else {
            continue;
        };
        let mut drop_ins: Vec<PathBuf> = listing
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    files
}

fn conf_error(file: &Path, reason: String) -> Error {
    Error::MirrorConfig {
        file: file.to_path_buf(),
        reason,
    }
}

/// Refuses an entry envoci could not use: no prefix and no location, a wildcard prefix
/// with a location, a location or mirror with a scheme, a tag or a digest.
fn check_entry(entry: &RegistryEntry) -> Result<(), String> {
    let prefix = entry.prefix();
    if prefix.is_empty() {
        return Err("a [[registry]] entry has neither `prefix` nor `location`".into());
    }
    if prefix.starts_with("*.") && entry.location.is_some() {
        return Err(format!(
            "the wildcard prefix `{prefix}` cannot have a `location`"
        ));
    }
    let locations = entry
        .location
        .iter()
        .chain(entry.mirror.iter().map(|m| &m.location));
    for location in locations {
        check_location(location)?;
    }
    Ok(())
}

/// A location is `host[:port][/path]`: no scheme, no tag, no digest, no empty part.
fn check_location(location: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "location `{location}` {why}; expected host[:port][/path]"
        ))
    };
    if location.contains("://") {
        return bad("has a scheme (`insecure = true` chooses plain HTTP)");
    }
    if location.contains('@') {
        return bad("has a digest");
    }
    let (host, path) = location.split_once('/').unwrap_or((location, ""));
    if host.is_empty() || location.ends_with('/') || location.contains("//") {
        return bad("has an empty part");
    }
    if path.contains(':') {
        return bad("has a tag");
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("has upper-case letters in its path");
    }
    Ok(())
}

/// Whether `prefix` matches `name` (`host/repository`) at a `/` boundary, or, for
/// `*.domain`, whether the host is below that domain.
fn prefix_matches(prefix: &str, name: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = name.split('/').next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        return host.ends_with(&format!(".{domain}"));
    }
    name == prefix || name.starts_with(&format!("{prefix}/"))
}

/// The part of `name` a matching prefix covers (for a wildcard: the host).
fn matched_part(prefix: &str, name: &str) -> String {
    if prefix.starts_with("*.") {
        return name.split('/').next().unwrap_or("").to_string();
    }
    prefix.to_string()
}

/// `remote` with the `matched` start of its `name` replaced by `base`.
fn rewrite(remote: &RemoteRef, name: &str, matched: &str, base: &str) -> Result<RemoteRef, Error> {
    let rest = &name[matched.len().min(name.len())..];
    let suffix = match (remote.0.tag(), remote.0.digest()) {
        (_, Some(digest)) => format!("@{digest}"),
        (Some(tag), None) => format!(":{tag}"),
        (None, None) => String::new(),
    };
    RemoteRef::parse(&format!("{base}{rest}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Mirrors {
        let mut mirrors = Mirrors::default();
        mirrors.add(Path::new("test.conf"), text).unwrap();
        mirrors
    }

    fn names(mirrors: &Mirrors, reference: &str, purpose: Purpose) -> Vec<String> {
        let remote = RemoteRef::parse(reference).unwrap();
        mirrors
            .endpoints(&remote, purpose)
            .unwrap()
            .into_iter()
            .map(|e| e.remote.to_string())
            .collect()
    }

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "ghcr.io/acme"
location = "ghcr.io/acme"

[[registry.mirror]]
location = "cache.lan:5000/ghcr/acme"
insecure = true

[[registry.mirror]]
location = "pinned.lan/acme"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "ghcr.io/acme/secret"
blocked = true

[[registry]]
prefix = "old.example.com"
location = "new.example.com/moved"

[[registry]]
prefix = "*.corp.example"
[[registry.mirror]]
location = "proxy.corp.example"

[aliases]
"envs" = "ghcr.io/acme/envs"
"#;

    #[test]
    fn pulls_try_mirrors_in_order_then_the_location() {
        let m = conf(CONF);
        assert_eq!(
            names(&m, "ghcr.io/acme/envs:robot", Purpose::Pull),
            [
                "cache.lan:5000/ghcr/acme/envs:robot",
                "ghcr.io/acme/envs:robot"
            ]
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            names(&m, &format!("ghcr.io/acme/envs@{digest}"), Purpose::Pull),
            [
                format!("cache.lan:5000/ghcr/acme/envs@{digest}"),
                format!("pinned.lan/acme/envs@{digest}"),
                format!("ghcr.io/acme/envs@{digest}")
            ]
        );
        let endpoints = m
            .endpoints(
                &RemoteRef::parse("ghcr.io/acme/envs:robot").unwrap(),
                Purpose::Pull,
            )
            .unwrap();
        assert!(endpoints[0].insecure && endpoints[0].mirror);
        assert!(!endpoints[1].insecure && !endpoints[1].mirror);
    }

    #[test]
    fn pushes_go_to_the_location_only() {
        let m = conf(CONF);
        assert_eq!(
            names(&m, "ghcr.io/acme/envs:robot", Purpose::Push),
            ["ghcr.io/acme/envs:robot"]
        );
        assert_eq!(
            names(&m, "old.example.com/team/env:1", Purpose::Push),
            ["new.example.com/moved/team/env:1"]
        );
    }

    #[test]
    fn prefixes_match_at_slashes_the_longest_wins_and_wildcards_match_hosts() {
        let m = conf(CONF);
        let blocked = RemoteRef::parse("ghcr.io/acme/secret/x:1").unwrap();
        assert!(matches!(
            m.endpoints(&blocked, Purpose::Pull),
            Err(Error::Blocked { .. })
        ));
        assert_eq!(
            names(&m, "ghcr.io/acmex/envs:1", Purpose::Pull),
            ["ghcr.io/acmex/envs:1"]
        );
        assert_eq!(
            names(&m, "reg.corp.example:5000/a/b:1", Purpose::Pull),
            ["proxy.corp.example/a/b:1", "reg.corp.example:5000/a/b:1"]
        );
        assert_eq!(
            names(&m, "corp.example/a:1", Purpose::Pull),
            ["corp.example/a:1"]
        );
    }

    #[test]
    fn one_off_mirrors_stand_in_for_the_host_first() {
        let mut m = conf(CONF);
        m.one_off = vec!["base.lan:5000".into(), "other.lan/up".into()];
        assert_eq!(
            names(&m, "quay.io/team/env:1", Purpose::Pull),
            [
                "base.lan:5000/team/env:1",
                "other.lan/up/team/env:1",
                "quay.io/team/env:1"
            ]
        );
        assert_eq!(
            names(&m, "quay.io/team/env:1", Purpose::Push),
            ["quay.io/team/env:1"]
        );
    }

    #[test]
    fn bad_files_and_entries_are_refused_naming_the_file_and_line() {
        let mut m = Mirrors::default();
        let err = m
            .add(
                Path::new("/etc/x.conf"),
                "[[registry]]\nprefix = \"a.io\"\nlocation = \n",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/x.conf") && err.contains("line 3"),
            "{err}"
        );
        for bad in [
            "[[registry]]\nlocation = \"https://a.io\"",
            "[[registry]]\nprefix = \"*.a.io\"\nlocation = \"b.io\"",
            "[[registry]]\nprefix = \"a.io\"\n[[registry.mirror]]\nlocation = \"m.io/x:tag\"",
            "[[registry]]\ninsecure = true",
            "[[registry]]\nprefix = \"a.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"",
        ] {
            assert!(m.add(Path::new("x.conf"), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn later_files_replace_entries_with_the_same_prefix() {
        let mut m = conf(CONF);
        m.add(
            Path::new("drop-in.conf"),
            "[[registry]]\nprefix = \"ghcr.io/acme\"\nlocation = \"ghcr.io/acme\"\n",
        )
        .unwrap();
        assert_eq!(
            names(&m, "ghcr.io/acme/envs:robot", Purpose::Pull),
            ["ghcr.io/acme/envs:robot"]
        );
    }
}
