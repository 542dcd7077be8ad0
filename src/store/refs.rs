//! Tags: the layout's `index.json`, whose manifest descriptors carry the tag in the
//! standard `org.opencontainers.image.ref.name` annotation (what skopeo and oras use for
//! `oci:DIR:TAG`). Updated under an exclusive lock by read-modify-rename; readers never
//! lock, as a rename is atomic.

use std::collections::HashMap;
use std::fs;
use std::io;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use super::{Error, Result, Store};
use crate::digest::Digest;
use crate::fsutil::{write_atomic, FileLock};

/// The standard annotation naming a tag in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// envoci's annotation naming a conda platform (`linux-64`, ...).
pub const ANNOTATION_PLATFORM: &str = "io.envoci.platform";
/// envoci's annotation on a pulled reference: when (Unix seconds) the registry last
/// said what it names.
pub const ANNOTATION_RESOLVED_AT: &str = "io.envoci.resolved-at";
/// envoci's annotation on every tag: when (Unix seconds) it was last made, pulled or
/// restored (`gc --unused-for`).
pub const ANNOTATION_LAST_USED: &str = "io.envoci.last-used";

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A tag of the store and the manifest it names.
#[derive(Clone, Debug)]
pub struct Tag {
    /// The tag.
    pub name: String,
    /// The manifest.
    pub descriptor: Descriptor,
}

impl Tag {
    /// How long ago the tag was last made, pulled or restored, if recorded.
    pub fn unused_for(&self) -> Option<std::time::Duration> {
        self.age_of(ANNOTATION_LAST_USED)
    }

    /// How long ago the time the annotation `key` records (Unix seconds) was, if it is
    /// there.
    fn age_of(&self, key: &str) -> Option<std::time::Duration> {
        let at = unix_seconds(&self.descriptor, key)?;
        Some(std::time::Duration::from_secs(
            unix_now().saturating_sub(at),
        ))
    }
}

/// The Unix time the annotation `key` of `descriptor` holds, if it holds one.
fn unix_seconds(descriptor: &Descriptor, key: &str) -> Option<u64> {
    descriptor.annotations().as_ref()?.get(key)?.parse().ok()
}

/// A tag that OCI registries would refuse.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a valid tag: use up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`")]
pub struct InvalidTag(pub String);

/// Checks a tag against the OCI distribution grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(name: &str) -> std::result::Result<(), InvalidTag> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(InvalidTag(name.to_string()))
    }
}

pub(super) fn init_layout(store: &Store) -> Result<()> {
    let layout = store.root.join("oci-layout");
    if !layout.exists() {
        write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(Error::io("write", &layout))?;
    }
    let index = store.root.join("index.json");
    if !index.exists() {
        let _lock = store.index_lock()?;
        if !index.exists() {
            store.write_index(&empty_index())?;
        }
    }
    Ok(())
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .expect("an index with schema version and manifests is complete")
}

impl Store {
    fn index_lock(&self) -> Result<FileLock> {
        self.lock("index")
    }

