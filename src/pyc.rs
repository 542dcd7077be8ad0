//! Relocating CPython bytecode (`.pyc`) as pure functions.
//!
//! A `.pyc` is a 16-byte header (PEP 552: magic number, flags, then either the source's
//! mtime and size or an 8-byte hash of the source) followed by a `marshal` stream. A
//! module whose source holds the environment's path holds it in its bytecode too (as
//! string or bytes constants), and its header names the source as it was compiled: once
//! the source is relocated, a checked-hash pyc no longer matches, and CPython compiles
//! the module again on every import. [`relocate`] rewrites the marshalled strings (their
//! lengths change, so each is re-encoded, with the type CPython would give it) and,
//! when the header matched the source before, makes it match the relocated source
//! (the source hash is SipHash keyed with the magic number: [`source_hash`]).
//!
//! The marshal stream is copied object by object; references (`FLAG_REF`, `TYPE_REF`)
//! are numbered by position, which a rewrite keeps, so they stay valid. Code objects
//! are read with the layout of their CPython version (3.8 to 3.14); their bytecode,
//! line tables and exception tables are copied untouched. Anything else — another
//! magic number, a truncated or malformed stream — is an [`Error`], and the caller keeps
//! the file as it is.

use memchr::memmem;

mod locations;

/// Length of the PEP 552 header.
pub const HEADER_LEN: usize = 16;

/// Largest bytecode file (and source) read whole to be relocated; a larger one passes
/// through as it is.
pub const MAX_SIZE: u64 = 32 * 1024 * 1024;

/// Deepest nesting read (CPython allows 2000; real modules stay far below this). A
/// deeper file is refused and kept as it is, so a hostile one cannot exhaust the stack.
const MAX_DEPTH: usize = 400;

/// Why a `.pyc` cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than a header, or its magic number is not CPython's.
    #[error("not a CPython bytecode file")]
    NotPyc,
    /// A CPython version whose code layout is not known here.
    #[error("bytecode of an unsupported CPython version (magic number {magic})")]
    Unsupported {
        /// The magic number's version field.
        magic: u16,
    },
    /// The marshal stream is cut short or holds something CPython never writes.
    #[error("malformed marshal data at byte {offset}: {reason}")]
    Malformed {
        /// Offset in the file.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
}

/// How a pyc is checked against its source (the header's flags, PEP 552).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Flags 0: the source's mtime and size (both modulo 2³²).
    Timestamp {
        /// Source mtime, seconds.
        mtime: u32,
        /// Source size.
        size: u32,
    },
    /// Flags bit 0: SipHash of the source; `checked` (bit 1) when CPython compares it.
    Hash {
        /// [`source_hash`] of the source.
        hash: [u8; 8],
        /// Whether CPython checks it on import.
        checked: bool,
    },
}

/// The parsed header of a supported `.pyc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The magic number, as in the file.
    pub magic: [u8; 4],
    /// How it is validated.
    pub check: Check,
}

/// The code-object layouts CPython versions write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// 3.8 to 3.10: six int fields, varnames, freevars and cellvars, `co_lnotab`.
    Py38,
    /// 3.11 to 3.14: five int fields, locals-plus names and kinds, `co_qualname`,
    /// line and exception tables.
    Py311,
}

impl Header {
    /// Reads the header of `pyc`; fails if it is no CPython bytecode this module reads.
    pub fn parse(pyc: &[u8]) -> Result<Header, Error> {
        let head: &[u8; HEADER_LEN] = pyc
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::NotPyc)?;
        let magic = [head[0], head[1], head[2], head[3]];
        layout(magic)?;
        let flags = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let word =
            |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let check = if flags & 1 == 0 {
            Check::Timestamp {
                mtime: word(8),
                size: word(12),
            }
        } else {
            let mut hash = [0; 8];
            hash.copy_from_slice(&head[8..16]);
            Check::Hash {
                hash,
                checked: flags & 2 != 0,
            }
        };
        Ok(Header { magic, check })
    }

    /// Whether this header says the pyc was compiled from `source`, a file with the
    /// modification time `mtime`.
    pub fn matches(&self, source: &[u8], mtime: i64) -> bool {
        match self.check {
            Check::Timestamp { mtime: m, size } => m == mtime as u32 && size == source.len() as u32,
            Check::Hash { hash, .. } => hash == source_hash(self.magic, source),
        }
    }

    /// The same kind of header for `source`, a file with the modification time `mtime`.
    pub fn for_source(&self, source: &[u8], mtime: i64) -> Header {
        let check = match self.check {
            Check::Timestamp { .. } => Check::Timestamp {
                mtime: mtime as u32,
                size: source.len() as u32,
            },
            Check::Hash { checked, .. } => Check::Hash {
                hash: source_hash(self.magic, source),
                checked,
            },
        };
        Header {
            magic: self.magic,
            check,
        }
    }

    /// The header's 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[..4].copy_from_slice(&self.magic);
        match self.check {
            Check::Timestamp { mtime, size } => {
                out[8..12].copy_from_slice(&mtime.to_le_bytes());
                out[12..16].copy_from_slice(&size.to_le_bytes());
            }
            Check::Hash { hash, checked } => {
                out[4] = if checked { 3 } else { 1 };
                out[8..16].copy_from_slice(&hash);
            }
        }
        out
    }
}

