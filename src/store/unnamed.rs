//! Unnamed files (`O_TMPFILE`): a staged CAS file that has no name until it is
//! committed, when it is linked straight to its CAS name.
//!
//! A named staged file costs two directory updates more than the CAS file itself (its
//! temporary name is added, then renamed away), and each is a directory search; an
//! unnamed one is added to its directory once, by the commit's link. A process killed
//! before the commit leaves nothing behind: the kernel frees an unnamed file when its
//! descriptor closes. Each is an open descriptor until then, so their number is held
//! to a budget below the process's limit; beyond it, and where the filesystem or the
//! process cannot link unnamed files, staging falls back to named files.

use std::ffi::CStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use super::cas::STAGING_PREFIX;

/// How this process links an unnamed file to a name: found out once, by a probe,
/// before any file depends on it (an unnamed file that cannot be linked is content
/// lost).
static LINKING: OnceLock<Linking> = OnceLock::new();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Linking {
    /// `linkat(fd, "", …, AT_EMPTY_PATH)`: needs `CAP_DAC_READ_SEARCH`.
    ByDescriptor,
    /// `linkat` of `/proc/self/fd/N`, following it: any process with `/proc`.
    ByProc,
    /// Neither works, or the filesystem has no `O_TMPFILE`: files are staged named.
    Unsupported,
}

/// Set when a filesystem turned out to have no `O_TMPFILE` after the probe passed
/// (a store on another filesystem than the probe's is not expected, but is safe).
static GAVE_UP: AtomicBool = AtomicBool::new(false);

/// Unnamed files open at once in this process.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// An open unnamed file; dropped before it is linked, it is gone.
#[derive(Debug)]
pub(super) struct Unnamed {
    file: File,
}

impl Unnamed {
    /// Creates an unnamed file in `dir` with `mode` (as the umask leaves it); `None`
    /// where unnamed files cannot be used (see the module) or the budget is spent.
    pub(super) fn create(dir: &Path, mode: u32) -> io::Result<Option<Unnamed>> {
        let linking = *LINKING.get_or_init(|| probe(dir));
        if linking == Linking::Unsupported || GAVE_UP.load(Relaxed) || !take_budget() {
            return Ok(None);
        }
        match open_unnamed(dir, mode) {
            Ok(file) => Ok(Some(Unnamed { file })),
            Err(e) => {
                OPEN.fetch_sub(1, Relaxed);
                if unsupported(&e) {
                    GAVE_UP.store(true, Relaxed);
                    return Ok(None);
                }
                Err(e)
            }
        }
    }

    /// The open file, to write and to set its times and mode.
    pub(super) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file the name `dest` (on the same filesystem). On failure the file is
    /// handed back with the error: `AlreadyExists` when `dest` is taken, `NotFound`
    /// when its directory is missing.
    pub(super) fn link(self, dest: &Path) -> Result<(), (Unnamed, io::Error)> {
        let linked = match LINKING.get() {
            Some(Linking::ByProc) => link_by_proc(&self.file, dest),
            _ => link_by_descriptor(&self.file, dest),
        };
        linked.map_err(|e| (self, e))
    }
}

/// `linkat(fd, "", …, AT_EMPTY_PATH)`.
fn link_by_descriptor(file: &File, dest: &Path) -> io::Result<()> {
    linkat(file.as_raw_fd(), c"", dest, libc::AT_EMPTY_PATH)
}

/// `linkat` of `/proc/self/fd/N`, following it.
fn link_by_proc(file: &File, dest: &Path) -> io::Result<()> {
    let source = c_path(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    linkat(libc::AT_FDCWD, &source, dest, libc::AT_SYMLINK_FOLLOW)
}

/// `linkat(from_dir, from, AT_FDCWD, dest, flags)`; `from_dir` must stay open meanwhile.
fn linkat(from_dir: libc::c_int, from: &CStr, dest: &Path, flags: libc::c_int) -> io::Result<()> {
    let dest = c_path(dest)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the caller keeps
    // `from_dir` open.
    let rc = unsafe {
        libc::linkat(
            from_dir,
            from.as_ptr(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            flags,
        )
    };
    check(rc)
}

impl Drop for Unnamed {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Relaxed);
    }
}

