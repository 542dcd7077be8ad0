//! Progress of long operations (pulls, restores): the library reports what it has done
//! through [`Progress`]; the command line draws it on a terminal and nowhere else.

use std::sync::Arc;

/// What a phase counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes transferred.
    Bytes,
    /// Files written.
    Files,
    /// Nothing counted: a phase that takes a while (solving, installing).
    Phase,
}

/// Receives progress; every method may be called from several threads at once.
pub trait Progress: Send + Sync {
    /// A phase starts (`pulling`, `restoring`), with its total, in `unit`.
    fn begin(&self, _phase: &str, _total: u64, _unit: Unit) {}
    /// `done` more of the current phase is done.
    fn advance(&self, _done: u64) {}
    /// The current phase is over.
    fn end(&self) {}
}

/// Progress nobody watches.
#[derive(Debug)]
pub struct Silent;

impl Progress for Silent {}

/// A shared handle to where progress goes (cloned into options; [`Silent`] by default).
#[derive(Clone)]
pub struct Reporter(pub Arc<dyn Progress>);

impl Reporter {
    /// Progress to `sink`.
    pub fn new(sink: impl Progress + 'static) -> Reporter {
        Reporter(Arc::new(sink))
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter(Arc::new(Silent))
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl std::ops::Deref for Reporter {
    type Target = dyn Progress;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
