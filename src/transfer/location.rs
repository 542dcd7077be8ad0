//! Where an artifact is, as the command line names it: a registry (`host/repo:tag`), an
//! OCI layout directory (`oci:DIR[:TAG]`), an OCI archive (`oci-archive:FILE[:TAG]`),
//! or the local store (a tag or digest). Every transfer is a [`fetch`] into the store
//! and a [`send`] out of it, so any two of these can be copied between.

use std::path::{Path, PathBuf};

use super::layout::{self, Export, Form, ImportOptions, Layout, Select};
use super::{pull, push, Error, RegistryOptions, RemoteRef, Report};
use crate::store::Store;

/// An artifact's location.
#[derive(Clone, Debug)]
pub enum Location {
    /// A registry reference.
    Registry(RemoteRef),
    /// An OCI image layout directory, and the tag in it.
    Layout {
        /// The directory.
        path: PathBuf,
        /// The tag (optional when reading a layout with one artifact).
        tag: Option<String>,
    },
    /// A tar archive of an OCI image layout, and the tag in it.
    Archive {
        /// The file.
        path: PathBuf,
        /// The tag (optional when reading an archive with one artifact).
        tag: Option<String>,
    },
    /// A tag or manifest digest in the local store.
    Store(String),
}

impl Location {
    /// Parses `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, a registry reference, or else
    /// a store name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if let Some(rest) = text.strip_prefix("oci:") {
            let (path, tag) = split_tag(rest);
            return Ok(Location::Layout { path, tag });
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (path, tag) = split_tag(rest);
            return Ok(Location::Archive { path, tag });
        }
        if RemoteRef::looks_remote(text) {
            return Ok(Location::Registry(RemoteRef::parse(text)?));
        }
        if text.contains('/') {
            // Not a store name either: say why it is not a registry reference.
            RemoteRef::parse(text)?;
        }
        Ok(Location::Store(text.to_string()))
    }

    /// Whether this names something outside the store.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Store(_))
    }

    /// For an `oci:` or `oci-archive:` location: its path, its tag and its form.
    pub fn layout(&self) -> Option<(&Path, Option<&str>, Form)> {
        match self {
            Location::Layout { path, tag } => Some((path, tag.as_deref(), Form::Dir)),
            Location::Archive { path, tag } => Some((path, tag.as_deref(), Form::Archive)),
            _ => None,
        }
    }
}

/// `PATH:TAG` → (PATH, TAG) when the part after the last `:` could be a tag (no `/`);
/// else the whole text is the path.
fn split_tag(text: &str) -> (PathBuf, Option<String>) {
    match text.rsplit_once(':') {
        Some((path, tag)) if !tag.is_empty() && !tag.contains('/') && !path.is_empty() => {
            (PathBuf::from(path), Some(tag.to_string()))
        }
        _ => (PathBuf::from(text), None),
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with_tag = |prefix: &str, path: &PathBuf, tag: &Option<String>| match tag {
            Some(t) => format!("{prefix}{}:{t}", path.display()),
            None => format!("{prefix}{}", path.display()),
        };
        match self {
            Location::Registry(r) => write!(f, "{r}"),
            Location::Layout { path, tag } => f.write_str(&with_tag("oci:", path, tag)),
            Location::Archive { path, tag } => f.write_str(&with_tag("oci-archive:", path, tag)),
            Location::Store(name) => f.write_str(name),
        }
    }
}

/// The artifact `source` names — manifest and catalog, no layer — from wherever it is
/// (`diff`): the store, a layout or archive, a registry (through its mirrors).
pub async fn peek(
    store: &Store,
    source: &Location,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<crate::artifact::Artifact, Error> {
    if let Some((path, tag, form)) = source.layout() {
        let layout = Layout::open(path, form)?;
        return layout::peek(&layout, tag, platform);
    }
    match source {
        Location::Registry(remote) => pull::peek(remote, options, platform).await,
        _ => Ok(crate::artifact::load(store, &source.to_string())?),
    }
}

/// When a registry reference may be restored from the store's copy without asking the
/// registry what it names now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Freshness {
    /// Ask for tags every time (a tag may have moved); a digest the store holds is
    /// never asked for.
    #[default]
    Ask,
    /// Use the store's copy of a tag the registry was asked about this recently.
    MaxAge(std::time::Duration),
    /// Never ask: the store's copy or an error.
    Offline,
}

