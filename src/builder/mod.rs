//! Build: `conda.yaml` → solved packages → build prefix → store.
//!
//! [`build`] is the entry point. It takes the blueprint's build lock (so concurrent builds
//! of one blueprint build once: the second waits and finds it built), then:
//!
//! 1. [`solve`]s the spec with rattler (or reads a [`lock`] file: no solve, and its
//!    pinned pip set is part of the blueprint);
//! 2. [`install::download`]s what the store's package cache (`pkgs-v1/`) lacks, in
//!    parallel, checked against each record's sha256, and [`pins::fetch`]es the lock's
//!    pip files, each checked against its sha256 (before anything is installed);
//! 3. [`install::install`]s into a fixed-length build prefix under `build-v1/` (as long
//!    as the packages' shortest binary placeholder allows: [`prefix`]);
//! 4. runs the [`python`] steps: `pip:` lines (from a lock: exactly the pinned files),
//!    then one reproducible bytecode pass;
//! 5. ingests the prefix (tags `bp-<blueprint>-<platform>`, the spec's `name:` and the
//!    user's tag) and removes the build prefix.
//!
//! A build that fails or is killed leaves no tag, so no partial catalog is visible; the
//! next build of the blueprint removes the stale build prefix before it starts.
//!
//! [`resolve`] is `envoci lock`'s: it solves and, for `pip:` entries, installs the
//! conda packages into a build prefix of its own for the environment's pip to resolve
//! against ([`python::pip_resolve`]), then removes it.

pub mod install;
pub mod lock;
pub mod pins;
pub mod prefix;
pub mod python;
pub mod solve;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use rattler::package_cache::PackageCache;
use rattler_conda_types::Subdir;
use serde::Serialize;

