//! `envoci ls`

use std::process::ExitCode;

use envoci::inspect::{self, human_bytes};
use envoci::store::Store;

use super::Printer;

pub fn run(store: &Store, printer: &Printer) -> anyhow::Result<ExitCode> {
    let rows = inspect::list(store)?;
    printer.print(&rows, || {
        let mut out = format!(
            "{:<24} {:<19} {:<13} {:>8} {:>8} {:>10}\n",
            "TAG", "DIGEST", "PLATFORM", "PACKAGES", "FILES", "SIZE"
        );
        for r in &rows {
            out.push_str(&format!(
                "{:<24} {:<19} {:<13} {:>8} {:>8} {:>10}\n",
                r.tag,
                &r.digest[..19.min(r.digest.len())],
                r.platform,
                r.packages,
                r.files,
                human_bytes(r.size)
            ));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}
