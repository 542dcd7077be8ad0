//! `envoci pull REF` (registry, OCI layout or archive → store)

use envoci::error::UsageError;
use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, Location};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci pull ghcr.io/acme/envs:robot --mirror cache.lan:5000")]
pub struct Args {
    /// What to pull: host/repository:tag, host/repository@sha256:..., oci:DIR[:TAG]
    /// or oci-archive:FILE[:TAG].
    reference: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let source = Location::parse(&args.reference)?;
    if !source.is_remote() {
        return Err(UsageError(format!("`{}` is not a registry reference (host/repository:tag) nor an OCI layout (oci:DIR[:TAG], oci-archive:FILE[:TAG])", args.reference)).into());
    }
    let options = args.transfer.options()?;
    let (report, local) = super::runtime()?.block_on(transfer::fetch(
        store,
        &source,
        &options,
        args.transfer.platform.as_deref(),
    ))?;
    printer.print(&report, || {
        format!(
            "pulled {local} ({}): {} downloaded ({}, {} resumed), {} already in the store ({}){}",
            report.digest,
            super::plural(report.blobs_transferred, "blob"),
            human_bytes(report.bytes_transferred),
            report.blobs_resumed,
            report.blobs_skipped,
            human_bytes(report.bytes_skipped),
            from_mirrors(&report)
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `; from mirror M: the manifest and 3 blobs (2.1 MiB)` for each mirror that served
/// part of the pull.
pub(super) fn from_mirrors(report: &transfer::Report) -> String {
    report
        .endpoints
        .iter()
        .filter(|e| e.mirror)
        .map(|e| {
            let manifest = if e.manifest { "the manifest and " } else { "" };
            format!(
                "; from mirror {}: {manifest}{} ({})",
                e.endpoint,
                super::plural(e.blobs, "blob"),
                human_bytes(e.bytes)
            )
        })
        .collect()
}
