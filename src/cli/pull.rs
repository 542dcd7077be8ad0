//! `envoci pull REF`

use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, RemoteRef};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to pull: host/repository:tag or host/repository@sha256:...
    reference: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let remote = RemoteRef::parse(&args.reference)?;
    let options = args.transfer.options();
    let (report, local) = super::runtime()?.block_on(transfer::pull(
        store,
        &remote,
        &options,
        args.transfer.platform.as_deref(),
    ))?;
    printer.print(&report, || {
        format!(
            "pulled {local} ({}): {} blobs downloaded ({}, {} resumed), {} already in the store ({})",
            report.digest,
            report.blobs_transferred,
            human_bytes(report.bytes_transferred),
            report.blobs_resumed,
            report.blobs_skipped,
            human_bytes(report.bytes_skipped)
        )
    });
    Ok(ExitCode::SUCCESS)
}