    /// Reads the layout's `index.json`.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::BadJson { path, source })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let path = self.root.join("index.json");
        let bytes = crate::json::to_canonical_vec(index)
            .map_err(|e| Error::io("serialise", &path)(e.into()))?;
        write_atomic(&path, &bytes).map_err(Error::io("write", &path))
    }

    /// Every tag in the store, sorted by name.
    pub fn tags(&self) -> Result<Vec<Tag>> {
        let index = self.read_index()?;
        let mut tags: Vec<Tag> = index
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(ANNOTATION_REF_NAME)?.clone();
                Some(Tag {
                    name,
                    descriptor: d.clone(),
                })
            })
            .collect();
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tags)
    }

    /// Points tag `name` at `descriptor` (replacing what it named before). Content must
    /// be durable first: this is what makes it reachable.
    pub fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        validate_tag(name)
            .map_err(|e| Error::io("tag", self.root.join("index.json"))(io::Error::other(e)))?;
        self.set_ref(name, descriptor)
    }

    /// Like [`Store::set_tag`] for any reference name the OCI layout allows (a pulled
    /// artifact is named by its full reference, `host/repo:tag`).
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._:@/+".contains(&b);
        if name.is_empty() || !name.bytes().all(allowed) {
            let e = io::Error::other(format!("`{name}` is not a valid reference name"));
            return Err(Error::io("name", self.root.join("index.json"))(e));
        }
        self.sync()?;
        let _lock = self.index_lock()?;
        let mut index = self.read_index()?;
        let mut descriptor = descriptor.clone();
        let mut annotations: HashMap<String, String> =
            descriptor.annotations().clone().unwrap_or_default();
        annotations.insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
        annotations.insert(ANNOTATION_LAST_USED.to_string(), unix_now().to_string());
        descriptor.set_annotations(Some(annotations));
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REF_NAME))
                    .map(String::as_str)
                    != Some(name)
            })
            .cloned()
            .collect();
        manifests.push(descriptor);
        manifests.sort_by_key(ref_name);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Removes the tags called `names` (a name that is not a tag is ignored); the
    /// names removed.
    pub fn remove_refs(&self, names: &[String]) -> Result<Vec<String>> {
        self.sync()?;
        let _lock = self.index_lock()?;
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        let kept: Vec<_> = index
            .manifests()
            .iter()
            .filter(|d| {
                let name = d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_REF_NAME));
                match name {
                    Some(name) if names.contains(name) => {
                        removed.push(name.clone());
                        false
                    }
                    _ => true,
                }
            })
            .cloned()
            .collect();
        if !removed.is_empty() {
            index.set_manifests(kept);
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// Records that the tags naming manifest `digest` were just used (restored).
    pub fn mark_used(&self, digest: &Digest) -> Result<()> {
        let oci = oci_digest(digest);
        let _lock = self.index_lock()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let mut changed = false;
        let now = unix_now();
        for descriptor in manifests.iter_mut().filter(|d| *d.digest() == oci) {
            let used = unix_seconds(descriptor, ANNOTATION_LAST_USED);
            // Within the minute is recent enough: a restore loop does not rewrite the
            // index every time.
            if used.is_some_and(|used| now.saturating_sub(used) < 60) {
                continue;
            }
            let mut annotations = descriptor.annotations().clone().unwrap_or_default();
            annotations.insert(ANNOTATION_LAST_USED.to_string(), now.to_string());
            descriptor.set_annotations(Some(annotations));
            changed = true;
        }
        if changed {
            index.set_manifests(manifests);
            self.write_index(&index)?;
        }
        Ok(())
    }

    /// How long ago the registry last said what the pulled reference `name` names,
    /// if the store holds it (and has the time).
    pub fn resolved_age(&self, name: &str) -> Result<Option<std::time::Duration>> {
        let tag = self.tags()?.into_iter().find(|t| t.name == name);
        Ok(tag.and_then(|t| t.age_of(ANNOTATION_RESOLVED_AT)))
    }

    /// Resolves a tag, or a manifest digest (`sha256:...`), to the manifest descriptor.
    pub fn resolve(&self, reference: &str) -> Result<Descriptor> {
        if let Some(tag) = self.tags()?.into_iter().find(|t| t.name == reference) {
            return Ok(tag.descriptor);
        }
        if reference.starts_with("sha256:") {
            if let Ok(digest) = Digest::parse(reference) {
                let bytes = self.read_blob(&digest)?;
                let media: MediaType = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| {
                        v.get("mediaType")
                            .and_then(|m| m.as_str())
                            .map(MediaType::from)
                    })
                    .unwrap_or(MediaType::ImageManifest);
                return Ok(Descriptor::new(
                    media,
                    bytes.len() as u64,
                    oci_digest(&digest),
                ));
            }
        }
        match self.by_digest_prefix(reference)?.as_slice() {
            [] => Err(Error::NotFound(reference.to_string())),
            [(_, descriptor)] => Ok(descriptor.clone()),
            several => Err(Error::Ambiguous {
                prefix: reference.to_string(),
                matches: several.iter().map(|(d, _)| d.clone()).collect(),
            }),
        }
    }

    /// The tagged manifests whose digest starts with `prefix` (at least 6 hex digits,
    /// `sha256:` optional; `ls` prints 12), one per digest.
    fn by_digest_prefix(&self, prefix: &str) -> Result<Vec<(String, Descriptor)>> {
        let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        let is_prefix = (6..64).contains(&hex.len())
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_prefix {
            return Ok(Vec::new());
        }
        let mut found: Vec<(String, Descriptor)> = Vec::new();
        for tag in self.tags()? {
            let digest = tag.descriptor.digest().to_string();
            let matches = digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hex));
            if matches && !found.iter().any(|(d, _)| *d == digest) {
                found.push((digest, tag.descriptor));
            }
        }
        Ok(found)
    }

    /// The tags `reference` names: the tag itself, else every tag of the manifest a
    /// digest or unique digest prefix names.
    pub fn tags_named(&self, reference: &str) -> Result<Vec<String>> {
        let tags = self.tags()?;
        if tags.iter().any(|t| t.name == reference) {
            return Ok(vec![reference.to_string()]);
        }
        let digest = self.resolve(reference)?.digest().clone();
        Ok(tags
            .into_iter()
            .filter(|t| *t.descriptor.digest() == digest)
            .map(|t| t.name)
            .collect())
    }
}

/// The oci-spec form of a digest.
pub fn oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    digest
        .oci()
        .parse()
        .expect("sha256: followed by 64 lowercase hex digits is a valid OCI digest")
}

/// The envoci form of an oci-spec digest; `None` for algorithms other than sha256.
pub fn from_oci_digest(digest: &oci_spec::image::Digest) -> Option<Digest> {
    Digest::parse(digest.as_ref()).ok()
}

fn ref_name(d: &Descriptor) -> String {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_grammar() {
        for ok in [
            "myenv",
            "v1.2.3",
            "bp-0123abcd-linux-64",
            "A_b",
            &"x".repeat(128),
        ] {
            assert!(super::validate_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a:b", "ü", &"x".repeat(129)] {
            assert!(super::validate_tag(bad).is_err(), "{bad}");
        }
    }
}
