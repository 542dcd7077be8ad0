//! Staging a layer's files on several threads. The thread reading the layer
//! (decompressing, hashing the tar for its diff id, parsing headers) hands small files'
//! bytes, a batch at a time, to a few writer threads, which hash and stage them beside
//! their CAS place; a large file is staged by the reader itself, streamed, so memory
//! stays bounded. One large layer then no longer runs on one core.
//!
//! The tar reader visits files in the order of its entries ([`crate::layer`]), so the
//! n-th file visited is the n-th file entry: results are put back in that order.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use super::cas::Staged;
use super::{CasKey, Error, Result, Scratch, Store};
use crate::digest::Digest;
use crate::layer::{Entry, EntryKind};

/// Files up to this size are read into memory and staged by a writer thread; larger
/// ones are streamed by the reader.
const IN_MEMORY_MAX: u64 = 256 << 10;

/// Batches waiting for a writer, per writer.
const QUEUE_PER_WRITER: usize = 4;

/// Small files are handed to writers in batches of up to this many files or
/// [`BATCH_BYTES`]: one hand-over (a wake-up, a lock) per batch instead of per file.
const BATCH_FILES: usize = 32;

/// See [`BATCH_FILES`]. Every layer unpacking at once may hold one unsent batch: this
/// times the downloads in flight stays well below [`IN_MEMORY_BUDGET`].
const BATCH_BYTES: usize = 256 << 10;

/// Bytes of file content held in memory at once, by every layer this process unpacks
/// (several unpack at a time while they download): the bound on unpacking's memory.
const IN_MEMORY_BUDGET: usize = 16 << 20;

/// What is left of [`IN_MEMORY_BUDGET`].
static BUDGET: Budget = Budget {
    left: Mutex::new(IN_MEMORY_BUDGET),
    freed: Condvar::new(),
};

/// A count of bytes that readers take before queueing a file and writers give back
/// once it is staged.
struct Budget {
    left: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    /// Waits until `bytes` are free, and takes them.
    fn take(&self, bytes: usize) {
        let mut left = lock(&self.left);
        while *left < bytes {
            left = self.freed.wait(left).unwrap_or_else(|p| p.into_inner());
        }
        *left -= bytes;
    }

    /// Takes `bytes` if they are free now.
    fn try_take(&self, bytes: usize) -> bool {
        let mut left = lock(&self.left);
        let free = *left >= bytes;
        if free {
            *left -= bytes;
        }
        free
    }

    fn give(&self, bytes: usize) {
        *lock(&self.left) += bytes;
        self.freed.notify_all();
    }
}

/// The digest a file entry carries until its writer has hashed it.
const PENDING: Digest = Digest([0; 32]);

/// Small files handed to a writer together: each with its ordinal among the layer's
/// files, content and exec bit. It holds its share of [`BUDGET`] until dropped.
#[derive(Default)]
struct Batch {
    files: Vec<(usize, Vec<u8>, bool)>,
    bytes: usize,
}

impl Batch {
    fn is_full(&self) -> bool {
        self.files.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        BUDGET.give(self.bytes);
    }
}

/// What staging one file gave: its ordinal, key, and the staged file (none when the
/// CAS holds it already).
type Done = (usize, CasKey, Option<Staged>);

/// The visitor a layer reader calls for each regular file: path, content, exec bit;
/// returns the digest, or a placeholder filled in once a writer has hashed the file.
pub(super) type Visitor<'v> = dyn FnMut(&str, &mut dyn Read, bool) -> io::Result<Digest> + 'v;

