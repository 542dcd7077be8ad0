//! `envoci copy SRC DST` (registry to registry)

use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, RemoteRef};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source: host/repository:tag or @sha256:...
    source: String,
    /// Destination: host/repository:tag.
    destination: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let source = RemoteRef::parse(&args.source)?;
    let destination = RemoteRef::parse(&args.destination)?;
    let options = args.transfer.options();
    let (pulled, pushed) = super::runtime()?.block_on(transfer::copy(
        store,
        &source,
        &destination,
        &options,
        args.transfer.platform.as_deref(),
    ))?;
    let json = serde_json::json!({ "source": pulled, "destination": pushed });
    printer.print(&json, || {
        format!(
            "copied {} to {} ({}): {} blobs downloaded ({}), {} uploaded ({}), {} already at the destination",
            args.source,
            args.destination,
            pushed.digest,
            pulled.blobs_transferred,
            human_bytes(pulled.bytes_transferred),
            pushed.blobs_transferred,
            human_bytes(pushed.bytes_transferred),
            pushed.blobs_skipped
        )
    });
    Ok(ExitCode::SUCCESS)
}