use crate::ingest;
use crate::layer::Compression;
use crate::spec::Spec;
use crate::store::{self, Store};
use prefix::{BuildPrefix, Limit};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform is not a conda platform.
    #[error("unknown platform `{0}` (expected e.g. linux-64, osx-arm64, win-64)")]
    Platform(String),
    /// A channel cannot be parsed or read.
    #[error("channel {channel}: {reason}")]
    Channel {
        /// The channel(s) as written in the spec.
        channel: String,
        /// What went wrong.
        reason: String,
    },
    /// No channel of the spec has packages for the platform asked for.
    #[error("no channel of the spec has packages for {platform} (channels: {channels}); build for a platform they have")]
    PlatformMissing {
        /// The platform.
        platform: String,
        /// The spec's channels, as written.
        channels: String,
    },
    /// A build for another platform has `pip:` entries (pip runs the environment's own
    /// interpreter, which cannot run here).
    #[error("the spec has `pip:` entries, which envoci installs only in builds for this machine's platform ({host}), not {platform}: build it on a {platform} machine, or make those packages conda dependencies")]
    ForeignPip {
        /// The platform built for.
        platform: String,
        /// This machine's.
        host: String,
    },
    /// The dependencies cannot be satisfied.
    #[error("cannot solve the environment:\n{0}")]
    Solve(String),
    /// A lock file cannot be read or written.
    #[error("lock file {}: {reason}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A package cannot be fetched, or does not match its recorded sha256.
    #[error("cannot fetch {package} from {url}: {reason}")]
    Fetch {
        /// The package (`name-version-build`).
        package: String,
        /// Where from.
        url: String,
        /// Why (a hash mismatch names both hashes).
        reason: String,
    },
    /// rattler's installer failed.
    #[error("cannot install the packages: {0}")]
    Install(String),
    /// pip (or uv) failed; `message` is the end of its output.
    #[error("{installer} failed:\n{message}")]
    Pip {
        /// `pip` or `uv`.
        installer: &'static str,
        /// What it said.
        message: String,
    },
    /// pip's installation report cannot be read.
    #[error("cannot read pip's installation report: {reason}")]
    PipReport {
        /// What is wrong with it.
        reason: String,
    },
    /// A distribution pip resolved cannot be pinned (a directory, no sha256, ...).
    #[error("cannot pin {package} ({url}) in the lock: {reason}")]
    PipUnpinnable {
        /// `name-version`.
        package: String,
        /// Where pip found it.
        url: String,
        /// Why.
        reason: String,
    },
    /// A pinned pip file does not match the lock's sha256.
    #[error("{package} from {location} does not match the lock: sha256 {actual}, the lock pins {expected}; nothing was installed (lock again if the file was meant to change)")]
    PipHash {
        /// `name-version`.
        package: String,
        /// Where it was fetched from.
        location: String,
        /// The lock's sha256.
        expected: String,
        /// The file's.
        actual: String,
    },
    /// A pinned pip file on disk cannot be read.
    #[error("cannot read {package} at {} (pinned in the lock)", path.display())]
    PipFile {
        /// `name-version`.
        package: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A pinned pip file cannot be downloaded.
    #[error("cannot download {package} from {url} (pinned in the lock)")]
    PipDownload {
        /// `name-version`.
        package: String,
        /// Where from.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The spec has `pip:` entries the lock does not pin (a lock from before pins).
    #[error("lock file {}: it pins no pip packages, but the spec has `pip:` entries; run `envoci lock` again", path.display())]
    PipNotLocked {
        /// The lock file.
        path: PathBuf,
    },
    /// Compiling bytecode failed.
    #[error("cannot compile Python bytecode: {0}")]
    Bytecode(String),
    /// The store's path is too long for a build prefix of the placeholder's length.
    #[error("the store path {} is too long for a build prefix ({limit} bytes at most); use a shorter ENVOCI_HOME", path.display())]
    StoreTooDeep {
        /// The store root.
        path: PathBuf,
        /// The longest usable store path.
        limit: usize,
    },
    /// A package's binary placeholder is shorter than any build prefix in this store.
    #[error("{package} has a {placeholder}-byte binary placeholder (in {path}), so its build prefix may have at most {placeholder} bytes, but one under the store {} has at least {needed}; use an ENVOCI_HOME of at most {store_limit} bytes", store.display())]
    PlaceholderTooShort {
        /// The package (`name-version-build`).
        package: String,
        /// Its file holding the placeholder.
        path: String,
        /// The placeholder's length.
        placeholder: usize,
        /// The store root.
        store: PathBuf,
        /// The shortest build prefix this store allows.
        needed: usize,
        /// The longest store path that would do.
        store_limit: usize,
    },
    /// A local file operation failed.
    #[error("cannot {0}")]
    Io(String, #[source] std::io::Error),
    /// Ingesting the build prefix failed.
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::Platform(_)
            | Error::ForeignPip { .. }
            | Error::PipUnpinnable { .. }
            | Error::PipNotLocked { .. } => crate::ErrorKind::Usage,
            Error::PipHash { .. } => crate::ErrorKind::Integrity,
            Error::PipDownload { .. } => crate::ErrorKind::Network,
            Error::PipFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                crate::ErrorKind::NotFound
            }
            _ => crate::ErrorKind::Other,
        }
    }
}

/// How to build.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Target platform (default: this machine's).
    pub platform: Option<String>,
    /// Build from this lock file instead of solving.
    pub lock: Option<PathBuf>,
    /// An extra tag for the result.
    pub tag: Option<String>,
    /// Parallel package downloads.
    pub jobs: usize,
    /// Layer compression.
    pub compression: Compression,
    /// Where the phases are reported as they start.
    pub progress: crate::progress::Reporter,
}

/// Seconds spent in each phase.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// Solving (0 when building from a lock or finding the blueprint built).
    pub solve: f64,
    /// Fetching packages into the package cache.
    pub download: f64,
    /// Installing into the build prefix.
    pub install: f64,
    /// `pip:` entries.
    pub pip: f64,
    /// The bytecode pass.
    pub bytecode: f64,
    /// Ingesting into the store.
    pub ingest: f64,
    /// Everything, including waiting for a concurrent build of the same blueprint.
    pub total: f64,
}

