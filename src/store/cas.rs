//! The file CAS: every unique file content once, keyed by (sha256, executable bit),
//! read-only, with the layer mtime. It is the source of hardlinks and reflinks into
//! spaces, so its files must never change; [`Store::cas_quick_check`] notices when one
//! did (a write through a hardlink changes its mtime), `--verify` rehashes.
//!
//! A damaged file whose size, mode and mtime are unchanged only a rehash finds. `check`
//! records the ones it finds in `damaged-v1.json` ([`Store::mark_damaged`]); restore
//! treats those as damaged whatever their metadata says, repairs them from their layer
//! before linking anything, rewrites the space files that came from them, and forgets
//! them once repaired.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::unnamed::Unnamed;
use super::{Error, Result, Scratch, Store};
use crate::digest::{Digest, HashingWriter};
use crate::layer::LAYER_MTIME;

/// How the name of a file staged beside its CAS place begins (never a CAS name).
pub(super) const STAGING_PREFIX: &str = ".staged-";

/// Permission bits of a plain CAS file.
pub const FILE_MODE_PLAIN: u32 = 0o444;
/// Permission bits of an executable CAS file.
pub const FILE_MODE_EXEC: u32 = 0o555;

/// The identity of a CAS file: its content digest and whether it is executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CasKey {
    /// Content digest.
    pub digest: Digest,
    /// Executable bit.
    pub exec: bool,
}

impl CasKey {
    /// Its file name in the CAS: the hex digest, `.x` appended when executable.
    pub fn name(&self) -> String {
        let hex = self.digest.hex();
        if self.exec {
            format!("{hex}.x")
        } else {
            hex
        }
    }

    /// The key a CAS file name stands for.
    pub fn from_name(name: &str) -> Option<CasKey> {
        let (hex, exec) = match name.strip_suffix(".x") {
            Some(hex) => (hex, true),
            None => (name, false),
        };
        Some(CasKey {
            digest: Digest::parse(hex).ok()?,
            exec,
        })
    }

    pub(super) fn mode(&self) -> u32 {
        Self::mode_of(self.exec)
    }

    /// The mode of a CAS file with or without the exec bit.
    fn mode_of(exec: bool) -> u32 {
        if exec {
            FILE_MODE_EXEC
        } else {
            FILE_MODE_PLAIN
        }
    }
}

impl Store {
    /// Where the CAS keeps `key` (whether or not it is there).
    pub(super) fn cas_path(&self, key: &CasKey) -> PathBuf {
        let name = key.name();
        self.files_dir().join(&name[..2]).join(name)
    }

    /// The CAS file a space links, clones or copies `key` from. It is shared and
    /// read-only: never write through it (use [`Store::cas_read`] for its content).
    pub fn cas_link_source(&self, key: &CasKey) -> PathBuf {
        self.cas_path(key)
    }

    /// The content of CAS file `key` (not rehashed).
    pub fn cas_read(&self, key: &CasKey) -> Result<Vec<u8>> {
        let path = self.cas_path(key);
        fs::read(&path).map_err(Error::io("read", path))
    }

    /// Checks `files` (keys and sizes) in parallel: metadata only, and the content too
    /// with `verify`. Returns each missing or damaged one with its path in the CAS (for
    /// messages), in the order of `files`.
    pub fn check_cas_files(
        &self,
        files: &[(CasKey, u64)],
        verify: bool,
    ) -> Vec<(CasKey, PathBuf, CasState)> {
        files
            .par_iter()
            .filter_map(|(key, size)| {
                let state = match self.cas_quick_check(key, *size) {
                    CasState::Ok if verify => self.cas_verify(key),
                    s => s,
                };
                (state != CasState::Ok).then(|| (*key, self.cas_path(key), state))
            })
            .collect()
    }

    /// Every file in the CAS with its size (for finding unreferenced ones).
    pub fn cas_list(&self) -> Vec<(CasKey, u64)> {
        let mut out = Vec::new();
        self.each_cas_dir_entry(|file| {
            let key = CasKey::from_name(&file.file_name().to_string_lossy());
            if let (Some(key), Ok(m)) = (key, file.metadata()) {
                out.push((key, m.len()));
            }
        });
        out.sort();
        out
    }

