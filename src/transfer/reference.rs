//! Registry references (`host[:port]/repo[:tag][@digest]`), parsed by hand.
//!
//! The grammar is the distribution project's. oci-client parses it with one large
//! regular expression, compiled on first use: about 18 ms of CPU on every run that
//! names a registry, before its first request. Parsing it directly costs microseconds.

use super::Error;

/// The longest repository name the grammar allows.
const REPOSITORY_MAX: usize = 255;

/// A parsed registry reference (`host/repo:tag`, `host/repo@sha256:...`).
#[derive(Clone, Debug)]
pub struct RemoteRef(pub oci_client::Reference);

impl RemoteRef {
    /// Parses a reference; a bare name without a registry host is refused (it would
    /// silently mean Docker Hub). A reference with neither tag nor digest means
    /// `:latest`.
    pub fn parse(reference: &str) -> Result<Self, Error> {
        parse(reference)
            .map(RemoteRef)
            .map_err(|reason| Error::BadReference {
                reference: reference.into(),
                reason: reason.into(),
            })
    }

    /// Whether a string looks like a registry reference rather than a local tag.
    pub fn looks_remote(reference: &str) -> bool {
        parse(reference).is_ok()
    }

    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        self.0.resolve_registry()
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> RemoteRef {
        RemoteRef(oci_client::Reference::with_tag(
            self.0.registry().into(),
            self.0.repository().into(),
            tag.into(),
        ))
    }

    /// The same repository at a digest.
    pub fn with_digest(&self, digest: &str) -> RemoteRef {
        RemoteRef(oci_client::Reference::with_digest(
            self.0.registry().into(),
            self.0.repository().into(),
            digest.into(),
        ))
    }
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.whole())
    }
}

/// Splits and checks `reference`; the error says which part is wrong.
fn parse(reference: &str) -> Result<oci_client::Reference, &'static str> {
    let (name_tag, digest) = match reference.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (reference, None),
    };
    // A tag's colon comes after the last slash; a port's comes before it.
    let slash = name_tag.rfind('/').ok_or("no registry host")?;
    let (name, tag) = match name_tag[slash..].rfind(':') {
        Some(colon) => (
            &name_tag[..slash + colon],
            Some(&name_tag[slash + colon + 1..]),
        ),
        None => (name_tag, None),
    };
    let (host, repository) = name.split_once('/').ok_or("no registry host")?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return Err("no registry host");
    }
    check_host(host)?;
    if repository.len() > REPOSITORY_MAX {
        return Err("repository name longer than 255 characters");
    }
    check_repository(repository)?;
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let (host, repository) = docker_hub_names(host, repository);
    if repository.len() > REPOSITORY_MAX {
        return Err("repository name longer than 255 characters");
    }
    use oci_client::Reference;
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(host, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(host, repository, digest.into()),
        (tag, None) => Reference::with_tag(host, repository, tag.unwrap_or("latest").into()),
    })
}

/// Docker Hub's names: `index.docker.io` is `docker.io`, and a one-part repository
/// there is in `library/`.
fn docker_hub_names(host: &str, repository: &str) -> (String, String) {
    let host = if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    };
    if host == "docker.io" && !repository.contains('/') {
        return (host.into(), format!("library/{repository}"));
    }
    (host.into(), repository.into())
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens.
fn check_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err("invalid registry host");
    }
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => {
            Err("invalid registry port")
        }
        _ => Ok(()),
    }
}

fn check_repository(repository: &str) -> Result<(), &'static str> {
    if valid_repository(repository) {
        Ok(())
    } else {
        Err("invalid repository name (lowercase letters, digits and . _ - separators)")
    }
}

/// The distribution spec's repository name grammar: at most 255 characters of
/// `/`-separated components, each lower-case letters and digits joined inside by
/// `.`, `_`, `__` or runs of `-`.
pub(crate) fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= REPOSITORY_MAX && name.split('/').all(component_ok)
}

fn component_ok(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between two runs of letters and digits: `.`, `_`, `__`, or dashes only.
    bytes
        .split(|&b| alnum(b))
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-')
        })
}

/// The store's tag grammar, which is the spec's: a letter, digit or `_`, then up to
/// 127 of those, dots and dashes.
fn check_tag(tag: &str) -> Result<(), &'static str> {
    match crate::store::validate_tag(tag) {
        Ok(()) => Ok(()),
        Err(_) => {
            Err("invalid tag (letters, digits, _ . -, at most 128, not starting with . or -)")
        }
    }
}

