//! Progress bars: drawn on stderr when it is a terminal, and not under `--json` or
//! `--quiet`; anywhere else nothing changes (logs and pipes see the same lines as
//! before). The final one-line summary is printed as always.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use envoci::progress::{Progress, Reporter, Unit};
use indicatif::{ProgressBar, ProgressStyle};

/// Whether bars are drawn, decided once at start.
static DRAW: OnceLock<bool> = OnceLock::new();

/// Decides whether to draw bars for this run.
pub fn init(json: bool, quiet: bool) {
    let _ = DRAW.set(!json && !quiet && std::io::stderr().is_terminal());
}

/// Where the library's progress goes for this run.
pub fn reporter() -> Reporter {
    if *DRAW.get().unwrap_or(&false) {
        Reporter::new(Bars::default())
    } else {
        Reporter::default()
    }
}

/// One bar per phase.
#[derive(Default)]
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn begin(&self, phase: &str, total: u64, unit: Unit) {
        let template = match unit {
            Unit::Bytes => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            Unit::Files => "{msg:>10} [{bar:30}] {pos}/{len} files",
            Unit::Phase => "{spinner} {msg} {elapsed}",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::new(total).with_style(style);
        bar.set_message(phase.to_string());
        if unit == Unit::Phase {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        if let Ok(mut slot) = self.bar.lock() {
            // A new phase replaces the last one's line.
            if let Some(last) = slot.replace(bar) {
                last.finish_and_clear();
            }
        }
    }

    fn advance(&self, done: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(done);
            }
        }
    }

    fn end(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}
