//! `envoci restore REF (--target DIR | --space NAME)`

use std::path::PathBuf;
use std::process::ExitCode;

use envoci::builder;
use envoci::space::{self, LinkMode, Options};
use envoci::spec::{looks_like_spec, Spec};
use envoci::store::Store;
use envoci::transfer::{self, Location, RemoteRef};

use super::Printer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A tag or manifest digest in the store, a registry reference
    /// (host/repository:tag, pulled first), an OCI layout or archive
    /// (oci:DIR[:TAG], oci-archive:FILE[:TAG]: only what the store lacks is copied),
    /// or a conda.yaml (restored from the store
    /// if its blueprint is there, else from `--from`, else built).
    reference: String,
    /// Restore into this directory.
    #[arg(long, conflicts_with = "space", required_unless_present = "space")]
    target: Option<PathBuf>,
    /// Restore into the managed space NAME under the store.
    #[arg(long)]
    space: Option<String>,
    /// How files get into the space.
    #[arg(long, value_enum, default_value_t = LinkMode::Auto)]
    link: LinkMode,
    /// Replace the content of a directory that is not an envoci space.
    #[arg(long)]
    force: bool,
    /// Compare existing files by content, not only by metadata.
    #[arg(long)]
    verify: bool,
    /// With a conda.yaml: a registry repository to look for a prebuilt environment in
    /// (by its `bp-<blueprint>-<platform>` tag) before building.
    #[arg(long, value_name = "REPO")]
    from: Option<String>,
    /// With a conda.yaml: never build; fail if the environment is not in the store
    /// (or in `--from`).
    #[arg(long)]
    no_build: bool,
    /// With a conda.yaml: push what was built to this reference (host/repo:tag).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    #[command(flatten)]
    build: super::build::BuildArgs,
    #[command(flatten)]
    transfer: super::TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let target = match (&args.target, &args.space) {
        (Some(t), _) => t.clone(),
        (None, Some(name)) => space::managed_space(store, name)?,
        (None, None) => anyhow::bail!("give --target DIR or --space NAME"),
    };
    let options = Options {
        link: args.link,
        force: args.force,
        verify: args.verify,
    };
    // A registry reference or a layout is fetched first (only what the store lacks; a
    // tag may have moved, so the manifest is always read), then restored by digest.
    let mut reference = args.reference.clone();
    if looks_like_spec(&reference) {
        reference = from_spec(store, &args)?;
    } else {
        let source = Location::parse(&reference)?;
        if source.is_remote() {
            let transfer = args.transfer.options();
            let platform = args.transfer.platform.as_deref();
            let (fetched, _) =
                super::runtime()?.block_on(transfer::fetch(store, &source, &transfer, platform))?;
            reference = fetched.digest;
        }
    }
    let report = space::restore(store, &reference, &target, &options)?;
    printer.print(&report, || {
        let methods: Vec<String> = report
            .methods
            .iter()
            .map(|(m, n)| format!("{n} {m}"))
            .collect();
        let how = if methods.is_empty() {
            String::new()
        } else {
            format!(" ({})", methods.join(", "))
        };
        let verb = if report.created { "created" } else { "updated" };
        format!(
            "{verb} {}: {} written{how}, {} removed, {} unchanged",
            report.target.display(),
            report.written,
            report.removed,
            report.unchanged
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// The manifest digest for a spec: its blueprint in the store, else its `bp-` tag in
/// `--from` (pulled), else built (unless `--no-build`) and, with `--push`, pushed.
fn from_spec(store: &Store, args: &Args) -> anyhow::Result<String> {
    let spec = super::build::read_spec(std::path::Path::new(&args.reference))?;
    let platform = builder::platform(args.transfer.platform.as_deref())?.to_string();
    let blueprint = spec.blueprint(&platform);
    if let Some(digest) = builder::find_built(store, &blueprint, &platform) {
        return Ok(digest);
    }
    let transfer = args.transfer.options();
    if let Some(repo) = &args.from {
        let remote = RemoteRef::parse(repo)?.with_tag(&Spec::blueprint_tag(&blueprint, &platform));
        match super::runtime()?.block_on(transfer::pull(store, &remote, &transfer, Some(&platform)))
        {
            Ok((pulled, _)) => return Ok(pulled.digest),
            Err(transfer::Error::NotFound { .. }) => {
                eprintln!("{remote} is not in the registry: building");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if args.no_build {
        anyhow::bail!(
            "{} (blueprint {}) is not built for {platform} in the store{}; run `envoci build {}` or drop --no-build",
            args.reference,
            &blueprint[..16],
            args.from.as_ref().map(|r| format!(" nor in {r}")).unwrap_or_default(),
            args.reference
        );
    }
    let options = args
        .build
        .options(None, Some(platform.clone()), args.transfer.jobs);
    let report = builder::build(store, &spec, &options)?;
    if args.build.timings {
        eprintln!("{}", super::build::timings_line(&report));
    }
    if let Some(target) = &args.push {
        let remote = RemoteRef::parse(target)?;
        super::runtime()?.block_on(transfer::push(store, &report.digest, &remote, &transfer))?;
    }
    Ok(report.digest)
}