/// `algorithm:hex`, with the hex length the algorithm gives.
fn check_digest(digest: &str) -> Result<(), &'static str> {
    let (algorithm, hex) = digest.split_once(':').ok_or("invalid digest format")?;
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != length {
        return Err("invalid digest length");
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid digest format");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(reference: &str) -> (String, String, Option<String>, Option<String>) {
        let r = RemoteRef::parse(reference).expect(reference).0;
        (
            r.registry().into(),
            r.repository().into(),
            r.tag().map(str::to_string),
            r.digest().map(str::to_string),
        )
    }

    fn own(
        a: &str,
        b: &str,
        t: Option<&str>,
        d: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (
            a.into(),
            b.into(),
            t.map(str::to_string),
            d.map(str::to_string),
        )
    }

    #[test]
    fn references_split_into_host_repository_tag_and_digest() {
        let digested = format!("host.example:443/x@{SHA}");
        let tagged_and_digested = format!("h.io/x:v1@{SHA}");
        let cases = [
            (
                "ghcr.io/acme/envs:robot",
                own("ghcr.io", "acme/envs", Some("robot"), None),
            ),
            (
                "127.0.0.1:5000/a/b/c",
                own("127.0.0.1:5000", "a/b/c", Some("latest"), None),
            ),
            (
                "localhost/x:1.0-rc_2",
                own("localhost", "x", Some("1.0-rc_2"), None),
            ),
            (&digested, own("host.example:443", "x", None, Some(SHA))),
            (
                &tagged_and_digested,
                own("h.io", "x", Some("v1"), Some(SHA)),
            ),
            (
                "docker.io/busybox:1",
                own("docker.io", "library/busybox", Some("1"), None),
            ),
            (
                "index.docker.io/a/b",
                own("docker.io", "a/b", Some("latest"), None),
            ),
            (
                "h.io/a.b/c__d/e---f/g_h",
                own("h.io", "a.b/c__d/e---f/g_h", Some("latest"), None),
            ),
            ("My-Host.io/x", own("My-Host.io", "x", Some("latest"), None)),
        ];
        for (reference, expected) in cases {
            assert_eq!(parts(reference), expected, "{reference}");
        }
    }

    #[test]
    fn malformed_references_are_refused_naming_the_part() {
        let reason = |reference: &str| match RemoteRef::parse(reference) {
            Err(Error::BadReference { reason, .. }) => reason,
            other => panic!("{reference}: {other:?}"),
        };
        assert_eq!(reason("envs:robot"), "no registry host");
        assert_eq!(reason("acme/envs:robot"), "no registry host");
        assert_eq!(reason("ghcr.io"), "no registry host");
        for bad in [
            "-h.io/x",
            "h-.io/x",
            "h..io/x",
            "h_i.io/x",
            "h.io:/x",
            "h.io:8a/x",
        ] {
            assert!(reason(bad).contains("registry"), "{bad}");
        }
        for bad in [
            "h.io/",
            "h.io/X",
            "h.io/a//b",
            "h.io/a/",
            "h.io/.a",
            "h.io/a.",
            "h.io/a..b",
            "h.io/a___b",
            "h.io/a._b",
            "h.io/a b",
            "h.io/a:x/y",
        ] {
            assert!(reason(bad).contains("repository"), "{bad}");
        }
        for bad in ["h.io/a:", "h.io/a:.x", "h.io/a:-x", "h.io/a:x+y"] {
            assert!(reason(bad).contains("tag"), "{bad}");
        }
        assert!(reason(&format!("h.io/a:{}", "t".repeat(129))).contains("tag"));
        assert!(RemoteRef::parse(&format!("h.io/a:{}", "t".repeat(128))).is_ok());
        assert!(reason(&format!("h.io/{}", "a".repeat(256))).contains("255"));
        assert_eq!(reason("h.io/a@sha256:abc"), "invalid digest length");
        assert_eq!(reason("h.io/a@md5:abc"), "unsupported digest algorithm");
        assert_eq!(reason("h.io/a@sha256"), "invalid digest format");
        assert_eq!(
            reason(&format!("h.io/a@{}", SHA.replace("abcdef", "abcdeg"))),
            "invalid digest format"
        );
        assert!(reason(&format!("h.io/a@{SHA}@{SHA}")).contains("digest"));
    }

    #[test]
    fn repository_names_follow_the_spec_grammar() {
        for good in [
            "a",
            "a/b",
            "a.b",
            "a_b",
            "a__b",
            "a---b",
            "ghcr/acme-corp/envs2",
        ] {
            assert!(valid_repository(good), "{good}");
        }
        for bad in [
            "", "A", "-a", "a-", "a..b", "a___b", "a/", "/a", "a b", "a:b",
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(valid_repository(&"a".repeat(255)));
        assert!(!valid_repository(&"a".repeat(256)));
    }

    #[test]
    fn the_hand_parser_agrees_with_the_distribution_grammar() {
        // oci-client's own regular-expression parser is the reference: every
        // reference with a registry host that one accepts, the other accepts the same.
        let samples = [
            "ghcr.io/acme/envs:robot",
            "127.0.0.1:5000/a/b/c",
            "localhost:5000/x-y/z.w:tag.1",
            "h.io/a__b:T_1",
            "h.io/a___b",
            "h.io/a-_b",
            "h.io/A",
            "h.io/a:-x",
            "h.io/a:x:y",
            "h.io:5000:6000/a",
            "h.io/a@sha256:abc",
            "docker.io/busybox",
            "index.docker.io/busybox:1",
        ];
        for sample in samples {
            let ours = parse(sample).map(|r| r.whole());
            let theirs =
                <oci_client::Reference as std::str::FromStr>::from_str(sample).map(|r| r.whole());
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{sample}: {ours:?} vs {theirs:?}"
            );
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours, theirs, "{sample}");
            }
        }
    }
}