/// What a build did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The blueprint (full sha256 hex).
    pub blueprint: String,
    /// The platform built for.
    pub platform: String,
    /// Tags the result carries.
    pub tags: Vec<String>,
    /// The manifest digest.
    pub digest: String,
    /// False when the blueprint was already in the store (nothing was built).
    pub built: bool,
    /// Conda packages in the environment.
    pub packages: usize,
    /// Package cache hits and fetches.
    pub downloads: install::Downloads,
    /// `.pyc` files the bytecode pass wrote.
    pub compiled: usize,
    /// `pip` or `uv` when there were `pip:` entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pip_installer: Option<&'static str>,
    /// Pip distributions installed from the lock's pins (`None` when not from a lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pip_pinned: Option<usize>,
    /// Length in bytes of the build prefix (0 when nothing was built): the shortest
    /// binary placeholder of the packages, at most 255.
    pub prefix_len: usize,
    /// Time per phase.
    pub timings: Timings,
}

impl Report {
    /// A report of nothing done yet.
    fn empty() -> Report {
        Report {
            blueprint: String::new(),
            platform: String::new(),
            tags: Vec::new(),
            digest: String::new(),
            built: false,
            packages: 0,
            downloads: install::Downloads::default(),
            compiled: 0,
            pip_installer: None,
            pip_pinned: None,
            prefix_len: 0,
            timings: Timings::default(),
        }
    }
}

/// The platform to build for: `requested` or this machine's.
pub fn platform(requested: Option<&str>) -> Result<Subdir, Error> {
    let name = requested.unwrap_or(crate::artifact::host_platform());
    Subdir::from_str(name).map_err(|_| Error::Platform(name.to_string()))
}

/// Whether environments for `subdir` run on this machine (else a build installs their
/// packages and runs nothing: no link scripts, no bytecode pass, no pip).
pub fn runs_here(subdir: Subdir) -> bool {
    Subdir::current().is_some_and(|host| host == subdir)
}

/// The store's package cache (shared by every build, safe across processes).
pub fn package_cache(store: &Store) -> PackageCache {
    PackageCache::new(store.package_cache_dir())
}

/// Solves `spec` for `platform` without building; the records in install order.
pub fn solve_spec(
    store: &Store,
    spec: &Spec,
    platform: Subdir,
) -> Result<Vec<rattler_conda_types::RepoDataRecord>, Error> {
    runtime()?.block_on(solve::solve(spec, platform, &store.repodata_cache_dir()))
}

/// Finds the manifest digest of `blueprint`'s build in the store, if there is one.
pub fn find_built(store: &Store, blueprint: &str, platform: &str) -> Option<String> {
    let tag = crate::artifact::blueprint_tag(blueprint, platform);
    store.resolve(&tag).ok().map(|d| d.digest().to_string())
}

/// The blueprint of `spec` for `platform`, built from the lock file `lock` when given:
/// a lock's pinned pip set is part of it (two locks of one spec pinning different pip
/// files are two environments).
pub fn blueprint(spec: &Spec, platform: Subdir, lock: Option<&Path>) -> Result<String, Error> {
    let options = Options {
        lock: lock.map(Path::to_path_buf),
        ..Options::default()
    };
    let locked = read_lock(spec, &options, platform)?;
    Ok(blueprint_of(spec, &platform.to_string(), locked.as_ref()))
}

fn blueprint_of(spec: &Spec, platform: &str, locked: Option<&lock::Locked>) -> String {
    let pins: Vec<String> = locked
        .and_then(|l| l.pip.as_deref())
        .unwrap_or_default()
        .iter()
        .map(pins::Pin::requirement)
        .collect();
    spec.blueprint_pinned(platform, &pins)
}

/// The lock file of `options`, read, refusing one that does not pin the spec's `pip:`
/// entries.
fn read_lock(
    spec: &Spec,
    options: &Options,
    subdir: Subdir,
) -> Result<Option<lock::Locked>, Error> {
    let Some(path) = &options.lock else {
        return Ok(None);
    };
    let locked = lock::read(path, subdir)?;
    locked.pip_for(spec, path)?;
    Ok(Some(locked))
}

/// What a lock pins: the conda packages and, for a spec with `pip:` entries, the pip set.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The conda packages, in install order.
    pub records: Vec<rattler_conda_types::RepoDataRecord>,
    /// The pinned pip distributions (`None`: the spec has no `pip:` entries).
    pub pip: Option<Vec<pins::Pin>>,
}

