//! `envoci build conda.yaml [--lock FILE] [--platform P] [--tag NAME] [--timings]`,
//! `envoci lock conda.yaml [-o FILE]` and `envoci blueprint conda.yaml [--lock FILE]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use envoci::builder::{self, Report};
use envoci::layer::Compression;
use envoci::spec::Spec;
use envoci::store::Store;

use super::Printer;

/// Options shared by every command that may build (`build`, `restore conda.yaml`).
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build from this lock file (no solving).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Print the time spent in each build phase.
    #[arg(long)]
    pub timings: bool,
}

impl BuildArgs {
    /// The library's build options.
    pub fn options(
        &self,
        tag: Option<String>,
        platform: Option<String>,
        jobs: usize,
    ) -> builder::Options {
        builder::Options {
            platform,
            lock: self.lock.clone(),
            tag,
            jobs,
            compression: Compression::Zstd,
            progress: super::progress::reporter(),
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci build conda.yaml --tag robot --timings")]
pub struct Args {
    /// The environment spec (environment.yml dialect).
    spec: PathBuf,
    /// An extra tag for the result (it is always tagged bp-<blueprint>-<platform>, and
    /// with the spec's `name:`).
    #[arg(long)]
    tag: Option<String>,
    /// Conda platform to build for [default: this machine's].
    #[arg(long)]
    platform: Option<String>,
    /// Parallel package downloads.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    #[command(flatten)]
    build: BuildArgs,
}

/// Reads a spec and warns about keys envoci ignores.
pub fn read_spec(path: &Path) -> anyhow::Result<Spec> {
    let spec = Spec::from_path(path)?;
    for key in &spec.unknown_keys {
        eprintln!("warning: {}", key.describe(path));
    }
    Ok(spec)
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let spec = read_spec(&args.spec)?;
    let report = builder::build(
        store,
        &spec,
        &args.build.options(args.tag, args.platform, args.jobs),
    )?;
    print_report(&report, args.build.timings, printer);
    Ok(ExitCode::SUCCESS)
}

/// Prints a build report (text: one line, plus the phases with `--timings`).
pub fn print_report(report: &Report, timings: bool, printer: &Printer) {
    printer.print(report, || {
        let mut text = if report.built {
            format!(
                "built {} ({}): {} packages ({} fetched, {} from the package cache){}, {} .pyc compiled, in {:.2}s",
                report.tags.join(", "),
                report.digest,
                report.packages,
                report.downloads.fetched,
                report.downloads.cached,
                report
                    .pip_installer
                    .map(|p| format!(", pip entries with {p}"))
                    .unwrap_or_default(),
                report.compiled,
                report.timings.total
            ) + &short_prefix_note(report)
        } else {
            already_built(report)
        };
        if timings {
            text.push('\n');
            text.push_str(&timings_line(report));
        }
        text
    });
}

/// `bp-… is built already (sha256:…): tagged NAME` (or `: nothing to do`).
fn already_built(report: &Report) -> String {
    let (bp, others) = report
        .tags
        .split_first()
        .map_or(("", &[][..]), |(b, o)| (b.as_str(), o));
    let done = if others.is_empty() {
        "nothing to do".to_string()
    } else {
        format!("tagged {}", others.join(", "))
    };
    format!("{bp} is built already ({}): {done}", report.digest)
}

/// Says why the build prefix was shorter than 255 bytes, if it was.
fn short_prefix_note(report: &Report) -> String {
    if report.prefix_len < envoci::relocate::PLACEHOLDER.len() {
        format!(
            "; build prefix of {} bytes, the packages' shortest binary placeholder",
            report.prefix_len
        )
    } else {
        String::new()
    }
}

/// `timings: solve 0.12s, download …` for `--timings`.
pub fn timings_line(report: &Report) -> String {
    let t = &report.timings;
    format!(
        "timings: solve {:.2}s, download {:.2}s, install {:.2}s, pip {:.2}s, bytecode {:.2}s, ingest {:.2}s, total {:.2}s",
        t.solve, t.download, t.install, t.pip, t.bytecode, t.ingest, t.total
    )
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci lock conda.yaml -o conda.lock   (then: envoci build conda.yaml --lock conda.lock)"
)]
pub struct LockArgs {
    /// The environment spec.
    spec: PathBuf,
    /// Where to write the lock [default: envoci.lock beside the spec].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Conda platform to solve for [default: this machine's].
    #[arg(long)]
    platform: Option<String>,
    /// Parallel package downloads (a spec with `pip:` entries installs its conda
    /// packages for pip to resolve against).
    #[arg(long, default_value_t = 8)]
    jobs: usize,
}

pub fn lock(store: &Store, args: LockArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let spec = read_spec(&args.spec)?;
    let platform = builder::platform(args.platform.as_deref())?;
    let resolved = builder::resolve(store, &spec, platform, args.jobs)?;
    let records = &resolved.records;
    let output = args.output.unwrap_or_else(|| spec.dir.join("envoci.lock"));
    builder::lock::write(&output, &spec, platform, records, resolved.pip.as_deref())?;
    let pip: Vec<String> = resolved
        .pip
        .iter()
        .flatten()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
    let json = serde_json::json!({
        "lock": output,
        "platform": platform.to_string(),
        "packages": records.iter().map(|r| format!("{}={}={}", r.package_record.name.as_normalized(), r.package_record.version, r.package_record.build)).collect::<Vec<_>>(),
        "pip": pip,
    });
    printer.print(&json, || {
        let pinned = if resolved.pip.is_some() {
            let s = if pip.len() == 1 { "" } else { "s" };
            format!(" and {} pip distribution{s}", pip.len())
        } else {
            String::new()
        };
        format!(
            "locked {} packages{pinned} for {platform} in {}",
            records.len(),
            output.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci blueprint conda.yaml   (a CI cache key: same spec, same platform, same blueprint)"
)]
pub struct BlueprintArgs {
    /// The environment spec.
    spec: PathBuf,
    /// Conda platform [default: this machine's].
    #[arg(long)]
    platform: Option<String>,
    /// The blueprint of a build from this lock file (its pinned pip set is part of it).
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
}

pub fn blueprint(args: BlueprintArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let spec = read_spec(&args.spec)?;
    let subdir = builder::platform(args.platform.as_deref())?;
    let platform = subdir.to_string();
    let blueprint = builder::blueprint(&spec, subdir, args.lock.as_deref())?;
    let tag = envoci::artifact::blueprint_tag(&blueprint, &platform);
    let json = serde_json::json!({ "blueprint": blueprint, "platform": platform, "tag": tag });
    printer.print(&json, || blueprint.clone());
    Ok(ExitCode::SUCCESS)
}