impl Store {
    /// Runs `read` — a layer reader calling its visitor once per regular file, in entry
    /// order — with a visitor that stages each file in `scratch` (with `repair`, a
    /// present but damaged CAS copy is replaced). Fills in the digests of the file
    /// entries `read` returns and gives back its other result and the staged files,
    /// each distinct content once.
    pub(super) fn stage_layer<T>(
        &self,
        scratch: &Scratch,
        repair: bool,
        uncompressed_size: u64,
        read: impl FnOnce(&mut Visitor<'_>) -> Result<(Vec<Entry>, T)>,
    ) -> Result<(Vec<Entry>, T, Vec<Staged>)> {
        let writers = writer_count(uncompressed_size);
        let (jobs, queue) = mpsc::sync_channel::<Batch>((writers * QUEUE_PER_WRITER).max(1));
        let queue = Arc::new(Mutex::new(queue));
        let done: Mutex<Vec<Done>> = Mutex::new(Vec::new());
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let read = std::thread::scope(|s| {
            for _ in 0..writers {
                let queue = Arc::clone(&queue);
                s.spawn(|| self.write_jobs(repair, queue, &done, &failed));
            }
            let mut feeder = Feeder {
                store: self,
                scratch,
                repair,
                jobs: (writers > 0).then_some(jobs),
                batch: Batch::default(),
                next: 0,
                done: &done,
                failed: &failed,
            };
            let read = read(&mut |_, content, exec| feeder.visit(content, exec)).and_then(|read| {
                let flushed = feeder.flush();
                flushed.map_err(Error::io("stage", scratch.dir()))?;
                Ok(read)
            });
            feeder.jobs = None; // the writers finish the queue and stop
            read
        });
        // A writer's failure (a full disk, say) is the cause of the reader's.
        if let Some(error) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(error);
        }
        let (mut entries, other) = read?;
        let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        let files = fill_digests(&mut entries, &mut done)?;
        Ok((entries, other, files))
    }

    /// A writer thread: stages queued files until the queue closes. After a failure
    /// (its own or another writer's) it only empties the queue, so that the reader,
    /// waiting for memory those files hold, gets on to its end.
    fn write_jobs(
        &self,
        repair: bool,
        queue: Arc<Mutex<Receiver<Batch>>>,
        done: &Mutex<Vec<Done>>,
        failed: &Mutex<Option<Error>>,
    ) {
        loop {
            let batch = match queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(batch) = batch else {
                return; // the reader is done
            };
            if lock(failed).is_some() {
                continue;
            }
            let staged: Result<Vec<Done>> = (batch.files.iter())
                .map(|(ordinal, bytes, exec)| {
                    let (key, staged) = self.cas_stage_bytes(bytes, *exec, repair)?;
                    Ok((*ordinal, key, staged))
                })
                .collect();
            match staged {
                Ok(staged) => lock(done).extend(staged),
                Err(e) => {
                    lock(failed).get_or_insert(e);
                }
            }
        }
    }
}

/// The reader's side: numbers files, queues the small ones, streams the large ones.
struct Feeder<'a> {
    store: &'a Store,
    scratch: &'a Scratch,
    repair: bool,
    jobs: Option<SyncSender<Batch>>,
    /// Small files not yet handed over.
    batch: Batch,
    next: usize,
    done: &'a Mutex<Vec<Done>>,
    failed: &'a Mutex<Option<Error>>,
}