/// The code layout of a magic number's CPython version (only released versions).
fn layout(magic: [u8; 4]) -> Result<Layout, Error> {
    if magic[2..] != *b"\r\n" {
        return Err(Error::NotPyc);
    }
    let version = u16::from_le_bytes([magic[0], magic[1]]);
    match version {
        3410..=3413 | 3420..=3425 | 3430..=3439 => Ok(Layout::Py38),
        3495 | 3500..=3531 | 3550..=3571 | 3600..=3649 => Ok(Layout::Py311),
        _ => Err(Error::Unsupported { magic: version }),
    }
}

/// `importlib.util.source_hash(source)` of the CPython version `magic` is from:
/// SipHash keyed with the magic number read as a little-endian integer (k1 = 0),
/// SipHash-1-3 from 3.11 on, SipHash-2-4 before; little-endian bytes.
pub fn source_hash(magic: [u8; 4], source: &[u8]) -> [u8; 8] {
    let key = u64::from(u32::from_le_bytes(magic));
    let version = u16::from_le_bytes([magic[0], magic[1]]);
    let (c, d) = if version >= 3450 { (1, 3) } else { (2, 4) };
    siphash(c, d, key, 0, source).to_le_bytes()
}

/// SipHash-c-d of `data` with the key (`k0`, `k1`).
fn siphash(c: usize, d: usize, k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let rounds = |v: &mut [u64; 4], n: usize| {
        for _ in 0..n {
            v[0] = v[0].wrapping_add(v[1]);
            v[1] = v[1].rotate_left(13) ^ v[0];
            v[0] = v[0].rotate_left(32);
            v[2] = v[2].wrapping_add(v[3]);
            v[3] = v[3].rotate_left(16) ^ v[2];
            v[0] = v[0].wrapping_add(v[3]);
            v[3] = v[3].rotate_left(21) ^ v[0];
            v[2] = v[2].wrapping_add(v[1]);
            v[1] = v[1].rotate_left(17) ^ v[2];
            v[2] = v[2].rotate_left(32);
        }
    };
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0; 8];
        word.copy_from_slice(block);
        let m = u64::from_le_bytes(word);
        v[3] ^= m;
        rounds(&mut v, c);
        v[0] ^= m;
    }
    let mut last = [0; 8];
    last[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    let m = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
    v[3] ^= m;
    rounds(&mut v, c);
    v[0] ^= m;
    v[2] ^= 0xff;
    rounds(&mut v, d);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// What a rewrite does to the strings of a pyc.
#[derive(Clone, Copy, Debug)]
pub struct Strings<'a> {
    /// Replaced by `to` in every string and bytes constant, names and file names.
    pub from: &'a [u8],
    /// What replaces `from`.
    pub to: &'a [u8],
    /// A code object's file name below this directory becomes relative to it (a
    /// snapshot's pycs name their environment's path there; CPython puts the source's
    /// path back on import).
    pub relative_to: Option<&'a [u8]>,
}

/// A rewritten pyc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The new file.
    pub bytes: Vec<u8>,
    /// Whether some string held `from` (and now holds `to`).
    pub replaced: bool,
}

/// Rewrites the strings of `pyc` (header kept): see [`Strings`].
pub fn rewrite(pyc: &[u8], strings: &Strings<'_>) -> Result<Rewritten, Error> {
    rewrite_with(pyc, strings, None)
}