/// Solves `spec` for `platform` and resolves its `pip:` entries with the environment's
/// own pip: the conda packages are installed into a build prefix (removed afterwards)
/// for pip to resolve against. Nothing is tagged.
pub fn resolve(store: &Store, spec: &Spec, subdir: Subdir, jobs: usize) -> Result<Resolved, Error> {
    if !spec.pip.is_empty() && !runs_here(subdir) {
        return Err(Error::ForeignPip {
            platform: subdir.to_string(),
            host: crate::artifact::host_platform().to_string(),
        });
    }
    let records = solve_spec(store, spec, subdir)?;
    if spec.pip.is_empty() {
        return Ok(Resolved { records, pip: None });
    }
    let tag = format!("lock-{}", spec.blueprint(&subdir.to_string()));
    let _writing = store.writing()?;
    let scratch = store.scratch()?;
    let options = Options {
        jobs,
        ..Options::default()
    };
    let locked = lock::Locked {
        records: records.clone(),
        pip: None,
        dir: spec.dir.clone(),
    };
    let mut report = Report::empty();
    let prefix = install_packages(
        store,
        spec,
        &options,
        (subdir, Some(&locked)),
        (&tag, scratch.dir()),
        &mut report,
    )?;
    let pins = python::pip_resolve(prefix.path(), &spec.pip, &spec.dir, scratch.dir())?;
    Ok(Resolved {
        records,
        pip: Some(pins),
    })
}

