//! `envoci check [--verify]`

use std::process::ExitCode;

use envoci::check;
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rehash every blob, CAS file and space file instead of comparing metadata.
    #[arg(long)]
    verify: bool,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    let report = check::check(store, args.verify)?;
    printer.print(&report, || {
        let mut out = format!(
            "checked {} tags, {} blobs, {} files, {} spaces: {}\n",
            report.tags,
            report.blobs,
            report.files,
            report.spaces,
            if report.problems.is_empty() {
                "all consistent".to_string()
            } else {
                format!("{} problems", report.problems.len())
            }
        );
        for space in &report.forgotten {
            out.push_str(&format!(
                "  forgot space {space} (its directory was deleted)\n"
            ));
        }
        for p in &report.problems {
            out.push_str(&format!("  {} {}: {}\n", p.kind, p.subject, p.detail));
        }
        out
    });
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
