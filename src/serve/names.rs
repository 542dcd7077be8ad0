//! What `envoci serve` answers to: the distribution API's paths, parsed strictly (a
//! name, tag or digest outside the spec's grammar matches nothing, so no request can
//! name a file), and the store's names as repositories and tags.
//!
//! A pulled reference `host/path:tag` is served as repository `path`, tag `tag` (the
//! host dropped, so a machine whose registries.conf names this server as a mirror of
//! `host` finds the same repository); one pulled by digest only by its digest. The
//! store's own tags (`envoci build --tag`, `snapshot`, `import`) are served in the
//! repository `local`.

use std::collections::BTreeMap;

use oci_spec::image::Descriptor;

use crate::digest::Digest;
use crate::store::Tag;
use crate::transfer::reference::valid_repository;

/// The repository the store's own tags are served in.
pub const LOCAL_REPOSITORY: &str = "local";

/// A request the server answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/<name>/manifests/<tag or digest>`.
    Manifest {
        /// The repository.
        name: String,
        /// A tag, or a digest.
        reference: Reference,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// The repository.
        name: String,
        /// The blob.
        digest: Digest,
    },
    /// `/v2/<name>/tags/list`.
    Tags {
        /// The repository.
        name: String,
    },
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl Route {
    /// The route of a request path, if it is one the server answers.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2/")?;
        if rest.is_empty() {
            return Some(Route::Base);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return valid_repository(name).then(|| Route::Tags { name: name.into() });
        }
        if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            let digest = parse_digest(digest)?;
            return valid_repository(name).then(|| Route::Blob {
                name: name.into(),
                digest,
            });
        }
        let (name, reference) = rest.rsplit_once("/manifests/")?;
        let reference = match parse_digest(reference) {
            Some(digest) => Reference::Digest(digest),
            None if valid_tag(reference) => Reference::Tag(reference.into()),
            None => return None,
        };
        valid_repository(name).then(|| Route::Manifest {
            name: name.into(),
            reference,
        })
    }
}

/// A `sha256:<64 lower-case hex>` digest.
fn parse_digest(text: &str) -> Option<Digest> {
    let hex = text.strip_prefix("sha256:")?;
    let lower_hex = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    lower_hex.then(|| Digest::parse(text).ok()).flatten()
}

/// The spec's tag grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    crate::store::validate_tag(tag).is_ok()
}

/// The store's names as repositories: repository → tag → manifest descriptor, and the
/// manifests each repository holds by digest only.
#[derive(Debug, Default)]
pub struct Repositories {
    repositories: BTreeMap<String, Repository>,
}

/// One served repository.
#[derive(Debug, Default)]
pub struct Repository {
    /// Tag → manifest.
    pub tags: BTreeMap<String, Descriptor>,
    /// Manifests pulled by digest.
    pub by_digest: Vec<Descriptor>,
}

impl Repositories {
    /// The repositories `tags` (the store's names) make. When two hosts' references
    /// share a repository and tag, the later name in the store's order wins.
    pub fn of(tags: Vec<Tag>) -> Repositories {
        let mut repositories: BTreeMap<String, Repository> = BTreeMap::new();
        for tag in tags {
            let Some((name, served)) = served_as(&tag.name) else {
                continue;
            };
            let repository = repositories.entry(name).or_default();
            match served {
                Served::Tag(t) => {
                    repository.tags.insert(t, tag.descriptor);
                }
                Served::Digest => repository.by_digest.push(tag.descriptor),
            }
        }
        Repositories { repositories }
    }

    /// A repository, if the store serves it.
    pub fn get(&self, name: &str) -> Option<&Repository> {
        self.repositories.get(name)
    }
}

impl Repository {
    /// The manifest `reference` names here.
    pub fn manifest(&self, reference: &Reference) -> Option<&Descriptor> {
        match reference {
            Reference::Tag(tag) => self.tags.get(tag),
            Reference::Digest(digest) => {
                let oci = digest.oci();
                let digests = self.tags.values().chain(&self.by_digest);
                digests.into_iter().find(|d| d.digest().to_string() == oci)
            }
        }
    }
}

enum Served {
    Tag(String),
    Digest,
}

/// How a store name is served: its repository, and its tag (or by digest only).
fn served_as(store_name: &str) -> Option<(String, Served)> {
    if !store_name.contains('/') {
        return Some((LOCAL_REPOSITORY.into(), Served::Tag(store_name.into())));
    }
    let (_host, rest) = store_name.split_once('/')?;
    if let Some((path, _digest)) = rest.split_once('@') {
        return valid_repository(path).then(|| (path.to_string(), Served::Digest));
    }
    let (path, tag) = rest.rsplit_once(':')?;
    (valid_repository(path) && valid_tag(tag)).then(|| (path.to_string(), Served::Tag(tag.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_strictly() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(
            Route::parse("/v2/acme/envs/tags/list"),
            Some(Route::Tags {
                name: "acme/envs".into()
            })
        );
        assert!(matches!(
            Route::parse(&format!("/v2/acme/envs/blobs/{d}")),
            Some(Route::Blob { name, .. }) if name == "acme/envs"
        ));
        assert!(matches!(
            Route::parse("/v2/local/manifests/robot_1.0"),
            Some(Route::Manifest { reference: Reference::Tag(t), .. }) if t == "robot_1.0"
        ));
        for bad in [
            "/v2",
            "/v2/_catalog",
            "/v2/../etc/passwd",
            "/v2/a/../b/tags/list",
            "/v2/a/blobs/sha256:../../x",
            &format!("/v2/a/blobs/{}", d.to_uppercase()),
            "/v2/a/blobs/sha512:00",
            "/v2/A/tags/list",
            "/v2/a//b/tags/list",
            "/v2/a/manifests/.hidden",
            "/v2/a/blobs/uploads/",
            "/etc/passwd",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn store_names_become_repositories() {
        let descriptor = |n: u8| {
            Descriptor::new(
                oci_spec::image::MediaType::ImageManifest,
                1,
                crate::store::oci_digest(&Digest::of(&[n])),
            )
        };
        let tag = |name: &str, n: u8| Tag {
            name: name.into(),
            descriptor: descriptor(n),
        };
        let digest = Digest::of(&[3]).oci();
        let repos = Repositories::of(vec![
            tag("robot", 1),
            tag("ghcr.io/acme/envs:robot", 2),
            tag(&format!("ghcr.io/acme/envs@{digest}"), 3),
            tag("127.0.0.1:5000/Bad/Name:x", 4),
        ]);
        let local = repos.get(LOCAL_REPOSITORY).unwrap();
        assert!(local.tags.contains_key("robot"));
        let envs = repos.get("acme/envs").unwrap();
        assert!(envs.manifest(&Reference::Tag("robot".into())).is_some());
        assert!(envs
            .manifest(&Reference::Digest(Digest::of(&[3])))
            .is_some());
        assert!(envs
            .manifest(&Reference::Digest(Digest::of(&[1])))
            .is_none());
        assert!(repos.get("Bad/Name").is_none());
    }
}
