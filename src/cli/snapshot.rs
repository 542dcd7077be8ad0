//! `envoci snapshot PREFIX [--tag NAME]`

use std::path::PathBuf;
use std::process::ExitCode;

use envoci::ingest::{self, Options};
use envoci::inspect::human_bytes;
use envoci::layer::Compression;
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci snapshot /opt/conda/envs/robot --tag robot")]
pub struct Args {
    /// The environment directory (made by conda, mamba, micromamba, pixi or rattler).
    prefix: PathBuf,
    /// Tag for the snapshot [default: the directory's name].
    #[arg(long)]
    tag: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    compression: Compression,
    /// Most layers in the manifest; above it the smallest packages share layers.
    #[arg(long, value_name = "N", default_value_t = ingest::DEFAULT_MAX_LAYERS as u64,
          value_parser = clap::value_parser!(u64).range(3..=100_000))]
    max_layers: u64,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let options = Options {
        tag: args.tag,
        compression: args.compression,
        max_layers: Some(args.max_layers as usize),
        ..Options::default()
    };
    let snap = ingest::snapshot(store, &args.prefix, &options)?;
    let json = serde_json::json!({
        "tag": snap.tag,
        "digest": snap.manifest.oci(),
        "platform": snap.catalog.platform,
        "packages": snap.catalog.records.len(),
        "layers": snap.catalog.layers.len(),
        "files": snap.files,
        "bytes": snap.bytes,
        "relocated": snap.catalog.layers.iter().map(|l| l.relocations.len()).sum::<usize>(),
    });
    printer.print(&json, || {
        format!(
            "snapshot {} ({}): {} packages, {} layers, {} files, {}",
            snap.tag,
            snap.manifest.oci(),
            snap.catalog.records.len(),
            snap.catalog.layers.len(),
            snap.files,
            human_bytes(snap.bytes)
        )
    });
    Ok(ExitCode::SUCCESS)
}
