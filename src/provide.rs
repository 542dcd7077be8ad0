//! The environment for a `conda.yaml`, wherever it can be had fastest — the CI builder
//! pattern (`envoci restore conda.yaml --from REPO --push REF`):
//!
//! 1. the store, if this blueprint was built or pulled here before;
//! 2. else the registry repository `from`, by the `bp-<blueprint>-<platform>` tag;
//! 3. else built (unless building is not allowed), then pushed to `push` if given.
//!
//! Wherever it came from, the spec's `name:` tags it in the store.
//!
//! Only "not found" in `from` leads on to a build: any other failure of the registry
//! (unreachable, refused, corrupt) is an error, so a broken registry never silently
//! turns every CI job into a build.

use crate::builder;
use crate::spec::Spec;
use crate::store::{self, Store};
use crate::transfer::{self, RegistryOptions, RemoteRef};

/// What to provide and from where.
pub struct Request<'a> {
    /// The spec.
    pub spec: &'a Spec,
    /// Its file, for messages.
    pub spec_name: &'a str,
    /// The conda platform wanted.
    pub platform: &'a str,
    /// The lock file it is built from, if any (its pinned pip set is part of the
    /// blueprint looked for, whether or not building is allowed).
    pub lock: Option<&'a std::path::Path>,
    /// A registry repository to look for a prebuilt environment in.
    pub from: Option<&'a RemoteRef>,
    /// How to build it when it is nowhere; `None` forbids building (`--no-build`).
    pub build: Option<&'a builder::Options>,
    /// Where to push what was built.
    pub push: Option<&'a RemoteRef>,
    /// How to talk to registries.
    pub transfer: &'a RegistryOptions,
    /// Told what is about to happen when it takes long (a build after a miss).
    pub notice: &'a dyn Fn(&str),
}

/// Where the environment came from.
#[derive(Debug)]
pub enum Source {
    /// It was in the store.
    Store,
    /// Pulled from this reference.
    Pulled(transfer::Report),
    /// Built now (and pushed, when asked).
    Built {
        /// The build's report.
        report: Box<builder::Report>,
        /// The push's report.
        pushed: Option<transfer::Report>,
    },
}

/// The environment provided.
#[derive(Debug)]
pub struct Provided {
    /// Its manifest digest in the store.
    pub digest: String,
    /// Where it came from.
    pub source: Source,
}

/// Why no environment could be provided.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not in the store nor in `from`, and building was not allowed.
    #[error("{spec} (blueprint {blueprint_short}) is not built for {platform} in the store{}; run `envoci build {spec}` or drop --no-build", from.as_ref().map(|r| format!(" nor in {r}")).unwrap_or_default())]
    NotBuilt {
        /// The spec file.
        spec: String,
        /// The first 16 hex digits of its blueprint.
        blueprint_short: String,
        /// The platform.
        platform: String,
        /// The repository looked in.
        from: Option<String>,
    },
    /// Building failed.
    #[error(transparent)]
    Build(#[from] builder::Error),
    /// Pulling or pushing failed.
    #[error(transparent)]
    Transfer(#[from] transfer::Error),
    /// Tagging it with the spec's `name:` failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::NotBuilt { .. } => crate::ErrorKind::NotFound,
            Error::Build(e) => e.kind(),
            Error::Transfer(e) => e.kind().into(),
            Error::Store(e) => e.kind(),
            Error::Runtime(_) => crate::ErrorKind::Other,
        }
    }
}

/// Provides the environment `request` asks for (see the module docs).
pub fn from_spec(store: &Store, request: &Request<'_>) -> Result<Provided, Error> {
    let subdir = builder::platform(Some(request.platform))?;
    let blueprint = builder::blueprint(request.spec, subdir, request.lock)?;
    if let Some(digest) = builder::find_built(store, &blueprint, request.platform) {
        tag_with_name(store, request, &digest)?;
        return Ok(Provided {
            digest,
            source: Source::Store,
        });
    }
    let runtime = || crate::runtime().map_err(Error::Runtime);
    if let Some(repo) = request.from {
        let remote = repo.with_tag(&crate::artifact::blueprint_tag(
            &blueprint,
            request.platform,
        ));
        let pulled = runtime()?.block_on(transfer::pull(
            store,
            &remote,
            request.transfer,
            Some(request.platform),
        ));
        match pulled {
            Ok((report, _)) => {
                tag_with_name(store, request, &report.digest)?;
                return Ok(Provided {
                    digest: report.digest.clone(),
                    source: Source::Pulled(report),
                });
            }
            Err(e) if e.kind() == transfer::ErrorKind::NotFound => {
                (request.notice)(&format!("{remote} is not in the registry: building"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let Some(options) = request.build else {
        return Err(Error::NotBuilt {
            spec: request.spec_name.to_string(),
            blueprint_short: blueprint[..16.min(blueprint.len())].to_string(),
            platform: request.platform.to_string(),
            from: request.from.map(|r| r.to_string()),
        });
    };
    let report = builder::build(store, request.spec, options)?;
    let pushed = match request.push {
        Some(target) => Some(runtime()?.block_on(transfer::push(
            store,
            &report.digest,
            target,
            request.transfer,
        ))?),
        None => None,
    };
    Ok(Provided {
        digest: report.digest.clone(),
        source: Source::Built {
            report: Box::new(report),
            pushed,
        },
    })
}

/// Tags the manifest `digest` with the spec's `name:` ([`builder::name_tag`]), if it
/// has one (a build does so itself).
fn tag_with_name(store: &Store, request: &Request<'_>, digest: &str) -> Result<(), Error> {
    if let Some(name) = &request.spec.name {
        let tag = builder::name_tag(name, request.platform);
        store.set_tag(&tag, &store.resolve(digest)?)?;
    }
    Ok(())
}
