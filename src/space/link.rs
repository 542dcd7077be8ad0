//! Putting one file from the CAS into a space: the link fallback as data.
//!
//! `auto` tries a reflink (copy-on-write clone), falls back to a hard link when the
//! filesystem cannot clone, and to a copy when it cannot link (another filesystem). The
//! fallback is decided once per restore and the method used is returned for each file.
//! A CAS file with as many links as the filesystem allows (ext4: 65,000 — the empty
//! file, shared by hundreds of paths in every space, gets there after a few hundred
//! restores) is copied by `auto` for that file alone; the others are still linked.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::layer::LAYER_MTIME;
use crate::store::Method;

/// How restore puts CAS files into a space.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// Reflink where the filesystem can, else hard link, else copy.
    #[default]
    Auto,
    /// Reflink only.
    Reflink,
    /// Hard link only: fastest, files share the CAS's read-only inode.
    Hardlink,
    /// Copy only.
    Copy,
}

/// Places files, remembering which method works here.
pub struct Linker {
    mode: LinkMode,
    current: AtomicU8,
}

const REFLINK: u8 = 0;
const HARDLINK: u8 = 1;
const COPY: u8 = 2;

impl Linker {
    /// A linker for `mode`.
    pub fn new(mode: LinkMode) -> Self {
        let start = match mode {
            LinkMode::Auto | LinkMode::Reflink => REFLINK,
            LinkMode::Hardlink => HARDLINK,
            LinkMode::Copy => COPY,
        };
        Linker {
            mode,
            current: AtomicU8::new(start),
        }
    }

    /// The mode this linker was asked for.
    pub fn mode(&self) -> LinkMode {
        self.mode
    }

