//! `envoci copy SRC DST` (any two of registry, OCI layout, OCI archive, store)

use std::process::ExitCode;

use envoci::inspect::human_bytes;
use envoci::store::Store;
use envoci::transfer::{self, Location};

use super::{Printer, TransferArgs};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci copy ghcr.io/acme/envs:robot oci-archive:robot.tar   (carry it into an air gap)"
)]
pub struct Args {
    /// Source: host/repository:tag (or @sha256:...), oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG], or a name in the store.
    source: String,
    /// Destination: host/repository:tag, oci:DIR[:TAG], oci-archive:FILE[:TAG], or a
    /// new name in the store.
    destination: String,
    /// Copy every platform of a multi-platform index (registry to registry); the
    /// destination gets the same index.
    #[arg(long, conflicts_with = "platform")]
    all_platforms: bool,
    #[command(flatten)]
    transfer: TransferArgs,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let source = Location::parse(&args.source)?;
    let destination = Location::parse(&args.destination)?;
    let options = args.transfer.options()?;
    let runtime = super::runtime()?;
    let copies = if args.all_platforms {
        runtime.block_on(transfer::copy_all_platforms(
            store,
            &source,
            &destination,
            &options,
        ))?
    } else {
        vec![runtime.block_on(transfer::copy(
            store,
            &source,
            &destination,
            &options,
            args.transfer.platform.as_deref(),
        ))?]
    };
    let json: Vec<serde_json::Value> = copies
        .iter()
        .map(|(fetched, sent)| serde_json::json!({ "source": fetched, "destination": sent }))
        .collect();
    let json = match json.as_slice() {
        [one] => one.clone(),
        _ => serde_json::Value::Array(json),
    };
    printer.print(&json, || {
        copies
            .iter()
            .map(|(fetched, sent)| {
                format!(
                    "copied {} to {} ({}): {} blobs fetched ({}), {} sent ({}), {} already at the destination",
                    args.source,
                    args.destination,
                    fetched.digest,
                    fetched.blobs_transferred,
                    human_bytes(fetched.bytes_transferred),
                    sent.blobs_transferred,
                    human_bytes(sent.bytes_transferred),
                    sent.blobs_skipped
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}