/// [`fetch`], unless the store's copy of a registry reference is good enough under
/// `freshness`: then no request is made and the report says nothing moved.
///
/// A registry pull's tag is left to the caller ([`Naming::apply`]): the sync before it
/// can go on while the environment is restored.
pub async fn fetch_unless_fresh(
    store: &Store,
    source: &Location,
    options: &RegistryOptions,
    platform: Option<&str>,
    freshness: Freshness,
) -> Result<(Report, Naming), Error> {
    let Location::Registry(remote) = source else {
        let (report, name) = fetch(store, source, options, platform).await?;
        return Ok((report, Naming::Named(name)));
    };
    if let Some(report) = stored_copy(store, remote, freshness)? {
        return Ok((report, Naming::Named(remote.to_string())));
    }
    if freshness == Freshness::Offline {
        return Err(Error::NotInStore {
            reference: remote.to_string(),
        });
    }
    let (report, tag) = pull::pull_untagged(store, remote, options, platform).await?;
    Ok((report, Naming::Pending(Box::new(tag))))
}

/// The name of what was fetched: given already, or still to be written.
#[derive(Debug)]
pub enum Naming {
    /// Named in the store.
    Named(String),
    /// Named once [`Naming::apply`] ran.
    Pending(Box<pull::PendingTag>),
}

impl Naming {
    /// Writes the name if it is pending. Returns it.
    pub fn apply(self, store: &Store) -> Result<String, crate::store::Error> {
        match self {
            Naming::Named(name) => Ok(name),
            Naming::Pending(tag) => tag.apply(store),
        }
    }
}

/// The store's copy of `remote`, when `freshness` allows using it: a digest the store
/// holds as an envoci manifest always; a tag pulled within the allowed age.
fn stored_copy(
    store: &Store,
    remote: &RemoteRef,
    freshness: Freshness,
) -> Result<Option<Report>, Error> {
    let name = remote.to_string();
    let usable = match (remote.0.digest(), freshness) {
        (Some(digest), _) => crate::artifact::load(store, digest).is_ok(),
        (None, Freshness::Ask) => false,
        (None, Freshness::Offline) => store.resolved_age(&name)?.is_some(),
        (None, Freshness::MaxAge(max)) => store.resolved_age(&name)?.is_some_and(|age| age <= max),
    };
    if !usable {
        return Ok(None);
    }
    let local = remote.0.digest().map_or(name.clone(), str::to_string);
    let artifact = crate::artifact::load(store, &local)?;
    Ok(Some(Report {
        reference: name,
        digest: artifact.digest.oci(),
        ..Report::default()
    }))
}

/// Brings the artifact at `source` into the store, copying only what the store lacks
/// (verified). Returns the report and the artifact's name in the store.
pub async fn fetch(
    store: &Store,
    source: &Location,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<(Report, String), Error> {
    if let Some((path, tag, form)) = source.layout() {
        let options = ImportOptions {
            platform,
            progress: options.progress.clone(),
        };
        let layout = Layout::open(path, form)?;
        let (report, imported) = layout::import(store, &layout, Select::One(tag), options)?;
        let name = imported
            .into_iter()
            .next()
            .map(|i| i.name)
            .unwrap_or_default();
        return Ok((report, name));
    }
    match source {
        Location::Registry(remote) => pull::pull(store, remote, options, platform).await,
        _ => {
            let name = source.to_string();
            let artifact = crate::artifact::load(store, &name)?;
            let report = Report {
                reference: name.clone(),
                digest: artifact.digest.oci(),
                ..Report::default()
            };
            Ok((report, name))
        }
    }
}

/// Sends store artifact `local` to `destination`: only blobs a registry or layout
/// directory lacks; an archive is written whole (replacing the file atomically).
pub async fn send(
    store: &Store,
    local: &str,
    destination: &Location,
    options: &RegistryOptions,
) -> Result<Report, Error> {
    if let Some((path, tag, form)) = destination.layout() {
        let item = Export {
            local: local.to_string(),
            name: layout_tag(tag, local, destination)?,
        };
        return layout::export(store, &[item], None, path, form, &options.progress);
    }
    match destination {
        Location::Registry(remote) => push::push(store, local, remote, options).await,
        _ => {
            let name = destination.to_string();
            let descriptor = store.resolve(local)?;
            store.set_tag(&name, &descriptor)?;
            Ok(Report {
                reference: name,
                digest: descriptor.digest().to_string(),
                ..Report::default()
            })
        }
    }
}

/// The tag an artifact `local` gets in a layout: the one given, else [`default_tag`].
fn layout_tag(tag: Option<&str>, local: &str, destination: &Location) -> Result<String, Error> {
    match tag {
        Some(t) => Ok(t.to_string()),
        None => default_tag(local).ok_or_else(|| {
            layout::Error::NoTag {
                location: destination.to_string(),
                local: local.to_string(),
            }
            .into()
        }),
    }
}

/// The tag an artifact gets in a layout when none is given: its store tag, or the tag
/// of the registry reference it was pulled as.
fn default_tag(local: &str) -> Option<String> {
    let tag = match local.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.ends_with("sha256") => tag,
        _ => local,
    };
    crate::store::validate_tag(tag).ok()?;
    Some(tag.to_string())
}

