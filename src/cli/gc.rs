//! `envoci rm REF…` and `envoci gc`

use std::process::ExitCode;

use envoci::gc;
use envoci::inspect::human_bytes;
use envoci::store::Store;

use super::Printer;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Spaces restored from a removed tag keep working, and `gc` keeps \
what they use until their directory is deleted.\n\nExample: envoci rm robot sha256:3f2a9c1b7e44"
)]
pub struct RmArgs {
    /// Tags, or manifest digests (any unique prefix of at least 6 hex digits, as `ls`
    /// prints): every tag naming that manifest goes.
    #[arg(required = true, value_name = "REF")]
    references: Vec<String>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example: envoci gc --unused-for 30d --dry-run")]
pub struct GcArgs {
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove tags not made, pulled or restored for DURATION (`12h`, `30d`, `8w`).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    unused_for: Option<std::time::Duration>,
    /// Keep rattler's package and repodata caches (the next build downloads less).
    #[arg(long)]
    keep_cache: bool,
}

/// What `rm` did.
#[derive(serde::Serialize)]
struct Removed {
    removed: Vec<String>,
}

pub fn rm(store: &Store, args: RmArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    // Every reference is resolved before anything is removed: a typo removes nothing.
    let mut names = Vec::new();
    for reference in &args.references {
        for name in store.tags_named(reference)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let removed = store.remove_refs(&names)?;
    let report = Removed { removed };
    printer.print(&report, || {
        format!(
            "removed {}: {}; `envoci gc` reclaims the disk only they used",
            super::plural(report.removed.len() as u64, "tag"),
            report.removed.join(", ")
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub fn gc(store: &Store, args: GcArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let options = gc::Options {
        dry_run: args.dry_run,
        unused_for: args.unused_for,
        keep_cache: args.keep_cache,
    };
    let waiting = || eprintln!("waiting for other envoci processes writing to the store…");
    let report = gc::gc(store, &options, waiting)?;
    printer.print(&report, || {
        let verb = if report.dry_run {
            "would free"
        } else {
            "freed"
        };
        let mut out = format!("{verb} {}", human_bytes(report.bytes_freed));
        for (kind, removed) in &report.removed {
            out.push_str(&format!(
                "\n  {:<12} {:>8} {:>12}",
                kind,
                removed.items,
                human_bytes(removed.bytes)
            ));
        }
        if !report.tags.is_empty() {
            out.push_str(&format!("\n  unused tags: {}", report.tags.join(", ")));
        }
        if !report.forgotten_spaces.is_empty() {
            let gone = report.forgotten_spaces.join(", ");
            out.push_str(&format!("\n  spaces whose directory is gone: {gone}"));
        }
        out
    });
    Ok(ExitCode::SUCCESS)
}
