//! `envoci check [--verify] [--repair]`

use std::process::ExitCode;

use envoci::check;
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: envoci check --verify   (then, if it lists leftovers: envoci check --repair)"
)]
pub struct Args {
    /// Rehash every blob, CAS file and space file instead of comparing metadata; CAS
    /// files found damaged are repaired from their layer by the next restore.
    #[arg(long)]
    verify: bool,
    /// Make damaged layer indexes again from their layers, and remove what is left
    /// over: dead processes' scratch, killed restores' temporary directories, and blobs
    /// and CAS files no tag and no space references.
    #[arg(long)]
    repair: bool,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let report = check::check(store, args.verify, args.repair)?;
    printer.print(&report, || {
        let mut out = format!(
            "checked {}, {}, {}, {}: {}\n",
            super::plural(report.tags, "tag"),
            super::plural(report.blobs, "blob"),
            super::plural(report.files, "file"),
            super::plural(report.spaces, "space"),
            if report.problems.is_empty() {
                "all consistent".to_string()
            } else {
                super::plural(report.problems.len() as u64, "problem")
            }
        );
        for space in &report.forgotten {
            out.push_str(&format!(
                "  forgot space {space} (its directory was deleted)\n"
            ));
        }
        for layer in &report.rebuilt {
            out.push_str(&format!(
                "  index {layer}: was damaged, made again from the layer\n"
            ));
        }
        for p in &report.problems {
            out.push_str(&format!("  {} {}: {}\n", p.kind, p.subject, p.detail));
        }
        if !report.leftovers.is_empty() {
            let bytes: u64 = report
                .leftovers
                .iter()
                .fold(0, |sum, l| sum.saturating_add(l.bytes));
            let (verb, hint) = if report.removed {
                ("removed", "")
            } else {
                ("left over", "; `envoci check --repair` removes them")
            };
            out.push_str(&format!(
                "{} {verb} ({bytes} bytes{hint}):\n",
                report.leftovers.len()
            ));
            for l in &report.leftovers {
                let what = match l.kind {
                    "scratch" => "scratch of a process that is gone",
                    "temp" => "temporary directory of a killed restore",
                    "blob" => "blob no tag and no space references",
                    _ => "CAS file no layer and no space references",
                };
                out.push_str(&format!(
                    "  {} {}: {what}, {} bytes\n",
                    l.kind, l.subject, l.bytes
                ));
            }
        }
        if report.busy {
            out.push_str(
                "  unreferenced blobs and CAS files kept: another envoci command is writing to the store; run `check --repair` again when it is done\n",
            );
        }
        out
    });
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
