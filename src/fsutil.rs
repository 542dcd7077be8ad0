//! Small filesystem primitives every writer in envoci goes through: atomic replacement
//! (temp file + fsync + rename + directory fsync) and advisory file locks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Whether this process works in a store shared by a group (see [`share_with_group`]).
static GROUP_SHARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes everything this process creates usable by its group: umask 002, so new
/// directories are group-writable (and, below a setgid directory, keep its group and
/// setgid bit) and new files group-readable; documents get mode 664. For a store on a
/// setgid, group-writable directory that several users share.
pub fn share_with_group() {
    GROUP_SHARED.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o002);
    }
    UMASK.store(0o002, std::sync::atomic::Ordering::Relaxed);
}

/// The file-creation mask as this process last set or read it; `NO_MASK_READ` until then.
static UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(NO_MASK_READ);

const NO_MASK_READ: u32 = u32::MAX;

/// Whether a file created with `mode` gets exactly that mode (the umask clears none
/// of its bits), so no `chmod` needs to follow. False where the umask is unknown.
pub fn umask_keeps(mode: u32) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let mut mask = UMASK.load(Relaxed);
    if mask == NO_MASK_READ {
        mask = umask().unwrap_or(0o7777);
        UMASK.store(mask, Relaxed);
    }
    mask & mode == 0
}

/// This process's file-creation mask, read from `/proc` (asking umask(2) would change
/// it meanwhile, for every thread); `None` where it cannot be read.
pub fn umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The mode of a document envoci writes (JSON, `index.json`): readable by everyone,
/// writable by the group too in a shared store (it is replaced, never edited).
fn document_mode() -> u32 {
    if GROUP_SHARED.load(std::sync::atomic::Ordering::Relaxed) {
        0o664
    } else {
        0o644
    }
}

/// Writes `bytes` to `path` atomically: readers see the old content or the new, never a
/// mix, and a crash leaves at most a stray temporary beside it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp_beside(path, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(parent_of(path))
}

/// [`write_atomic`] without flushing to disk: other processes see the old content or
/// the new, never a mix, but a power cut may leave the file empty or torn. For files
/// that are made again when found damaged, and that a sync of the whole filesystem
/// makes durable before anything depends on them (a store's layer indexes).
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp_beside(path, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A temporary file in `path`'s directory (made if missing) holding `bytes`.
fn write_temp_beside(path: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent_of(path);
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(document_mode()))?;
    tmp.write_all(bytes)?;
    Ok(tmp)
}

/// Flushes a directory's entries to disk so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(f) => f.sync_all().or(Ok(())),
        Err(e) => Err(e),
    }
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An advisory lock on a file, released on drop. Shared locks never block each other.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` is held (creating the file if needed).
    pub fn exclusive(path: &Path) -> io::Result<Self> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(lock = %path.display(), "waiting for another envoci process");
                file.lock()?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(FileLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// Blocks until a shared lock on `path` is held.
    pub fn shared(path: &Path) -> io::Result<Self> {
        let file = open_lock_file(path)?;
        file.lock_shared()?;
        Ok(FileLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// Takes the exclusive lock if nobody holds it, without waiting.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<Self>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    fs::create_dir_all(parent_of(path))?;
    let opened = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(path);
    match opened {
        // Another user's lock file in a shared store: a lock needs only a reading fd.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(path),
        other => other,
    }
}

/// Removes a file or symlink, or a directory tree, whatever is at `path`; absent is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            make_tree_writable(path);
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Best effort: gives the owner write permission on every directory of a tree so it can
/// be removed even when an interrupted run left read-only directories behind.
fn make_tree_writable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        if entry.file_type().is_dir() {
            if let Ok(m) = entry.metadata() {
                let mode = m.permissions().mode();
                if mode & 0o700 != 0o700 {
                    let _ =
                        fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode | 0o700));
                }
            }
        }
    }
}