    /// Calls `visit` with every entry of every shard of the CAS directory.
    pub(super) fn each_cas_dir_entry(&self, mut visit: impl FnMut(fs::DirEntry)) {
        let Ok(shards) = fs::read_dir(self.files_dir()) else {
            return;
        };
        for shard in shards.flatten() {
            if let Ok(files) = fs::read_dir(shard.path()) {
                files.flatten().for_each(&mut visit);
            }
        }
    }

    /// Removes CAS file `key` (no layer index and no space references it; the caller
    /// made sure).
    pub fn cas_remove(&self, key: &CasKey) -> Result<()> {
        let path = self.cas_path(key);
        super::remove_file_if_there(&path)
    }

    /// Where the keys of CAS files known damaged are kept.
    fn damaged_path(&self) -> PathBuf {
        self.root
            .join(format!("damaged-{}.json", super::STORE_VERSION))
    }

    /// CAS files a check found damaged and no restore has repaired yet.
    pub fn damaged_files(&self) -> Result<HashSet<CasKey>> {
        read_keys(self.damaged_path())
    }

    /// Records `keys` as damaged: restore repairs them before it links them.
    pub fn mark_damaged(&self, keys: &[CasKey]) -> Result<()> {
        self.update_damaged(|known| known.extend(keys.iter().copied()))
    }

    /// Forgets `keys`, repaired — and remembers them as repaired: a space that
    /// hard-linked a damaged file still holds its old inode, which its own record
    /// cannot tell from a sound one.
    pub fn forget_damaged(&self, keys: &HashSet<CasKey>) -> Result<()> {
        self.update_keys(&self.repaired_path(), |known| {
            known.extend(keys.iter().copied())
        })?;
        self.update_damaged(|known| known.retain(|k| !keys.contains(k)))
    }

    /// CAS files once found damaged and replaced by a repair (their inode changed).
    pub fn repaired_files(&self) -> Result<HashSet<CasKey>> {
        read_keys(self.repaired_path())
    }

    /// The inode of CAS file `key` now, if it is there.
    pub fn cas_inode(&self, key: &CasKey) -> Option<u64> {
        fs::symlink_metadata(self.cas_path(key))
            .ok()
            .map(|m| m.ino())
    }

    fn repaired_path(&self) -> PathBuf {
        self.root
            .join(format!("repaired-{}.json", super::STORE_VERSION))
    }

    fn update_damaged(&self, change: impl FnOnce(&mut HashSet<CasKey>)) -> Result<()> {
        self.update_keys(&self.damaged_path(), change)
    }

    /// Changes the set of keys kept at `path` (removed when it becomes empty), under
    /// one lock for both lists.
    fn update_keys(&self, path: &Path, change: impl FnOnce(&mut HashSet<CasKey>)) -> Result<()> {
        let _lock = self.lock("damaged")?;
        let mut known = read_keys(path.to_path_buf())?;
        let before = known.clone();
        change(&mut known);
        if known == before {
            return Ok(());
        }
        if known.is_empty() {
            return super::remove_file_if_there(path);
        }
        let mut names: Vec<String> = known.iter().map(CasKey::name).collect();
        names.sort();
        super::write_json(path, &names)
    }

    /// Whether the CAS holds `key`.
    pub fn cas_has(&self, key: &CasKey) -> bool {
        fs::symlink_metadata(self.cas_path(key)).is_ok_and(|m| m.is_file())
    }

    /// Stores `bytes` under `key` (whose digest the caller computed from `bytes`).
    pub fn cas_insert_bytes(&self, key: &CasKey, bytes: &[u8]) -> Result<()> {
        if self.cas_has(key) {
            return Ok(());
        }
        self.stage_bytes_as(*key, bytes, false)?.commit(self)
    }

    /// Streams `reader` into the CAS, hashing on the way. With `repair`, a present but
    /// damaged copy is replaced. Returns the key and size.
    pub fn cas_insert_reader(
        &self,
        scratch: &Scratch,
        reader: &mut dyn Read,
        exec: bool,
        repair: bool,
    ) -> Result<(CasKey, u64)> {
        let (key, size, staged) = self.cas_stage(scratch, reader, exec, repair)?;
        if let Some(staged) = staged {
            staged.commit(self)?;
        }
        Ok((key, size))
    }

