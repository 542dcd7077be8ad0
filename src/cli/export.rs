//! `envoci export REF... -o FILE.tar|DIR [--since BASE]` and `envoci import FILE|DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::layout::{self, Export, Form, ImportOptions, Layout, Select};
use envoci::transfer::Location;

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci export robot analytics -o envs.tar; envoci export robot-v2 --since robot -o delta.tar"
)]
pub struct ExportArgs {
    /// Environments in the store (tags or manifest digests); each keeps its tag, or
    /// `REF=TAG` names it.
    #[arg(required = true)]
    references: Vec<String>,
    /// The layout to write: a `.tar` file (an OCI archive, replaced whole) or a
    /// directory (created, or added to if it is a layout already).
    #[arg(long, short = 'o', value_name = "FILE.tar|DIR")]
    output: PathBuf,
    /// Leave out every blob of this environment in the store: an incremental bundle
    /// for a site that has it.
    #[arg(long, value_name = "BASE")]
    since: Option<String>,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci import envs.tar   (every blob is checked before anything is committed)"
)]
pub struct ImportArgs {
    /// An OCI archive (tar) or layout directory, e.g. one `envoci export` wrote
    /// (`oci-archive:FILE` and `oci:DIR` work too).
    input: PathBuf,
    /// Conda platform to take from multi-platform indexes [default: this machine's].
    #[arg(long)]
    platform: Option<String>,
}

pub fn export(store: &Store, args: ExportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let items: Vec<Export> = args
        .references
        .iter()
        .map(|r| {
            let (local, name) = r.split_once('=').unwrap_or((r, r));
            Export {
                local: local.to_string(),
                name: name.to_string(),
            }
        })
        .collect();
    let form = Form::guess(&args.output);
    let report = layout::export(
        store,
        &items,
        args.since.as_deref(),
        &args.output,
        form,
        &super::progress::reporter(),
    )?;
    printer.print(&report, || {
        format!(
            "wrote {} ({}): {} blobs ({}){}",
            args.output.display(),
            items
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            report.blobs_transferred,
            human_bytes(report.bytes_transferred),
            match &args.since {
                Some(base) => format!(
                    ", {} blobs of {base} left out ({})",
                    report.blobs_skipped,
                    human_bytes(report.bytes_skipped)
                ),
                None => String::new(),
            }
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub fn import(store: &Store, args: ImportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    // `oci:DIR` and `oci-archive:FILE` are taken too, as everywhere else.
    let location = Location::parse(&args.input.to_string_lossy()).ok();
    let source = match location.as_ref().and_then(Location::layout) {
        Some((path, _, form)) => Layout::open(path, form)?,
        None if args.input.is_dir() => Layout::open_dir(&args.input)?,
        None => Layout::open_archive(&args.input)?,
    };
    let options = ImportOptions {
        platform: args.platform.as_deref(),
        progress: super::progress::reporter(),
    };
    let (report, imported) = layout::import(store, &source, Select::All, options)?;
    let json = serde_json::json!({ "report": report, "imported": imported });
    printer.print(&json, || {
        format!(
            "imported {} from {}: {} blobs added ({}), {} already in the store ({})",
            imported
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            args.input.display(),
            report.blobs_transferred,
            human_bytes(report.bytes_transferred),
            report.blobs_skipped,
            human_bytes(report.bytes_skipped)
        )
    });
    Ok(ExitCode::SUCCESS)
}