    /// Creates `dest` (which must not exist) with the content of CAS file `cas`.
    pub fn place(&self, cas: &Path, dest: &Path, exec: bool) -> io::Result<Method> {
        loop {
            let method = self.current.load(Ordering::Relaxed);
            let result = match method {
                REFLINK => reflink_copy::reflink(cas, dest)
                    .and_then(|()| finish_private(dest, exec))
                    .map(|()| Method::Reflink),
                HARDLINK => match fs::hard_link(cas, dest) {
                    Err(e) if self.mode == LinkMode::Auto && at_link_limit(&e) => {
                        copy(cas, dest, exec)
                    }
                    linked => linked.map(|()| Method::Hardlink),
                },
                _ => copy(cas, dest, exec),
            };
            match result {
                Ok(m) => return Ok(m),
                Err(e) if self.mode == LinkMode::Auto && method < COPY && is_unsupported(&e) => {
                    let _ = fs::remove_file(dest);
                    let _ = self.current.compare_exchange(
                        method,
                        method + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Copies `cas` to `dest` as a private file.
fn copy(cas: &Path, dest: &Path, exec: bool) -> io::Result<Method> {
    fs::copy(cas, dest)?;
    finish_private(dest, exec)?;
    Ok(Method::Copy)
}

/// Whether a hard link failed because its source has the most links the filesystem
/// allows: a limit of that one file, not of the filesystem.
fn at_link_limit(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMLINK)
}

/// A private copy gets normal permissions and the layer mtime.
fn finish_private(dest: &Path, exec: bool) -> io::Result<()> {
    fs::set_permissions(dest, fs::Permissions::from_mode(private_mode(exec)))?;
    set_layer_mtime(dest)
}

/// Permission bits of a private (copied or relocated) file.
pub fn private_mode(exec: bool) -> u32 {
    if exec {
        0o755
    } else {
        0o644
    }
}

/// Gives `path` the layer mtime (what `.pyc` headers and the quick check expect).
pub fn set_layer_mtime(path: &Path) -> io::Result<()> {
    let t = filetime::FileTime::from_unix_time(LAYER_MTIME as i64, 0);
    filetime::set_file_times(path, t, t)
}

/// Errors that mean "this method does not work here", as opposed to a real failure.
pub fn is_unsupported(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::CrossesDevices
    ) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(
            libc::EOPNOTSUPP
                | libc::EXDEV
                | libc::EINVAL
                | libc::ENOTTY
                | libc::ENOSYS
                | libc::EPERM
        )
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    use super::*;

    /// A read-only "CAS file" in `dir`, like the store keeps them.
    fn cas_file(dir: &Path, content: &[u8]) -> PathBuf {
        let path = dir.join("cas");
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        path
    }

    /// Whether `dir`'s filesystem can reflink (what `auto` should find out by itself).
    fn can_reflink(dir: &Path) -> bool {
        let from = dir.join("probe-from");
        fs::write(&from, b"probe").unwrap();
        let ok = reflink_copy::reflink(&from, dir.join("probe-to")).is_ok();
        let _ = fs::remove_file(dir.join("probe-to"));
        ok
    }

    /// Why a test fails on a machine without the second filesystem it links across.
    const NEEDS_TWO_FILESYSTEMS: &str =
        "this test needs /dev/shm on another filesystem than the temp dir (a hard link cannot cross)";

    /// Two directories on different filesystems (the temp dir and `/dev/shm`),
    /// where a hard link cannot cross; `None` if this machine has no second one.
    fn two_filesystems() -> Option<(tempfile::TempDir, tempfile::TempDir)> {
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
        let first = std::env::temp_dir();
        let other = Path::new("/dev/shm");
        if dev(other).is_none() || dev(other) == dev(&first) {
            return None;
        }
        Some((
            tempfile::tempdir_in(first).ok()?,
            tempfile::tempdir_in(other).ok()?,
        ))
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn copy_makes_a_private_file_with_the_layer_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let cas = cas_file(dir.path(), b"content");
        let linker = Linker::new(LinkMode::Copy);
        for (name, exec, want_mode) in [("plain", false, 0o644), ("tool", true, 0o755)] {
            let dest = dir.path().join(name);
            assert_eq!(linker.place(&cas, &dest, exec).unwrap(), Method::Copy);
            assert_eq!(fs::read(&dest).unwrap(), b"content");
            assert_eq!(mode(&dest), want_mode, "{name}");
            let meta = fs::metadata(&dest).unwrap();
            assert_ne!(meta.ino(), fs::metadata(&cas).unwrap().ino());
            assert_eq!(meta.mtime(), LAYER_MTIME as i64);
        }
    }

    #[test]
    fn hardlink_shares_the_cas_inode() {
        let dir = tempfile::tempdir().unwrap();
        let cas = cas_file(dir.path(), b"content");
        let dest = dir.path().join("linked");
        let method = Linker::new(LinkMode::Hardlink)
            .place(&cas, &dest, false)
            .unwrap();
        assert_eq!(method, Method::Hardlink);
        assert_eq!(
            fs::metadata(&dest).unwrap().ino(),
            fs::metadata(&cas).unwrap().ino()
        );
        assert_eq!(
            mode(&dest),
            0o444,
            "a hard link keeps the CAS file's read-only mode"
        );
    }

    #[test]
    fn auto_uses_a_reflink_where_it_can_else_falls_back_to_a_hardlink() {
        let dir = tempfile::tempdir().unwrap();
        let cas = cas_file(dir.path(), b"content");
        let linker = Linker::new(LinkMode::Auto);
        let expected = if can_reflink(dir.path()) {
            Method::Reflink
        } else {
            Method::Hardlink
        };
        for name in ["first", "second"] {
            let dest = dir.path().join(name);
            assert_eq!(
                linker.place(&cas, &dest, false).unwrap(),
                expected,
                "{name}"
            );
            assert_eq!(fs::read(&dest).unwrap(), b"content");
            let shares_inode =
                fs::metadata(&dest).unwrap().ino() == fs::metadata(&cas).unwrap().ino();
            assert_eq!(shares_inode, expected == Method::Hardlink, "{name}");
        }
    }

    #[test]
    fn auto_falls_back_to_a_copy_across_filesystems_and_stays_there() {
        let (cas_dir, space_dir) = two_filesystems().expect(NEEDS_TWO_FILESYSTEMS);
        let cas = cas_file(cas_dir.path(), b"content");
        let linker = Linker::new(LinkMode::Auto);
        let dest = space_dir.path().join("copied");
        assert_eq!(linker.place(&cas, &dest, true).unwrap(), Method::Copy);
        assert_eq!(fs::read(&dest).unwrap(), b"content");
        assert_eq!(mode(&dest), 0o755);
        // The fallback is decided once: a file a hard link could reach is copied too.
        let near = cas_dir.path().join("near");
        assert_eq!(linker.place(&cas, &near, false).unwrap(), Method::Copy);
        assert_ne!(
            fs::metadata(&near).unwrap().ino(),
            fs::metadata(&cas).unwrap().ino()
        );
    }

    #[test]
    fn auto_copies_a_cas_file_at_the_link_limit_and_links_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let full = cas_file(dir.path(), b"");
        let links = dir.path().join("links");
        fs::create_dir(&links).unwrap();
        // Link it as often as the filesystem allows (ext4, this test's: 65,000).
        for n in 0.. {
            match fs::hard_link(&full, links.join(n.to_string())) {
                Ok(()) => assert!(n < 200_000, "the temp dir's filesystem has no link limit"),
                Err(e) if at_link_limit(&e) => break,
                Err(e) => panic!("link {n}: {e}"),
            }
        }
        let other = dir.path().join("other");
        fs::write(&other, b"other").unwrap();
        let linker = Linker::new(LinkMode::Auto);
        let dest = dir.path().join("copied");
        assert_eq!(linker.place(&full, &dest, true).unwrap(), Method::Copy);
        assert_eq!(mode(&dest), 0o755);
        let next = dir.path().join("next");
        let method = linker.place(&other, &next, false).unwrap();
        assert!(
            matches!(method, Method::Hardlink | Method::Reflink),
            "{method:?}"
        );
        // Asked for hard links only: the limit is an error, not a copy.
        let err = Linker::new(LinkMode::Hardlink)
            .place(&full, &dir.path().join("refused"), false)
            .unwrap_err();
        assert!(at_link_limit(&err) && !is_unsupported(&err), "{err}");
    }

    #[test]
    fn an_explicit_mode_does_not_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let cas = cas_file(dir.path(), b"content");
        if !can_reflink(dir.path()) {
            let dest = dir.path().join("cloned");
            let err = Linker::new(LinkMode::Reflink)
                .place(&cas, &dest, false)
                .unwrap_err();
            assert!(is_unsupported(&err), "{err}");
            assert!(fs::symlink_metadata(&dest).is_err(), "nothing left behind");
        }
        let (cas_dir, space_dir) = two_filesystems().expect(NEEDS_TWO_FILESYSTEMS);
        let cas = cas_file(cas_dir.path(), b"content");
        let dest = space_dir.path().join("linked");
        let err = Linker::new(LinkMode::Hardlink)
            .place(&cas, &dest, false)
            .unwrap_err();
        assert!(is_unsupported(&err), "{err}");
        assert!(fs::symlink_metadata(&dest).is_err(), "nothing left behind");
    }
}
