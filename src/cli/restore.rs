//! `envoci restore REF (--target DIR | --space NAME)`

use std::path::PathBuf;
use std::process::ExitCode;

use envoci::space::{self, LinkMode, Options};
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A tag or manifest digest in the store.
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
    let report = space::restore(store, &args.reference, &target, &options)?;
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