    /// Streams `reader` into a staged file, hashing on the way, and readies it to
    /// become CAS file (digest, `exec`) — nothing is visible in the CAS until
    /// [`Staged::commit`]. `None` when the CAS holds that key already (with `repair`:
    /// holds it intact, rehashed). Returns the key, the size and the staged file. The
    /// file is unnamed where it can be (made in the first CAS directory, linked into
    /// its own, known once it is hashed, on commit), else in `scratch`; a repair's is
    /// named (its commit may rename over a damaged copy).
    pub(super) fn cas_stage(
        &self,
        scratch: &Scratch,
        reader: &mut dyn Read,
        exec: bool,
        repair: bool,
    ) -> Result<(CasKey, u64, Option<Staged>)> {
        let mode = CasKey::mode_of(exec);
        // Any CAS directory does (the file is linked into its own on commit); one
        // that holds only CAS files and staged ones, for `gc` to read.
        let files_dir = self.files_dir().join("00");
        let unnamed = match repair {
            false => Unnamed::create(&files_dir, mode)
                .map_err(Error::io("create a file in", &files_dir))?,
            true => None,
        };
        if let Some(mut unnamed) = unnamed {
            let (digest, size, _) = copy_hashed(reader, unnamed.file(), &files_dir)?;
            let key = CasKey { digest, exec };
            let staged = Staged::unnamed(unnamed, key, &files_dir)?;
            return Ok((key, size, Some(staged)));
        }
        let (builder, with_mode) = staging_file("tmp-", mode);
        let tmp = builder
            .tempfile_in(scratch.dir())
            .map_err(Error::io("create a file in", scratch.dir()))?;
        let (digest, size, tmp) = copy_hashed(reader, tmp, scratch.dir())?;
        let key = CasKey { digest, exec };
        let Some(replace) = self.needs_staging(&key, repair) else {
            return Ok((key, size, None));
        };
        let staged = Staged::new(tmp, key, replace, with_mode)?;
        Ok((key, size, Some(staged)))
    }

    /// Whether `key` must be staged: `None` when a repair finds the CAS holding it
    /// intact (rehashed); else whether the commit replaces a damaged copy. Only a
    /// repair asks whether the file is there: otherwise the commit's no-clobber rename
    /// finds out, without a stat per file.
    fn needs_staging(&self, key: &CasKey, repair: bool) -> Option<bool> {
        let present = repair && self.cas_has(key);
        if present && self.cas_verify(key) == CasState::Ok {
            return None;
        }
        Some(present)
    }

    /// Stages `bytes` (held in memory) to become CAS file (digest, `exec`): hashed
    /// first, then written as an unnamed file in the directory the CAS file will be in,
    /// so that committing it is one link (see [`super::unnamed`]); where that cannot
    /// be, under a temporary name there, so that committing it is a rename within one
    /// directory (no filesystem-wide rename lock, no shared scratch directory for
    /// threads to contend on). Like [`Store::cas_stage`] otherwise.
    pub(super) fn cas_stage_bytes(
        &self,
        bytes: &[u8],
        exec: bool,
        repair: bool,
    ) -> Result<(CasKey, Option<Staged>)> {
        let key = CasKey {
            digest: Digest::of(bytes),
            exec,
        };
        let Some(replace) = self.needs_staging(&key, repair) else {
            return Ok((key, None));
        };
        Ok((key, Some(self.stage_bytes_as(key, bytes, replace)?)))
    }