/// [`rewrite`], moving the columns of 3.11+ location tables by `shifts`.
fn rewrite_with(
    pyc: &[u8],
    strings: &Strings<'_>,
    shifts: Option<locations::Shifts>,
) -> Result<Rewritten, Error> {
    let header = Header::parse(pyc)?;
    let mut copier = Copier {
        data: pyc,
        pos: HEADER_LEN,
        out: Vec::with_capacity(pyc.len() + 1024),
        layout: layout(header.magic)?,
        strings,
        finder: memmem::Finder::new(strings.from),
        replaced: false,
        shifts,
    };
    copier.out.extend_from_slice(&pyc[..HEADER_LEN]);
    copier.object(Context::Value, 0)?;
    if copier.pos != pyc.len() {
        return Err(copier.malformed("data after the module's code object"));
    }
    Ok(Rewritten {
        bytes: copier.out,
        replaced: copier.replaced,
    })
}

/// Relocates `pyc`: its strings are rewritten (see [`Strings`]). When `sources` gives
/// its source before and after relocation (each with the mtime restore gives it) and
/// the header matched the source before, the header is made to match it after, and
/// the columns of its location tables follow the source's replacements. Returns the
/// new file and whether a string was replaced.
pub fn relocate(
    pyc: &[u8],
    strings: &Strings<'_>,
    sources: Option<(&[u8], &[u8], i64)>,
) -> Result<Rewritten, Error> {
    let header = Header::parse(pyc)?;
    let matched = sources.filter(|(before, _, mtime)| header.matches(before, *mtime));
    let shifts =
        matched.and_then(|(before, _, _)| locations::Shifts::new(before, strings.from, strings.to));
    let mut rewritten = rewrite_with(pyc, strings, shifts)?;
    if let Some((_, after, mtime)) = matched {
        rewritten.bytes[..HEADER_LEN].copy_from_slice(&header.for_source(after, mtime).to_bytes());
    }
    Ok(rewritten)
}

/// Where in a code object an object sits: what a rewrite may change there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    /// A constant or a name: `from` is replaced.
    Value,
    /// `co_filename`: made relative, then `from` is replaced.
    Filename,
    /// Bytecode, line or exception tables, local kinds: copied as they are.
    Raw,
}

/// Copies a marshal stream from `data` to `out`, rewriting strings on the way.
struct Copier<'a> {
    data: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    layout: Layout,
    strings: &'a Strings<'a>,
    finder: memmem::Finder<'a>,
    replaced: bool,
    /// How columns move, when the source is known (3.11+ location tables).
    shifts: Option<locations::Shifts>,
}

const FLAG_REF: u8 = 0x80;

impl<'a> Copier<'a> {
    fn malformed(&self, reason: &'static str) -> Error {
        Error::Malformed {
            offset: self.pos,
            reason,
        }
    }

