//! `envoci push LOCAL REF`

use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, RemoteRef};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A tag or manifest digest in the store.
    local: String,
    /// Where to push: host/repository:tag.
    reference: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let remote = RemoteRef::parse(&args.reference)?;
    let options = args.transfer.options();
    let report =
        super::runtime()?.block_on(transfer::push(store, &args.local, &remote, &options))?;
    printer.print(&report, || {
        format!(
            "pushed {} to {}: {} blobs uploaded ({}), {} already there ({})",
            args.local,
            report.reference,
            report.blobs_transferred,
            human_bytes(report.bytes_transferred),
            report.blobs_skipped,
            human_bytes(report.bytes_skipped)
        )
    });
    Ok(ExitCode::SUCCESS)
}