    /// Stages `bytes`, whose key is `key`, beside its CAS place (see
    /// [`Store::cas_stage_bytes`]); to `replace` a damaged copy when committed.
    fn stage_bytes_as(&self, key: CasKey, bytes: &[u8], replace: bool) -> Result<Staged> {
        let dest = self.cas_path(&key);
        let dir = crate::fsutil::parent_of(&dest);
        // A damaged copy is replaced by a rename over it: that needs a name.
        if !replace {
            let unnamed = Unnamed::create(dir, key.mode());
            if let Some(mut file) = unnamed.map_err(Error::io("create a file in", dir))? {
                file.file()
                    .write_all(bytes)
                    .map_err(Error::io("write", dir))?;
                return Staged::unnamed(file, key, dir);
            }
        }
        let (builder, with_mode) = staging_file(STAGING_PREFIX, key.mode());
        let create = || builder.tempfile_in(dir);
        let mut tmp = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
                create()
            }
            other => other,
        }
        .map_err(Error::io("create a file in", dir))?;
        tmp.write_all(bytes)
            .map_err(Error::io("write", tmp.path()))?;
        Staged::new(tmp, key, replace, with_mode)
    }

    /// Files a killed process left staged in the CAS directories (only `gc`, which
    /// runs alone, may remove them).
    pub fn cas_leftovers(&self) -> Vec<super::Sweepable> {
        let mut out = Vec::new();
        self.each_cas_dir_entry(|file| {
            let staged = file
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX);
            if let (true, Ok(m)) = (staged, file.metadata()) {
                out.push(super::Sweepable {
                    path: file.path(),
                    bytes: m.len(),
                });
            }
        });
        out
    }

    /// Replaces CAS file `key`, known damaged, with `reader`'s content, which must hash
    /// to `key` (else nothing changes). Returns whether it did.
    pub fn cas_replace(
        &self,
        scratch: &Scratch,
        reader: &mut dyn Read,
        key: &CasKey,
    ) -> Result<bool> {
        let (got, _, staged) = self.cas_stage(scratch, reader, key.exec, true)?;
        match staged {
            Some(staged) if got == *key => {
                staged.commit(self)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The inode and mode of CAS file `key` if this process committed it: a file it
    /// just wrote needs no check before it is linked, nor a `stat` for its inode.
    pub fn cas_committed_here(&self, key: &CasKey) -> Option<(u64, u32)> {
        let ino = *self.committed.lock().get(key)?;
        Some((ino, key.mode()))
    }

    /// Metadata-only check of a CAS file: present, read-only, the layer mtime, `size`.
    pub fn cas_quick_check(&self, key: &CasKey, size: u64) -> CasState {
        match self.cas_quick_stat(key, size) {
            Ok(_) => CasState::Ok,
            Err(state) => state,
        }
    }

    /// Like [`Store::cas_quick_check`], returning the intact file's inode and mode
    /// (what a hard link to it will have).
    pub fn cas_quick_stat(&self, key: &CasKey, size: u64) -> Result<(u64, u32), CasState> {
        let m = fs::symlink_metadata(self.cas_path(key)).map_err(|_| CasState::Missing)?;
        let mode = m.permissions().mode() & 0o7777;
        if m.is_file() && m.len() == size && mode == key.mode() && m.mtime() as u64 == LAYER_MTIME {
            Ok((m.ino(), mode))
        } else {
            Err(CasState::Damaged)
        }
    }

    /// Rehashes a CAS file.
    pub fn cas_verify(&self, key: &CasKey) -> CasState {
        match fs::File::open(self.cas_path(key)) {
            Err(_) => CasState::Missing,
            Ok(f) => match Digest::of_reader(f) {
                Ok((d, _)) if d == key.digest => CasState::Ok,
                _ => CasState::Damaged,
            },
        }
    }
}

/// A file staged for the CAS: complete, read-only, with the layer mtime, not visible
/// until committed; dropped uncommitted, it is deleted.
#[derive(Debug)]
pub(super) struct Staged {
    file: StagedFile,
    key: CasKey,
    /// Its inode (what the CAS file will have).
    ino: u64,
    /// The CAS holds a damaged copy: the commit renames over it.
    replace: bool,
}

impl Staged {
    /// Readies the written file `tmp` (created `with_mode` of `key` or not) to become
    /// CAS file `key` (read-only, the layer mtime) and closes it: a layer of many files
    /// holds no descriptor open for its named files.
    fn new(
        tmp: tempfile::NamedTempFile,
        key: CasKey,
        replace: bool,
        with_mode: bool,
    ) -> Result<Staged> {
        let ino = prepare(tmp.as_file(), &key, with_mode, tmp.path())?;
        let file = StagedFile::Named(tmp.into_temp_path());
        Ok(Staged::ready(file, key, ino, replace))
    }

    /// Readies the written unnamed file `file` (created in `dir` with `key`'s mode as
    /// the umask left it) to become CAS file `key`; it stays open until committed.
    fn unnamed(mut file: Unnamed, key: CasKey, dir: &Path) -> Result<Staged> {
        let with_mode = crate::fsutil::umask_keeps(key.mode());
        let ino = prepare(file.file(), &key, with_mode, dir)?;
        Ok(Staged::ready(StagedFile::Unnamed(file), key, ino, false))
    }

    fn ready(file: StagedFile, key: CasKey, ino: u64, replace: bool) -> Staged {
        Staged {
            file,
            key,
            ino,
            replace,
        }
    }

    /// The key it will have.
    pub(super) fn key(&self) -> CasKey {
        self.key
    }

    /// Moves the file into the CAS. A fresh inode renamed over a damaged copy: links to
    /// the damaged copy keep it (and are found modified by their space's check), the
    /// CAS is whole again. Otherwise an existing file wins (same name, same content).
    pub(super) fn commit(self, store: &Store) -> Result<()> {
        let dest = store.cas_path(&self.key);
        let persist = |path: tempfile::TempPath| {
            if self.replace {
                path.persist(&dest)
            } else {
                path.persist_noclobber(&dest)
            }
        };
        let (key, ino) = (self.key, self.ino);
        let placed = || {
            store.committed.insert(key, ino);
            Ok(())
        };
        let path = match self.file {
            StagedFile::Named(path) => path,
            StagedFile::Unnamed(file) => {
                let linked = match file.link(&dest) {
                    // Its CAS directory is made on first use (the file was staged in
                    // another: it was streamed before its digest was known).
                    Err((file, e)) if e.kind() == io::ErrorKind::NotFound => {
                        let dir = crate::fsutil::parent_of(&dest);
                        fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
                        file.link(&dest).map_err(|(_, e)| e)
                    }
                    linked => linked.map_err(|(_, e)| e),
                };
                return match linked {
                    Ok(()) => placed(),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(Error::io("commit", &dest)(e)),
                };
            }
        };
        let path = match persist(path) {
            Ok(()) => return placed(),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.error.kind() == io::ErrorKind::NotFound => e.path,
            Err(e) => return Err(Error::io("commit", &dest)(e.error)),
        };
        let dir = crate::fsutil::parent_of(&dest);
        fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
        match persist(path) {
            Ok(()) => placed(),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("commit", &dest)(e.error)),
        }
    }
}

/// The CAS files one process committed, and their inodes.
#[derive(Debug, Default)]
pub(super) struct Committed(std::sync::Mutex<std::collections::HashMap<CasKey, u64>>);

impl Committed {
    fn insert(&self, key: CasKey, ino: u64) {
        self.lock().insert(key, ino);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<CasKey, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A staged file: under a temporary name, or unnamed (see [`super::unnamed`]).
#[derive(Debug)]
enum StagedFile {
    Named(tempfile::TempPath),
    Unnamed(Unnamed),
}

/// The CAS keys listed (by name) in the JSON file at `path`; none when it is absent.
fn read_keys(path: PathBuf) -> Result<HashSet<CasKey>> {
    let names: Vec<String> = super::read_json(path)?.unwrap_or_default();
    Ok(names.iter().filter_map(|n| CasKey::from_name(n)).collect())
}

/// What a check found about one CAS file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasState {
    /// Present and intact.
    Ok,
    /// Not there.
    Missing,
    /// Present but changed.
    Damaged,
}

/// Copies `reader` into `out` (a file being staged in `dir`) through a buffer,
/// hashing on the way; returns the digest, the size and `out`.
fn copy_hashed<W: Write>(reader: &mut dyn Read, out: W, dir: &Path) -> Result<(Digest, u64, W)> {
    let mut writer = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, out));
    io::copy(reader, &mut writer).map_err(Error::io("write", dir))?;
    let (digest, size, buffered) = writer.finish();
    let out = buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(Error::io("write", dir))?;
    Ok((digest, size, out))
}

/// A builder of files to be staged for the CAS, and whether they are created with the
/// CAS `mode`: they are where the umask lets them have it (one `chmod` less per file).
fn staging_file(prefix: &str, mode: u32) -> (tempfile::Builder<'_, 'static>, bool) {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let with_mode = crate::fsutil::umask_keeps(mode);
    if with_mode {
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    (builder, with_mode)
}

/// Gives the staged file `file` (at `path`, for errors) the layer mtime and, unless
/// it was created `with_mode`, its mode. Returns its inode (through the descriptor: no
/// path lookup).
fn prepare(file: &fs::File, key: &CasKey, with_mode: bool, path: &Path) -> Result<u64> {
    let mtime = filetime::FileTime::from_unix_time(LAYER_MTIME as i64, 0);
    filetime::set_file_handle_times(file, Some(mtime), Some(mtime))
        .map_err(Error::io("set mtime on", path))?;
    if !with_mode {
        file.set_permissions(fs::Permissions::from_mode(key.mode()))
            .map_err(Error::io("set permissions on", path))?;
    }
    let meta = file.metadata().map_err(Error::io("stat", path))?;
    Ok(meta.ino())
}
