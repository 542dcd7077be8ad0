//! `envoci restore REF (--target DIR | --space NAME)`

use std::path::PathBuf;
use std::process::ExitCode;

use envoci::space::{self, LinkMode, Options};
use envoci::store::Store;
use envoci::transfer::{self, RemoteRef};

use super::Printer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A tag or manifest digest in the store, or a registry reference
    /// (host/repository:tag), pulled first.
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
    // A registry reference is pulled first (only what the store lacks; a tag may have
    // moved, so the manifest is always asked for), then restored by digest.
    let mut reference = args.reference.clone();
    if RemoteRef::looks_remote(&reference) {
        let remote = RemoteRef::parse(&reference)?;
        let transfer = args.transfer.options();
        let platform = args.transfer.platform.as_deref();
        let (pulled, _) =
            super::runtime()?.block_on(transfer::pull(store, &remote, &transfer, platform))?;
        reference = pulled.digest;
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