    /// The next `n` bytes of input.
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.malformed("cut short"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// Copies the next `n` bytes of input.
    fn copy(&mut self, n: usize) -> Result<(), Error> {
        let start = self.pos;
        self.take(n)?;
        self.out.extend_from_slice(&self.data[start..self.pos]);
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn int(&mut self) -> Result<i32, Error> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads and copies a 4-byte count, which must be 0 or more.
    fn count(&mut self) -> Result<usize, Error> {
        let n = self.int()?;
        self.out.extend_from_slice(&n.to_le_bytes());
        usize::try_from(n).map_err(|_| self.malformed("negative size"))
    }

    /// Copies one object (and what it holds).
    fn object(&mut self, ctx: Context, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(self.malformed("nested too deep"));
        }
        let start = self.pos;
        let code = self.byte()?;
        let kind = code & !FLAG_REF;
        match kind {
            b's' | b't' | b'u' | b'a' | b'A' => {
                let n =
                    usize::try_from(self.int()?).map_err(|_| self.malformed("negative size"))?;
                self.string(start, n, ctx)
            }
            b'z' | b'Z' => {
                let n = usize::from(self.byte()?);
                self.string(start, n, ctx)
            }
            _ => {
                self.out.push(code);
                self.other(kind, ctx, depth)
            }
        }
    }

    /// Copies a non-string object whose type byte is written already.
    fn other(&mut self, kind: u8, ctx: Context, depth: usize) -> Result<(), Error> {
        match kind {
            b'0' | b'N' | b'F' | b'T' | b'S' | b'.' => Ok(()),
            b'i' | b'r' => self.copy(4),
            b'I' | b'g' => self.copy(8),
            b'y' => self.copy(16),
            b'f' => self.short_float(),
            b'x' => {
                self.short_float()?;
                self.short_float()
            }
            b'l' => {
                let n = self.int()?;
                self.out.extend_from_slice(&n.to_le_bytes());
                self.copy(n.unsigned_abs() as usize * 2)
            }
            b'(' | b'[' | b'<' | b'>' => {
                let n = self.count()?;
                self.items(n, ctx, depth)
            }
            b')' => {
                let n = self.byte()?;
                self.out.push(n);
                self.items(usize::from(n), ctx, depth)
            }
            b':' => self.items(3, ctx, depth),
            b'{' => self.dict(ctx, depth),
            b'c' => self.code(depth),
            _ => Err(self.malformed("unknown object type")),
        }
    }

    fn short_float(&mut self) -> Result<(), Error> {
        let n = self.byte()?;
        self.out.push(n);
        self.copy(usize::from(n))
    }

    fn items(&mut self, n: usize, ctx: Context, depth: usize) -> Result<(), Error> {
        if n > self.data.len() - self.pos {
            return Err(self.malformed("more items than bytes left"));
        }
        (0..n).try_for_each(|_| self.object(ctx, depth + 1))
    }

    /// Key-value pairs up to a NULL key.
    fn dict(&mut self, ctx: Context, depth: usize) -> Result<(), Error> {
        loop {
            if self.data.get(self.pos) == Some(&b'0') {
                return self.copy(1);
            }
            self.object(ctx, depth + 1)?;
            self.object(ctx, depth + 1)?;
        }
    }

    /// A code object, field by field in its version's order.
    fn code(&mut self, depth: usize) -> Result<(), Error> {
        use Context::{Filename, Raw, Value};
        let (ints, fields): (usize, &[Context]) = match self.layout {
            // code, consts, names, varnames, freevars, cellvars, filename, name
            Layout::Py38 => (
                6,
                &[Raw, Value, Value, Value, Value, Value, Filename, Value],
            ),
            // code, consts, names, localsplusnames, localspluskinds, filename, name,
            // qualname
            Layout::Py311 => (5, &[Raw, Value, Value, Value, Raw, Filename, Value, Value]),
        };
        self.copy(4 * ints)?;
        for &ctx in fields {
            self.object(ctx, depth + 1)?;
        }
        let first_line = self.int()?; // co_firstlineno
        self.out.extend_from_slice(&first_line.to_le_bytes());
        match self.layout {
            Layout::Py38 => self.object(Raw, depth + 1),
            Layout::Py311 => {
                self.line_table(i64::from(first_line), depth)?;
                self.object(Raw, depth + 1)
            }
        }
    }

    /// A 3.11+ `co_linetable`: its columns moved with the source's replacements when
    /// the source is known ([`locations`]), else copied.
    fn line_table(&mut self, first_line: i64, depth: usize) -> Result<(), Error> {
        let is_bytes = self.data.get(self.pos).map(|b| b & !FLAG_REF) == Some(b's');
        if self.shifts.is_none() || !is_bytes {
            return self.object(Context::Raw, depth + 1);
        }
        let data: &'a [u8] = self.data;
        let code = data[self.pos];
        self.pos += 1;
        let n = usize::try_from(self.int()?).map_err(|_| self.malformed("negative size"))?;
        let start = self.pos;
        self.take(n)?;
        let table = &data[start..self.pos];
        let new = self.shifts.as_ref().and_then(|shifts| {
            let mut entries = locations::decode(table, first_line)?;
            shifts.apply(&mut entries);
            Some(locations::encode(&entries, first_line))
        });
        let table = new.as_deref().unwrap_or(table);
        self.out.push(code);
        self.out
            .extend_from_slice(&(table.len() as u32).to_le_bytes());
        self.out.extend_from_slice(table);
        Ok(())
    }

    /// A string or bytes object of `n` bytes, starting at `at` (its type and length
    /// are read already).
    fn string(&mut self, at: usize, n: usize, ctx: Context) -> Result<(), Error> {
        let data: &'a [u8] = self.data;
        let start = self.pos;
        self.take(n)?;
        let text = &data[start..self.pos];
        let new = match ctx {
            Context::Raw => None,
            Context::Value => self.replace(text),
            Context::Filename => {
                let relative = self.strings.relative_to.and_then(|dir| {
                    text.strip_prefix(dir)
                        .and_then(|rest| rest.strip_prefix(b"/"))
                        .filter(|rest| !rest.is_empty())
                });
                match relative {
                    Some(rest) => Some(self.replace(rest).unwrap_or_else(|| rest.to_vec())),
                    None => self.replace(text),
                }
            }
        };
        match new {
            None => self.out.extend_from_slice(&data[at..self.pos]),
            Some(new) => self.put_string(data[at], &new),
        }
        Ok(())
    }

    /// `text` with every `from` replaced, if it holds one.
    fn replace(&mut self, text: &[u8]) -> Option<Vec<u8>> {
        if self.strings.from.is_empty() || self.finder.find(text).is_none() {
            return None;
        }
        self.replaced = true;
        Some(crate::relocate::replace_text(
            text,
            self.strings.from,
            self.strings.to,
        ))
    }

    /// Writes a rewritten string with the type CPython gives such content: bytes stay
    /// bytes; text is short ASCII, ASCII or UTF-8, interned if it was.
    fn put_string(&mut self, code: u8, text: &[u8]) {
        let (flag, kind) = (code & FLAG_REF, code & !FLAG_REF);
        let interned = matches!(kind, b't' | b'A' | b'Z');
        let new_kind = if kind == b's' {
            b's'
        } else if !text.is_ascii() {
            if interned {
                b't'
            } else {
                b'u'
            }
        } else if text.len() < 256 {
            if interned {
                b'Z'
            } else {
                b'z'
            }
        } else if interned {
            b'A'
        } else {
            b'a'
        };
        self.out.push(new_kind | flag);
        if matches!(new_kind, b'z' | b'Z') {
            self.out.push(text.len() as u8);
        } else {
            self.out
                .extend_from_slice(&(text.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash24_matches_the_reference_vector() {
        // The SipHash paper's test vector: key 00..0f, message 00..0e.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(siphash(2, 4, k0, k1, &message), 0xa129_ca61_49be_45e5);
    }

    /// Runs the machine's CPython with `script` and `args`; its stdout.
    fn python(script: &str, args: &[&std::path::Path]) -> Vec<u8> {
        let out = std::process::Command::new("python3")
            .args(["-s", "-B", "-c", script])
            .args(args)
            .env("PYTHONHASHSEED", "0")
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The machine's magic number.
    fn host_magic() -> [u8; 4] {
        let out = python(
            "import importlib.util, sys; sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER)",
            &[],
        );
        out.try_into().expect("4 bytes")
    }

    #[test]
    fn the_source_hash_is_the_interpreters() {
        let magic = host_magic();
        let dir = tempfile::tempdir().unwrap();
        // Lengths around every block boundary, and a long one.
        let sources: Vec<Vec<u8>> = (0..40)
            .map(|n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .chain([
                b"x = '/some/prefix'\n".repeat(5000),
                "é\u{1F600}\n".as_bytes().to_vec(),
            ])
            .collect();
        for (i, source) in sources.iter().enumerate() {
            std::fs::write(dir.path().join(i.to_string()), source).unwrap();
        }
        let script = "import _imp, importlib.util, sys\nfor path in sys.argv[1:]:\n    print(_imp.source_hash(importlib.util._RAW_MAGIC_NUMBER, open(path, 'rb').read()).hex())";
        let paths: Vec<_> = (0..sources.len())
            .map(|i| dir.path().join(i.to_string()))
            .collect();
        let args: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
        let out = String::from_utf8(python(script, &args)).unwrap();
        let want: Vec<&str> = out.lines().collect();
        assert_eq!(want.len(), sources.len());
        for (source, want) in sources.iter().zip(want) {
            let got: String = source_hash(magic, source)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want, "{} bytes", source.len());
        }
    }

    /// Compiles `source` as a checked-hash pyc named `lib/mod.py`, as builds do.
    fn compile(dir: &std::path::Path, source: &[u8]) -> Vec<u8> {
        let py = dir.join("mod.py");
        let pyc = dir.join("mod.pyc");
        std::fs::write(&py, source).unwrap();
        let script = "import py_compile, sys\npy_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile='lib/mod.py', doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)";
        python(script, &[&py, &pyc]);
        std::fs::read(pyc).unwrap()
    }

    /// A module holding `prefix` wherever a module can hold a string (in a bytes
    /// literal too when `bytes`: those hold ASCII only).
    fn module(prefix: &str, bytes: bool) -> Vec<u8> {
        let bytes = if bytes {
            format!("b'{prefix}/lib'")
        } else {
            "None".into()
        };
        [
            format!("PREFIX = '{prefix}'"),
            format!("LIB = {bytes}"),
            format!("PATHS = ('{prefix}/bin', frozenset({{'{prefix}/x'}}), {{'{prefix}': 1}})"),
            format!("LONG = '{prefix}' * 2 + '/' + 'x' * 300"),
            format!("def where(sub='{prefix}/share'):"),
            format!("    '''Docs naming {prefix}.'''"),
            "    def inner():".into(),
            format!("        return f'{prefix}/{{sub}}'"),
            format!("    return inner, '{prefix}/etc', sub"),
            "class Conf:".into(),
            format!("    root = '{prefix}'"),
            "    items = [1, 2.5, 3j, 10**30, None, ...]\n".into(),
        ]
        .join("\n")
        .into_bytes()
    }

    /// What CPython reads from a pyc, as Python shows it.
    const NORMALISE: &str = "import marshal, sys, types
def norm(o):
    if isinstance(o, types.CodeType):
        return (o.co_code, norm(o.co_consts), o.co_names, o.co_varnames, o.co_freevars, o.co_cellvars,
                o.co_filename, o.co_name, o.co_qualname, o.co_flags, o.co_firstlineno,
                list(o.co_positions()), o.co_exceptiontable)
    if isinstance(o, tuple):
        return tuple(norm(x) for x in o)
    return o
for path in sys.argv[1:]:
    data = open(path, 'rb').read()
    print(data[:16].hex(), repr(norm(marshal.loads(data[16:]))))
";

    #[test]
    fn a_relocated_pyc_is_the_pyc_of_the_relocated_source() {
        let dir = tempfile::tempdir().unwrap();
        let from = "/envoci/_placehold_placehold_placehold";
        let same_length = "/t".repeat(from.len() / 2);
        assert_eq!(same_length.len(), from.len());
        for to in [
            "/t",
            "/a/much/longer/target/path/than/the/placeholder/it/replaces",
            "/tmp/café/env",
            &format!("/{}", "l".repeat(250)),
            &same_length,
        ] {
            let before = module(from, to.is_ascii());
            let after = module(to, to.is_ascii());
            let compiled = compile(dir.path(), &before);
            let strings = Strings {
                from: from.as_bytes(),
                to: to.as_bytes(),
                relative_to: None,
            };
            let got = relocate(&compiled, &strings, Some((&before, &after, 0))).unwrap();
            assert!(got.replaced);
            let want = compile(dir.path(), &after);
            // What Python reads from both, for a readable failure.
            let (got_path, want_path) = (dir.path().join("got.pyc"), dir.path().join("want.pyc"));
            std::fs::write(&got_path, &got.bytes).unwrap();
            std::fs::write(&want_path, &want).unwrap();
            let seen = String::from_utf8(python(NORMALISE, &[&got_path, &want_path])).unwrap();
            let lines: Vec<&str> = seen.lines().collect();
            assert_eq!(lines[0], lines[1], "relocated to {to}");
            // Columns included: the bytes CPython writes for the relocated source.
            assert!(
                got.bytes == want,
                "relocated to {to}: differs from a fresh compile"
            );
        }
    }

    #[test]
    fn a_pyc_that_did_not_match_its_source_keeps_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let compiled = compile(dir.path(), &module("/p/q", true));
        let strings = Strings {
            from: b"/p/q",
            to: b"/r",
            relative_to: None,
        };
        let got = relocate(
            &compiled,
            &strings,
            Some((b"other source", &module("/r", true), 0)),
        )
        .unwrap();
        assert_eq!(got.bytes[..HEADER_LEN], compiled[..HEADER_LEN]);
    }

    #[test]
    fn the_standard_librarys_bytecode_is_copied_unchanged_and_its_tables_encoded_as_cpython_does() {
        let stdlib = String::from_utf8(python(
            "import sysconfig; print(sysconfig.get_paths()['stdlib'], end='')",
            &[],
        ))
        .unwrap();
        let mut seen = 0;
        for entry in walkdir::WalkDir::new(&stdlib).into_iter().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pyc") {
                continue;
            }
            let pyc = std::fs::read(path).unwrap();
            let strings = Strings {
                from: b"/nowhere/at/all",
                to: b"/x",
                relative_to: None,
            };
            let got = rewrite(&pyc, &strings).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!got.replaced);
            assert!(got.bytes == pyc, "{} changed", path.display());
            // Location tables decoded and encoded again come out as CPython wrote them.
            let again = rewrite_with(&pyc, &strings, Some(locations::Shifts::none())).unwrap();
            assert!(again.bytes == pyc, "{}: tables changed", path.display());
            seen += 1;
        }
        assert!(seen > 100, "only {seen} pycs in {stdlib}");
    }

    #[test]
    fn file_names_below_the_prefix_become_relative() {
        let dir = tempfile::tempdir().unwrap();
        let py = dir.path().join("m.py");
        std::fs::write(&py, b"def f():\n    return 1\n").unwrap();
        let pyc = dir.path().join("m.pyc");
        let script = "import py_compile, sys\npy_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile='/snap/env/lib/m.py', doraise=True)";
        python(script, &[&py, &pyc]);
        let strings = Strings {
            from: b"/snap/env",
            to: b"/envoci/_placehold",
            relative_to: Some(b"/snap/env"),
        };
        let got = rewrite(&std::fs::read(&pyc).unwrap(), &strings).unwrap();
        assert!(!got.replaced, "the file name is no relocation");
        std::fs::write(&pyc, &got.bytes).unwrap();
        let names = python("import marshal, sys\nc = marshal.loads(open(sys.argv[1], 'rb').read()[16:])\nprint(c.co_filename, c.co_consts[0].co_filename)", &[&pyc]);
        assert_eq!(
            String::from_utf8(names).unwrap().trim(),
            "lib/m.py lib/m.py"
        );
    }

    #[test]
    fn damaged_bytecode_is_refused_or_rewritten_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let compiled = compile(dir.path(), &module("/p", true));
        let strings = Strings {
            from: b"/p",
            to: b"/a/longer/q",
            relative_to: Some(b"/p"),
        };
        for at in HEADER_LEN..compiled.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = compiled.clone();
                damaged[at] ^= flip;
                let _ = relocate(&damaged, &strings, Some((b"x", b"y", 0)));
            }
            let _ = rewrite(&compiled[..at], &strings);
        }
    }

    #[test]
    fn malformed_bytecode_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let compiled = compile(dir.path(), &module("/p", true));
        let strings = Strings {
            from: b"/p",
            to: b"/q",
            relative_to: None,
        };
        assert_eq!(rewrite(b"short", &strings), Err(Error::NotPyc));
        let mut other = compiled.clone();
        other[0] = 0x01;
        other[1] = 0x01;
        assert!(matches!(
            rewrite(&other, &strings),
            Err(Error::Unsupported { .. })
        ));
        for cut in [
            HEADER_LEN,
            HEADER_LEN + 1,
            compiled.len() / 2,
            compiled.len() - 1,
        ] {
            assert!(
                matches!(
                    rewrite(&compiled[..cut], &strings),
                    Err(Error::Malformed { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut trailing = compiled.clone();
        trailing.push(b'N');
        assert!(matches!(
            rewrite(&trailing, &strings),
            Err(Error::Malformed { .. })
        ));
        // A deep nest of one-item tuples, and a huge count: refused, no stack overflow.
        let mut deep = compiled[..HEADER_LEN].to_vec();
        for _ in 0..100_000 {
            deep.extend_from_slice(b")\x01");
        }
        deep.push(b'N');
        assert!(matches!(
            rewrite(&deep, &strings),
            Err(Error::Malformed { .. })
        ));
        let mut huge = compiled[..HEADER_LEN].to_vec();
        huge.extend_from_slice(b"(\xff\xff\xff\x7f");
        assert!(matches!(
            rewrite(&huge, &strings),
            Err(Error::Malformed { .. })
        ));
    }
}