/// Builds `spec` into `store` (or finds it built). See the module docs.
pub fn build(store: &Store, spec: &Spec, options: &Options) -> Result<Report, Error> {
    let start = Instant::now();
    let subdir = platform(options.platform.as_deref())?;
    let platform_name = subdir.to_string();
    let locked = read_lock(spec, options, subdir)?;
    let blueprint = blueprint_of(spec, &platform_name, locked.as_ref());
    let bp_tag = crate::artifact::blueprint_tag(&blueprint, &platform_name);
    let extra_tags = extra_tags(spec, options, &platform_name)?;
    let _build_lock = store.lock_build(&bp_tag)?;
    // The package cache and the build prefix are in use: gc waits for this build.
    let _writing = store.writing()?;

    let mut tags = vec![bp_tag.clone()];
    tags.extend(extra_tags.iter().cloned());
    let mut report = Report {
        blueprint,
        platform: platform_name,
        tags,
        ..Report::empty()
    };
    if let Some(digest) = find_built(store, &report.blueprint, &report.platform) {
        // Built before (or by the build this one waited for): only tag it.
        let descriptor = store.resolve(&bp_tag)?;
        for tag in &extra_tags {
            store.set_tag(tag, &descriptor)?;
        }
        let catalog = crate::artifact::load(store, &bp_tag).ok();
        report.digest = digest;
        report.packages = catalog.map_or(0, |a| a.catalog.records.len());
    } else {
        if !spec.pip.is_empty() && !runs_here(subdir) {
            return Err(Error::ForeignPip {
                platform: report.platform,
                host: crate::artifact::host_platform().to_string(),
            });
        }
        let scratch = store.scratch()?;
        let prefix = install_packages(
            store,
            spec,
            options,
            (subdir, locked.as_ref()),
            (&bp_tag, scratch.dir()),
            &mut report,
        )?;
        options
            .progress
            .begin("pip and bytecode", 0, crate::progress::Unit::Phase);
        let pip = match &locked {
            Some(l) => PipStep::Pinned(l.pip.as_deref().unwrap_or_default()),
            None => PipStep::Resolve(&spec.pip),
        };
        finish_prefix(
            spec,
            subdir,
            prefix.path(),
            (pip, scratch.dir()),
            &mut report,
        )?;
        let t = Instant::now();
        options
            .progress
            .begin("ingesting", 0, crate::progress::Unit::Phase);
        let snapshot = ingest::snapshot(
            store,
            prefix.path(),
            &ingest::Options {
                tag: Some(bp_tag.clone()),
                compression: options.compression,
                platform: Some(report.platform.clone()),
                blueprint: Some(report.blueprint.clone()),
                spec: serde_json::to_value(spec.canonical()).ok(),
                // The default, always: a blueprint must give one layering.
                max_layers: None,
                build_prefix: true,
                pip_sha256: pip_sha256(locked.as_ref()),
            },
        )?;
        let descriptor = store.resolve(&bp_tag)?;
        for tag in &extra_tags {
            store.set_tag(tag, &descriptor)?;
        }
        report.timings.ingest = t.elapsed().as_secs_f64();
        options.progress.end();
        drop(prefix);
        report.digest = snapshot.manifest.oci();
        report.built = true;
    }
    report.timings.total = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The tag the spec's `name:` gives a build for `platform`: the name itself for this
/// machine's platform, `NAME-PLATFORM` for another (so building one spec for several
/// platforms leaves one tag for each).
pub fn name_tag(name: &str, platform: &str) -> String {
    if platform == crate::artifact::host_platform() {
        name.to_string()
    } else {
        format!("{name}-{platform}")
    }
}

/// The tags a build gives besides `bp-…`: the spec's `name:` ([`name_tag`]), then
/// `--tag` (each checked before anything is built).
fn extra_tags(spec: &Spec, options: &Options, platform: &str) -> Result<Vec<String>, Error> {
    let name = spec.name.as_deref().map(|n| name_tag(n, platform));
    let mut tags: Vec<String> = name.into_iter().chain(options.tag.clone()).collect();
    tags.dedup();
    for tag in &tags {
        store::validate_tag(tag).map_err(ingest::Error::from)?;
    }
    Ok(tags)
}

/// Solves (or takes the lock's records), fetches what the package cache lacks and the
/// lock's pip files (into `scratch/wheels`, each checked before anything is installed),
/// and installs the packages into a new build prefix named after `tag`.
fn install_packages(
    store: &Store,
    spec: &Spec,
    options: &Options,
    (subdir, locked): (Subdir, Option<&lock::Locked>),
    (tag, scratch): (&str, &Path),
    report: &mut Report,
) -> Result<BuildPrefix, Error> {
    let runtime = runtime()?;
    let phase = |name: &str| {
        options
            .progress
            .begin(name, 0, crate::progress::Unit::Phase)
    };
    let t = Instant::now();
    phase("solving");
    let records = match locked {
        Some(l) => l.records.clone(),
        None => runtime.block_on(solve::solve(spec, subdir, &store.repodata_cache_dir()))?,
    };
    report.timings.solve = t.elapsed().as_secs_f64();

    let t = Instant::now();
    phase(&format!("fetching {} packages", records.len()));
    let cache = package_cache(store);
    let (downloads, dirs) =
        runtime.block_on(install::download(&cache, &records, options.jobs.max(1)))?;
    report.downloads = downloads;
    if let Some((pins, dir)) = locked.and_then(|l| Some((l.pip.as_deref()?, &l.dir))) {
        phase(&format!("fetching {} pip files", pins.len()));
        let wheels = scratch.join("wheels");
        std::fs::create_dir_all(&wheels)
            .map_err(|e| Error::Io(format!("create {}", wheels.display()), e))?;
        runtime.block_on(pins::fetch(pins, dir, &wheels))?;
    }
    report.timings.download = t.elapsed().as_secs_f64();

    let named: Vec<(String, PathBuf)> = records.iter().map(package_name).zip(dirs).collect();
    let limit = Limit::of_packages(&named)?;
    let prefix = BuildPrefix::create(store, tag, limit.as_ref())?;
    report.prefix_len = prefix.path_len();
    let t = Instant::now();
    report.packages = records.len();
    phase(&format!("installing {} packages", records.len()));
    runtime.block_on(install::install(
        cache,
        prefix.path(),
        records,
        spec.dependencies.clone(),
        subdir,
    ))?;
    scrub_prefix_records(prefix.path())?;
    report.timings.install = t.elapsed().as_secs_f64();
    options.progress.end();
    Ok(prefix)
}

/// The sha256 of each pinned pip file of `locked`, by [`ingest::pip_key`].
fn pip_sha256(locked: Option<&lock::Locked>) -> std::collections::BTreeMap<String, String> {
    locked
        .and_then(|l| l.pip.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|p| (ingest::pip_key(&p.name, &p.version), p.sha256.clone()))
        .collect()
}

/// How a build installs pip distributions.
enum PipStep<'a> {
    /// Resolve and install the spec's `pip:` lines.
    Resolve(&'a [String]),
    /// Install exactly these pins, fetched into `scratch/wheels`.
    Pinned(&'a [pins::Pin]),
}

/// What follows the conda packages in the prefix: `pip:` entries and the bytecode pass
/// (only for this machine's platform, whose interpreter runs here), and the variables.
fn finish_prefix(
    spec: &Spec,
    subdir: Subdir,
    prefix: &Path,
    (pip, scratch): (PipStep<'_>, &Path),
    report: &mut Report,
) -> Result<(), Error> {
    let t = Instant::now();
    let installer = python::Installer::detect(prefix);
    match pip {
        PipStep::Resolve([]) => {}
        PipStep::Resolve(lines) => {
            python::pip_install(prefix, lines, &spec.dir, scratch, &installer)?;
            report.pip_installer = Some(installer.name());
        }
        PipStep::Pinned(pins) => {
            if !pins.is_empty() {
                let wheels = scratch.join("wheels");
                python::pip_install_pinned(prefix, pins, &wheels, scratch, &installer)?;
                report.pip_installer = Some(installer.name());
            }
            report.pip_pinned = Some(pins.len());
        }
    }
    report.timings.pip = t.elapsed().as_secs_f64();
    let t = Instant::now();
    report.compiled = if runs_here(subdir) {
        python::compile_bytecode(prefix, scratch)?
    } else {
        0 // another platform's interpreter does not run here
    };
    report.timings.bytecode = t.elapsed().as_secs_f64();
    write_variables(prefix, spec)
}

/// Fields of `conda-meta/*.json` that name places on the building machine (the store's
/// package cache); removed so the environment layer is the same whichever store built it.
/// `link.source` (the package cache directory) is emptied rather than dropped: tools
/// such as conda-pack require the `link` object, and treat an empty source as a package
/// whose cache is gone (conda-pack writes the same itself).
const MACHINE_FIELDS: &[&str] = &["extracted_package_dir", "package_tarball_full_path"];

/// Drops [`MACHINE_FIELDS`] from every prefix record of the build and empties
/// `link.source`.
fn scrub_prefix_records(prefix: &Path) -> Result<(), Error> {
    let dir = prefix.join("conda-meta");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| Error::Io(format!("read {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let io = |what: &str, e: std::io::Error| Error::Io(format!("{what} {}", path.display()), e);
        let bytes = std::fs::read(&path).map_err(|e| io("read", e))?;
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if let Some(map) = value.as_object_mut() {
            for field in MACHINE_FIELDS {
                map.remove(*field);
            }
            if let Some(link) = map.get_mut("link").and_then(|l| l.as_object_mut()) {
                link.insert("source".into(), "".into());
            }
        }
        // Entry-point scripts are generated with the build prefix in their shebang: their
        // recorded hash and size would differ per store, while their relocated layer
        // content does not.
        if let Some(paths) = value
            .pointer_mut("/paths_data/paths")
            .and_then(|p| p.as_array_mut())
        {
            for entry in paths.iter_mut().filter_map(|e| e.as_object_mut()) {
                let generated = entry
                    .get("path_type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.contains("entry_point"));
                if generated {
                    entry.remove("sha256");
                    entry.remove("size_in_bytes");
                }
            }
        }
        let out = serde_json::to_vec_pretty(&value).map_err(|e| io("serialise", e.into()))?;
        std::fs::write(&path, out).map_err(|e| io("write", e))?;
    }
    Ok(())
}

/// Writes the spec's `variables` where conda keeps them (`conda-meta/state`), so
/// activation (`envoci run`) and the catalog's environment section pick them up.
fn write_variables(prefix: &Path, spec: &Spec) -> Result<(), Error> {
    if spec.variables.is_empty() {
        return Ok(());
    }
    let path = prefix.join("conda-meta/state");
    let state = serde_json::json!({ "env_vars": spec.variables });
    let bytes = crate::json::to_canonical_vec(&state).unwrap_or_default();
    std::fs::write(&path, bytes).map_err(|e| Error::Io(format!("write {}", path.display()), e))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    crate::runtime().map_err(|e| Error::Io("start the async runtime".into(), e))
}

/// `name-version-build` of a record.
fn package_name(record: &rattler_conda_types::RepoDataRecord) -> String {
    let p = &record.package_record;
    format!("{}-{}-{}", p.name.as_normalized(), p.version, p.build)
}