/// Copies `source` to `destination` through the local store: blobs the store has are
/// not fetched, blobs the destination has are not sent, and the manifest keeps its
/// digest. Returns the fetch and the send reports.
pub async fn copy(
    store: &Store,
    source: &Location,
    destination: &Location,
    options: &RegistryOptions,
    platform: Option<&str>,
) -> Result<(Report, Report), Error> {
    let (fetched, _) = fetch(store, source, options, platform).await?;
    let sent = send(store, &fetched.digest, destination, options).await?;
    Ok((fetched, sent))
}

/// Copies every platform of a registry index: to another registry one after the other
/// (the destination's tag becomes an index of them all — the same index, digest
/// included, when envoci made the source's), or to a layout or archive as one index
/// under the tag. A single manifest is copied as [`copy`] does.
pub async fn copy_all_platforms(
    store: &Store,
    source: &Location,
    destination: &Location,
    options: &RegistryOptions,
) -> Result<Vec<(Report, Report)>, Error> {
    let Location::Registry(remote) = source else {
        return Err(Error::BadReference {
            reference: source.to_string(),
            reason: "copying every platform starts from a registry index".into(),
        });
    };
    let Some(platforms) = pull::platforms(remote, options).await? else {
        return Ok(vec![copy(store, source, destination, options, None).await?]);
    };
    let Some((path, tag, form)) = destination.layout() else {
        let mut reports = Vec::new();
        for platform in platforms {
            reports.push(copy(store, source, destination, options, Some(&platform)).await?);
        }
        return Ok(reports);
    };
    let name = layout_tag(tag, &remote.to_string(), destination)?;
    let mut fetched = Vec::new();
    let mut items = Vec::new();
    for platform in platforms {
        let (report, _) = fetch(store, source, options, Some(&platform)).await?;
        items.push(Export {
            local: report.digest.clone(),
            name: name.clone(),
        });
        fetched.push(report);
    }
    let sent = layout::export(store, &items, None, path, form, &options.progress)?;
    Ok(fetched.into_iter().map(|f| (f, sent.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let tag = |l: &Location| match l {
            Location::Layout { path, tag } | Location::Archive { path, tag } => {
                (path.display().to_string(), tag.clone())
            }
            other => panic!("not a layout: {other:?}"),
        };
        let l = Location::parse("oci:/mnt/usb/envs:robot").unwrap();
        assert!(matches!(l, Location::Layout { .. }));
        assert_eq!(tag(&l), ("/mnt/usb/envs".into(), Some("robot".into())));
        let l = Location::parse("oci:/mnt/usb/envs").unwrap();
        assert_eq!(tag(&l), ("/mnt/usb/envs".into(), None));
        let l = Location::parse("oci:rel/dir").unwrap();
        assert_eq!(tag(&l), ("rel/dir".into(), None));
        let l = Location::parse("oci-archive:envs.tar:analytics").unwrap();
        assert!(matches!(l, Location::Archive { .. }));
        assert_eq!(tag(&l), ("envs.tar".into(), Some("analytics".into())));
        assert!(matches!(
            Location::parse("127.0.0.1:5000/envs/robot:v1").unwrap(),
            Location::Registry(_)
        ));
        assert!(matches!(
            Location::parse("robot").unwrap(),
            Location::Store(_)
        ));
        assert!(Location::parse("no/host:tag").is_err());
        assert_eq!(Location::parse("oci:d:t").unwrap().to_string(), "oci:d:t");
    }

    #[test]
    fn default_tags() {
        assert_eq!(default_tag("robot").as_deref(), Some("robot"));
        assert_eq!(default_tag("127.0.0.1:5000/envs:v1").as_deref(), Some("v1"));
        assert_eq!(default_tag("sha256:abcd"), None);
    }
}
