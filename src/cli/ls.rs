//! `envoci ls [--spaces]`

use std::process::ExitCode;

use envoci::inspect::{self, human_bytes};
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci ls; envoci ls --spaces; envoci ls --json")]
pub struct Args {
    /// List the spaces restored from this store instead: directory, environment,
    /// state, size.
    #[arg(long)]
    spaces: bool,
}

pub fn run(store: &Store, args: Args, printer: &Printer) -> anyhow::Result<ExitCode> {
    if args.spaces {
        return spaces(store, printer);
    }
    let rows = inspect::list(store)?;
    printer.print(&rows, || {
        let width = rows.iter().map(|r| r.tag.len()).max().unwrap_or(0).max(3);
        let mut out = format!(
            "{:<width$} {:<19} {:<13} {:>8} {:>8} {:>10} {:>10}\n",
            "TAG", "DIGEST", "PLATFORM", "PACKAGES", "FILES", "SIZE", "OWN"
        );
        for r in &rows {
            out.push_str(&format!(
                "{:<width$} {:<19} {:<13} {:>8} {:>8} {:>10} {:>10}\n",
                r.tag,
                &r.digest[..19.min(r.digest.len())],
                r.platform,
                r.packages,
                r.files,
                human_bytes(r.size),
                human_bytes(r.exclusive_bytes)
            ));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}

fn spaces(store: &Store, printer: &Printer) -> anyhow::Result<ExitCode> {
    let rows = inspect::spaces(store)?;
    printer.print(&rows, || {
        let width = rows.iter().map(|r| r.path.len()).max().unwrap_or(0).max(5);
        let mut out = format!(
            "{:<width$} {:<19} {:<9} {:>8} {:>10}  TAGS\n",
            "SPACE", "DIGEST", "STATE", "FILES", "SIZE"
        );
        for r in &rows {
            let state = match (r.gone, r.dirty) {
                (true, _) => "gone",
                (false, true) => "dirty",
                (false, false) => "restored",
            };
            out.push_str(&format!(
                "{:<width$} {:<19} {:<9} {:>8} {:>10}  {}\n",
                r.path,
                &r.digest[..19.min(r.digest.len())],
                state,
                r.files,
                human_bytes(r.bytes),
                r.tags.join(", ")
            ));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}
