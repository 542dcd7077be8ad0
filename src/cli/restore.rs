//! `envoci restore REF (--target DIR | --space NAME)`

use envoci::error::UsageError;
use std::path::PathBuf;
use std::process::ExitCode;

use envoci::builder;
use envoci::provide;
use envoci::space::{self, LinkMode, Options};
use envoci::spec::looks_like_spec;
use envoci::store::Store;
use envoci::transfer::{self, Location, RemoteRef};

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("place").required(true).multiple(false)))]
#[command(
    after_help = "Example: envoci restore ghcr.io/acme/envs:robot --target ./env; envoci restore conda.yaml --target ./env --from ghcr.io/acme/envs"
)]
pub struct Args {
    /// A tag or manifest digest in the store, a registry reference
    /// (host/repository:tag, pulled first), an OCI layout or archive
    /// (oci:DIR[:TAG], oci-archive:FILE[:TAG]: only what the store lacks is copied),
    /// or a conda.yaml (restored from the store
    /// if its blueprint is there, else from `--from`, else built).
    reference: String,
    /// Restore into this directory.
    #[arg(long, value_name = "DIR", group = "place")]
    target: Option<PathBuf>,
    /// Restore into the managed space NAME under the store.
    #[arg(long, value_name = "NAME", group = "place")]
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
    /// A registry repository to look for a prebuilt environment in (by its
    /// `bp-<blueprint>-<platform>` tag) before building.
    #[arg(long, value_name = "REPO", help_heading = "With a conda.yaml")]
    from: Option<String>,
    /// Never build; fail if the environment is not in the store (or in `--from`).
    #[arg(long, help_heading = "With a conda.yaml")]
    no_build: bool,
    /// Push what was built to this reference (host/repo:tag).
    #[arg(long, value_name = "REF", help_heading = "With a conda.yaml")]
    push: Option<String>,
    /// Restore a registry tag from the store's copy, without asking the registry, if
    /// it was pulled within DURATION (`90s`, `15m`, `12h`, `7d`). A digest the store
    /// holds is never asked for.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    max_age: Option<std::time::Duration>,
    /// Make no registry request: restore only what the store holds (a registry
    /// reference pulled before; with a conda.yaml, a blueprint built or pulled before).
    #[arg(long, conflicts_with_all = ["max_age", "from", "push"])]
    offline: bool,
    #[command(flatten, next_help_heading = "With a conda.yaml")]
    build: super::build::BuildArgs,
    #[command(flatten)]
    transfer: super::TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let target = match (&args.target, &args.space) {
        (Some(t), _) => t.clone(),
        (None, Some(name)) => space::managed_space(store, name)?,
        (None, None) => return Err(UsageError("give --target DIR or --space NAME".into()).into()),
    };
    let options = Options {
        link: args.link,
        force: args.force,
        verify: args.verify,
        platform: args.transfer.platform.clone(),
        progress: super::progress::reporter(),
    };
    // A registry reference or a layout is fetched first (only what the store lacks; a
    // tag may have moved, so the manifest is always read), then restored by digest.
    let mut reference = args.reference.clone();
    let (mut pulled, mut naming) = (None, None);
    let started = std::time::Instant::now();
    if looks_like_spec(&reference) {
        reference = from_spec(store, &args)?;
    } else {
        let source = Location::parse(&reference)?;
        if source.is_remote() {
            let transfer = args.transfer.options()?;
            let platform = args.transfer.platform.as_deref();
            let freshness = match (args.offline, args.max_age) {
                (true, _) => transfer::Freshness::Offline,
                (false, Some(age)) => transfer::Freshness::MaxAge(age),
                (false, None) => transfer::Freshness::Ask,
            };
            let fetch =
                transfer::fetch_unless_fresh(store, &source, &transfer, platform, freshness);
            let (fetched, name) = super::runtime()?.block_on(fetch)?;
            reference = fetched.digest.clone();
            (pulled, naming) = (Some(fetched), Some(name));
        }
    }
    // A pull's tag is written (after a sync of the store) while the space is restored.
    let fetched = started.elapsed().as_secs_f64();
    let (report, named) = std::thread::scope(|s| {
        let tagger = s.spawn(|| naming.map(|n| n.apply(store)).transpose());
        let report = space::restore(store, &reference, &target, &options);
        let named = tagger
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (report, named)
    });
    named?;
    let report = report?;
    let output = Output {
        report: &report,
        pulled: pulled.as_ref(),
        timings: Timings {
            fetch: fetched,
            restore: started.elapsed().as_secs_f64() - fetched,
        },
    };
    printer.print(&output, || {
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
        let via = pulled
            .as_ref()
            .map_or(String::new(), super::pull::from_mirrors);
        format!(
            "{verb} {}: {} written{how}, {} removed, {} unchanged{via}",
            report.target.display(),
            report.written,
            report.removed,
            report.unchanged
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// What `restore --json` prints: the space's report, and what was fetched for it.
#[derive(serde::Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a space::Report,
    /// The pull or import that came first (registry references and layouts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pulled: Option<&'a transfer::Report>,
    /// Where the time went.
    timings: Timings,
}

/// Seconds spent getting the environment into the store (pull, import, build; none
/// when it was there) and restoring it (with the tag's sync running alongside).
#[derive(serde::Serialize)]
struct Timings {
    fetch: f64,
    restore: f64,
}

/// The manifest digest for a spec: from the store, `--from`, or built (see
/// [`envoci::provide`]).
fn from_spec(store: &Store, args: &Args) -> anyhow::Result<String> {
    let spec = super::build::read_spec(std::path::Path::new(&args.reference))?;
    let platform = builder::platform(args.transfer.platform.as_deref())?.to_string();
    let from = args.from.as_deref().map(RemoteRef::parse).transpose()?;
    let build_allowed = !args.no_build && !args.offline;
    let push = args.push.as_deref().map(RemoteRef::parse).transpose()?;
    let build = args
        .build
        .options(None, Some(platform.clone()), args.transfer.jobs);
    let request = provide::Request {
        spec: &spec,
        spec_name: &args.reference,
        platform: &platform,
        lock: args.build.lock.as_deref(),
        from: from.as_ref(),
        build: build_allowed.then_some(&build),
        push: push.as_ref(),
        transfer: &args.transfer.options()?,
        notice: &|text| eprintln!("{text}"),
    };
    let provided = provide::from_spec(store, &request)?;
    if args.build.timings {
        let line = match &provided.source {
            provide::Source::Built { report, .. } => super::build::timings_line(report),
            provide::Source::Store => {
                "timings: nothing built (the environment was in the store)".into()
            }
            provide::Source::Pulled(pulled) => {
                format!("timings: nothing built (pulled from {})", pulled.reference)
            }
        };
        eprintln!("{line}");
    }
    Ok(provided.digest)
}
