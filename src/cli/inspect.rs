//! `envoci inspect REF`

use std::process::ExitCode;

use envoci::artifact;
use envoci::inspect::{human_bytes, listing};
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci inspect robot --json | jq .summary")]
pub struct Args {
    /// A tag or manifest digest in the store.
    reference: String,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let artifact = artifact::load(store, &args.reference)?;
    let summary = listing(&args.reference, &artifact);
    let json = serde_json::json!({ "summary": summary, "manifest": artifact.manifest, "catalog": artifact.catalog });
    printer.print(&json, || {
        let c = &artifact.catalog;
        let mut out = format!(
            "{}\n  digest:      {}\n  platform:    {}\n  tool:        {}\n  placeholder: {} ({} bytes)\n  packages:    {}\n  files:       {}\n  size:        {} ({} compressed)\n",
            args.reference,
            summary.digest,
            c.platform,
            c.tool,
            &c.placeholder[..c.placeholder.len().min(24)],
            c.placeholder.len(),
            c.records.len(),
            summary.files,
            human_bytes(summary.size),
            human_bytes(summary.blob_size),
        );
        if let Some(bp) = &c.blueprint {
            out.push_str(&format!("  blueprint:   {bp}\n"));
        }
        out.push_str(&match c.target_limit() {
            Some((path, len)) => format!("  max target:  {len} bytes (binary file {path})\n"),
            None => "  max target:  any length (no binary file is relocated)\n".to_string(),
        });
        out.push_str(&format!("\n  {:<6} {:<40} {:>7} {:>10} {:>9}  DIGEST\n", "KIND", "LAYER", "FILES", "SIZE", "RELOCATED"));
        for l in &c.layers {
            out.push_str(&format!(
                "  {:<6} {:<40} {:>7} {:>10} {:>9}  {}\n",
                l.kind.as_str(),
                l.title(),
                l.files,
                human_bytes(l.size),
                l.relocations.len(),
                &l.digest.oci()[..19]
            ));
            if !l.packages.is_empty() {
                let names: Vec<String> = l.packages.iter().map(|p| p.name.clone()).collect();
                out.push_str(&format!("         holds: {}\n", names.join(", ")));
            }
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}