impl Feeder<'_> {
    fn visit(&mut self, content: &mut dyn Read, exec: bool) -> io::Result<Digest> {
        if lock(self.failed).is_some() {
            return Err(io::Error::other("a file of this layer could not be staged"));
        }
        let ordinal = self.next;
        self.next += 1;
        let mut bytes = Vec::new();
        content.take(IN_MEMORY_MAX + 1).read_to_end(&mut bytes)?;
        if self.jobs.is_none() && bytes.len() as u64 <= IN_MEMORY_MAX {
            // No writers (a small layer): staged here, as it is read.
            let (key, staged) = (self.store)
                .cas_stage_bytes(&bytes, exec, self.repair)
                .map_err(io::Error::other)?;
            lock(self.done).push((ordinal, key, staged));
            return Ok(key.digest);
        }
        if bytes.len() as u64 <= IN_MEMORY_MAX {
            if !BUDGET.try_take(bytes.len()) {
                // Memory is short: what this batch holds goes to the writers first.
                self.flush()?;
                BUDGET.take(bytes.len());
            }
            self.batch.bytes += bytes.len();
            self.batch.files.push((ordinal, bytes, exec));
            if self.batch.is_full() {
                self.flush()?;
            }
            return Ok(PENDING);
        }
        let mut rest = (&bytes[..]).chain(content);
        let (key, _, staged) = self
            .store
            .cas_stage(self.scratch, &mut rest, exec, self.repair)
            .map_err(io::Error::other)?;
        lock(self.done).push((ordinal, key, staged));
        Ok(key.digest)
    }

    /// Hands the small files gathered so far to the writers.
    fn flush(&mut self) -> io::Result<()> {
        if self.batch.files.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        match self.jobs.as_ref().map(|jobs| jobs.send(batch)) {
            Some(Ok(())) => Ok(()),
            _ => Err(io::Error::other("the layer's writers stopped")),
        }
    }
}

/// Puts each staged file's digest into its file entry (the n-th file entry is the n-th
/// file staged) and keeps one staged copy of each content.
fn fill_digests(entries: &mut [Entry], done: &mut [Done]) -> Result<Vec<Staged>> {
    done.sort_by_key(|(ordinal, _, _)| *ordinal);
    let mut results = done.iter_mut();
    let out_of_order = |path: &str| {
        let e = io::Error::other("the files staged do not match the layer's entries");
        Error::io("stage", path)(e)
    };
    for entry in entries.iter_mut() {
        let EntryKind::File { digest, exec, .. } = &mut entry.kind else {
            continue;
        };
        match results.next() {
            Some((_, key, _)) if key.exec == *exec => *digest = key.digest,
            _ => return Err(out_of_order(&entry.path)),
        }
    }
    if results.next().is_some() {
        return Err(out_of_order(""));
    }
    let mut seen = HashSet::new();
    Ok(done
        .iter_mut()
        .filter_map(|(_, _, staged)| staged.take())
        // The same content twice in one layer is staged once.
        .filter(|staged| seen.insert(staged.key()))
        .collect())
}

/// Layers smaller than this (uncompressed) are staged by their reader alone: starting
/// writer threads costs more than the few files they would take over (most packages of
/// an environment are this small).
const WRITERS_FROM: u64 = 1 << 20;

