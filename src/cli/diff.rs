//! `envoci diff A B`

use std::process::ExitCode;

use envoci::diff;
use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, Location};

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci diff ghcr.io/acme/envs:v1 ghcr.io/acme/envs:v2 \
(manifests and catalogs only: no layer is downloaded)"
)]
pub struct Args {
    /// The first environment: a store name or digest, a registry reference,
    /// oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    a: String,
    /// The second, likewise.
    b: String,
    #[command(flatten)]
    transfer: super::TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let options = args.transfer.options()?;
    let platform = args.transfer.platform.as_deref();
    let (a, b) = (Location::parse(&args.a)?, Location::parse(&args.b)?);
    let (a_art, b_art) = super::runtime()?.block_on(async {
        let a_art = transfer::peek(store, &a, &options, platform).await?;
        let b_art = transfer::peek(store, &b, &options, platform).await?;
        Ok::<_, transfer::Error>((a_art, b_art))
    })?;
    let d = diff::diff(&args.a, &a_art, &args.b, &b_art);
    printer.print(&d, || text(&d));
    Ok(ExitCode::SUCCESS)
}

fn text(d: &diff::Diff) -> String {
    let mut out = String::new();
    for p in &d.added {
        out.push_str(&format!("+ {} {} {}\n", p.name, p.version, p.build));
    }
    for p in &d.removed {
        out.push_str(&format!("- {} {} {}\n", p.name, p.version, p.build));
    }
    for c in &d.changed {
        out.push_str(&format!("~ {} {} -> {}\n", c.name, c.from, c.to));
    }
    out.push_str(&format!(
        "{} added, {} removed, {} changed; {} of {} layers shared; a machine holding {} \
         downloads {} in {} for {}",
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        d.layers_shared,
        d.b.layers,
        d.a.reference,
        human_bytes(d.bytes_to_pull),
        super::plural(d.blobs_to_pull as u64, "blob"),
        d.b.reference
    ));
    out
}
