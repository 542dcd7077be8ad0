//! Putting one file from the CAS into a space: the link fallback as data.
//!
//! `auto` tries a reflink (copy-on-write clone), falls back to a hard link when the
//! filesystem cannot clone, and to a copy when it cannot link (another filesystem). The
//! fallback is decided once per restore and the method used is returned for each file.

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
                HARDLINK => fs::hard_link(cas, dest).map(|()| Method::Hardlink),
                _ => fs::copy(cas, dest)
                    .and_then(|_| finish_private(dest, exec))
                    .map(|_| Method::Copy),
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
                | libc::EMLINK
        )
    )
}
