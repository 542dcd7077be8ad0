//! `envoci push LOCAL DEST` (store → registry, OCI layout or archive)

use envoci::error::UsageError;
use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, Location};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci push robot ghcr.io/acme/envs:robot")]
pub struct Args {
    /// A tag or manifest digest in the store.
    local: String,
    /// Where to push: host/repository:tag, oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    reference: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let destination = Location::parse(&args.reference)?;
    if !destination.is_remote() {
        return Err(UsageError(format!("`{}` is not a registry reference (host/repository:tag) nor an OCI layout (oci:DIR[:TAG], oci-archive:FILE[:TAG])", args.reference)).into());
    }
    let options = args.transfer.options()?;
    let report =
        super::runtime()?.block_on(transfer::send(store, &args.local, &destination, &options))?;
    printer.print(&report, || {
        format!(
            "pushed {} to {}: {} uploaded ({}), {} mounted from other repositories, {} already there ({})",
            args.local,
            report.reference,
            super::plural(report.blobs_transferred, "blob"),
            human_bytes(report.bytes_transferred),
            report.blobs_mounted,
            report.blobs_skipped,
            human_bytes(report.bytes_skipped)
        )
    });
    Ok(ExitCode::SUCCESS)
}