/// How many writer threads stage a layer of `uncompressed_size` bytes: none for a small
/// one, else the cores, at most four.
fn writer_count(uncompressed_size: u64) -> usize {
    // Asked once: the answer reads the process's cgroup files each time.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
    });
    if uncompressed_size < WRITERS_FROM {
        0
    } else {
        cores
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::catalog::CatalogLayer;
    use crate::layer::{self, Compression};

    /// Paths and contents.
    type Files = Vec<(String, Vec<u8>)>;

    /// A layer of many small files (some the same content), one file of `big` bytes (more
    /// than [`IN_MEMORY_MAX`]: streamed by the reader), executables, a directory; and its
    /// catalog entry.
    fn layer(big: usize) -> (Vec<u8>, CatalogLayer, Files) {
        let mut files: Files = (0..300)
            .map(|i| {
                (
                    format!("lib/f{i:03}"),
                    format!("content {}", i % 50).into_bytes(),
                )
            })
            .collect();
        files.push(("lib/big".into(), vec![7u8; big]));
        let mut entries = vec![Entry {
            path: "lib".into(),
            kind: EntryKind::Dir,
        }];
        for (i, (path, content)) in files.iter().enumerate() {
            entries.push(Entry {
                path: path.clone(),
                kind: EntryKind::File {
                    digest: Digest::of(content),
                    size: content.len() as u64,
                    exec: i % 7 == 0,
                },
            });
        }
        let (digests, blob) = layer::write_layer(&entries, Compression::Zstd, Vec::new(), |e| {
            let content = files.iter().find(|(p, _)| *p == e.path).unwrap().1.clone();
            Ok(Box::new(io::Cursor::new(content)))
        })
        .unwrap();
        let catalog = CatalogLayer::env_for_tests(
            "env",
            digests.digest,
            digests.diff_id,
            digests.uncompressed_size,
            entries.len() as u64,
        );
        (blob, catalog, files)
    }

    /// Every file below the CAS directory, whatever its name.
    fn files_below(store: &Store) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        store.each_cas_dir_entry(|file| out.push(file.path()));
        out
    }

    fn extract(
        store: &Store,
        blob: &[u8],
        layer: &CatalogLayer,
    ) -> Result<super::super::LayerIndex> {
        let scratch = store.scratch().unwrap();
        let path = scratch.dir().join("blob");
        fs::write(&path, blob).unwrap();
        let file = fs::File::open(&path).unwrap();
        let media = Compression::Zstd.media_type();
        store.extract_layer_from(&scratch, file, layer, media, false)
    }

    /// A layer large enough to be staged by writer threads, and one small enough to be
    /// staged by its reader alone.
    fn both_ways() -> [(Vec<u8>, CatalogLayer, Files); 2] {
        let threads = layer(WRITERS_FROM as usize + 5);
        let reader = layer(IN_MEMORY_MAX as usize * 2 + 5);
        assert!(writer_count(threads.1.size) > 0);
        assert_eq!(writer_count(reader.1.size), 0);
        [threads, reader]
    }

    #[test]
    fn files_staged_by_writers_or_by_the_reader_keep_their_entries_digests_and_order() {
        for (blob, layer, files) in both_ways() {
            staged_files_keep_their_entries_digests_and_order(&blob, &layer, &files);
        }
    }

    fn staged_files_keep_their_entries_digests_and_order(
        blob: &[u8],
        layer: &CatalogLayer,
        files: &Files,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let index = extract(&store, blob, layer).unwrap();
        let got: Vec<(&str, Digest, bool)> = index
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::File { digest, exec, .. } => Some((e.path.as_str(), *digest, *exec)),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), files.len());
        for (i, (path, content)) in files.iter().enumerate() {
            let (_, digest, exec) = got.iter().find(|(p, _, _)| p == path).unwrap();
            assert_eq!(*digest, Digest::of(content), "{path}");
            assert_eq!(*exec, i % 7 == 0, "{path}");
            let key = CasKey {
                digest: *digest,
                exec: *exec,
            };
            assert_eq!(&store.cas_read(&key).unwrap(), content, "{path}");
            // Committed by this store handle: its inode is known without a stat, and
            // is the CAS file's.
            let (ino, _) = store.cas_quick_stat(&key, content.len() as u64).unwrap();
            assert_eq!(store.cas_committed_here(&key), Some((ino, key.mode())));
        }
        let elsewhere = Store::open(store.root.clone()).unwrap();
        let (_, digest, exec) = got[0];
        let key = CasKey { digest, exec };
        assert_eq!(
            elsewhere.cas_committed_here(&key),
            None,
            "another process checks"
        );
        let distinct: HashSet<(Digest, bool)> = got.iter().map(|(_, d, x)| (*d, *x)).collect();
        assert_eq!(
            files_below(&store).len(),
            distinct.len(),
            "each content once, nothing staged left over"
        );
    }

    #[test]
    fn a_layer_that_fails_its_check_leaves_no_file_in_the_cas_directories() {
        for (blob, mut layer, _) in both_ways() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("store")).unwrap();
            layer.diff_id = Digest::of(b"something else");
            let err = extract(&store, &blob, &layer).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert_eq!(files_below(&store), Vec::<std::path::PathBuf>::new());
            assert!(store.cas_leftovers().is_empty());
        }
    }
}