/// Which way this process can link an unnamed file made in `dir`: one is made and
/// linked to a probe name there (removed again).
fn probe(dir: &Path) -> Linking {
    let Ok(file) = open_unnamed(dir, 0o400) else {
        return Linking::Unsupported;
    };
    // A staging name: should this process die right here, `gc` knows what it is.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = dir.join(format!(
        "{STAGING_PREFIX}probe-{}-{nanos}",
        std::process::id()
    ));
    let way = if link_by_descriptor(&file, &name).is_ok() {
        Linking::ByDescriptor
    } else if link_by_proc(&file, &name).is_ok() {
        Linking::ByProc
    } else {
        Linking::Unsupported
    };
    let _ = fs::remove_file(&name);
    way
}

/// Counts one more unnamed file if the budget allows it.
fn take_budget() -> bool {
    let budget = *BUDGET.get_or_init(budget);
    OPEN.fetch_update(Relaxed, Relaxed, |open| (open < budget).then_some(open + 1))
        .is_ok()
}

static BUDGET: OnceLock<usize> = OnceLock::new();

/// A quarter of the descriptors this process may open, at most 16,384: the rest stay
/// for downloads, layers, directories and whatever else runs meanwhile.
fn budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    usize::try_from(limit.rlim_cur / 4)
        .unwrap_or(usize::MAX)
        .min(16_384)
}

fn open_unnamed(dir: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(mode)
            .open(dir)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            open()
        }
        opened => opened,
    }
}

/// The filesystem or the kernel has no `O_TMPFILE` (older kernels read the flag as
/// `O_DIRECTORY` and say "is a directory").
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn an_unnamed_file_appears_only_once_linked_with_its_content_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("ab");
        // The directory is created when missing, like a CAS shard.
        let mut unnamed = Unnamed::create(&shard, 0o444)
            .unwrap()
            .expect("ext4 has O_TMPFILE");
        unnamed.file().write_all(b"content").unwrap();
        let ino = unnamed.file().metadata().unwrap().ino();
        assert_eq!(
            fs::read_dir(&shard).unwrap().count(),
            0,
            "nothing named yet"
        );
        let dest = shard.join("name");
        unnamed.link(&dest).unwrap();
        let mut read = String::new();
        File::open(&dest)
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "content");
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.ino(), ino, "the linked name is the staged inode");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o444 & !crate::fsutil::umask().unwrap()
        );
        assert_eq!(meta.nlink(), 1);
    }

    #[test]
    fn a_name_already_taken_is_kept_and_an_unlinked_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("taken");
        fs::write(&dest, b"first").unwrap();
        let mut unnamed = Unnamed::create(dir.path(), 0o444).unwrap().unwrap();
        unnamed.file().write_all(b"second").unwrap();
        let (_, err) = unnamed.link(&dest).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        let dropped = Unnamed::create(dir.path(), 0o444).unwrap().unwrap();
        drop(dropped);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the first file: {names:?}");
    }

    #[test]
    fn a_file_staged_in_one_directory_is_linked_into_another_made_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut unnamed = Unnamed::create(dir.path(), 0o444).unwrap().unwrap();
        unnamed.file().write_all(b"streamed").unwrap();
        let dest = dir.path().join("shard/name");
        let (unnamed, err) = unnamed.link(&dest).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "no directory yet");
        fs::create_dir(dir.path().join("shard")).unwrap();
        unnamed.link(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"streamed");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the shard"
        );
    }

    #[test]
    fn the_probe_finds_a_way_to_link_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Root here links by descriptor; an unprivileged process would go through /proc.
        assert_ne!(probe(dir.path()), Linking::Unsupported);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
