//! Prefix relocation as pure functions from a reader to a writer.
//!
//! An environment's files may contain its own absolute path (scripts, config files,
//! compiled-in strings). At ingest that path is replaced by a **placeholder**; at restore
//! the placeholder is replaced by the space's path. Text files get a plain replacement.
//! Binary files get a C-string replacement: the string holding the placeholder is
//! rewritten in place and padded with NULs so every offset in the file stays valid,
//! which is why a binary file's target path may not be longer than its placeholder.
//!
//! [`relocate_stream`] works in constant memory whatever the file's size: it reads
//! [`CHUNK`] bytes at a time and holds back only the last `placeholder length − 1` bytes
//! of a chunk, where a placeholder split across two reads may begin. A C string is
//! never held either, however long: the NULs it owes (placeholder length − target
//! length per replacement) are a count, written where the string's NUL comes (or at
//! the end of the file). A text file's first line is held, up to [`MAX_SHEBANG_HOLD`]
//! bytes, to shorten an over-long shebang; a longer first line is no shebang any
//! kernel runs and passes through untouched. The slice functions ([`replace_text`],
//! [`relocate_binary`], ...) are the same code writing into a `Vec`.
//!
//! An empty placeholder matches nothing (the content passes through unchanged); the
//! catalog never names one ([`crate::artifact::validate`] refuses it).

use std::io::{self, Read, Write};

use memchr::memmem;

/// The canonical placeholder envoci writes into layers: 255 bytes, like conda-build's,
/// so any target path up to 255 bytes can be relocated into binary files built by envoci.
pub const PLACEHOLDER: &str = "/envoci/_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_envoci";

/// Longest placeholder (in bytes) a catalog may name, for the environment or one file.
pub const MAX_PLACEHOLDER: usize = 255;

/// The canonical placeholder of `len` bytes: [`PLACEHOLDER`] cut to that length. A
/// build prefix shorter than [`PLACEHOLDER`] becomes it in binary files no package
/// declares, so their layers do not depend on where the store is. `None` for 0 or more
/// than 255 bytes.
pub fn placeholder_of_len(len: usize) -> Option<&'static str> {
    PLACEHOLDER.get(..len).filter(|p| !p.is_empty())
}

/// Longest shebang line (without `#!`) the Linux kernel accepts.
pub const MAX_SHEBANG: usize = 127;

/// Longest first line a text relocation holds to shorten an over-long shebang; a longer
/// one passes through as it is.
pub const MAX_SHEBANG_HOLD: usize = 64 * 1024;

/// How many bytes a relocation reads at a time.
pub const CHUNK: usize = 64 * 1024;

/// How a relocated file is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Plain replacement; the file may change length.
    Text,
    /// C-string replacement with NUL padding; the file keeps its length.
    Binary,
    /// CPython bytecode: its marshalled strings are rewritten ([`crate::pyc`]); the file
    /// may change length. Restore also makes its header match the relocated source.
    Pyc,
}

/// A binary relocation that cannot fit: the new path is longer than the placeholder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path of {new_len} bytes is longer than the {max_len}-byte placeholder it must replace in a binary file")]
pub struct TooLong {
    /// Length of the replacement.
    pub new_len: usize,
    /// Longest replacement that fits.
    pub max_len: usize,
}

/// Why a streaming relocation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target path does not fit a binary file's placeholder.
    #[error(transparent)]
    TooLong(#[from] TooLong),
    /// Reading the original content failed.
    #[error("cannot read the content to relocate")]
    Read(#[source] io::Error),
    /// Writing the relocated content failed.
    #[error("cannot write the relocated content")]
    Write(#[source] io::Error),
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memmem::find(haystack, needle).is_some()
}

/// Guesses the mode of a file nobody declared: any NUL byte makes it binary.
pub fn guess_mode(content: &[u8]) -> FileMode {
    if memchr::memchr(0, content).is_some() {
        FileMode::Binary
    } else {
        FileMode::Text
    }
}

/// Relocates what `reader` yields into `writer` in the given mode, in constant memory
/// (see the module documentation): text mode replaces every `from` by `to` and then
/// shortens an over-long shebang; binary mode rewrites each C string holding `from`
/// and pads it with NULs to its old length; pyc mode (bytecode, read whole) rewrites
/// its marshalled strings and leaves its header to the caller. Wrap `writer` in a
/// [`HashingWriter`](crate::digest::HashingWriter) to hash what is written.
pub fn relocate_stream(
    reader: impl Read,
    writer: impl Write,
    mode: FileMode,
    from: &[u8],
    to: &[u8],
) -> Result<(), Error> {
    match mode {
        FileMode::Text => {
            let mut out = ShebangWriter::new(writer);
            replace_stream(reader, &mut out, from, to)?;
            out.finish().map_err(Error::Write)?;
            Ok(())
        }
        FileMode::Binary => relocate_binary_stream(reader, writer, from, to),
        FileMode::Pyc => relocate_pyc_strings(reader, writer, from, to),
    }
}

/// Rewrites the strings of a `.pyc` (read whole: bytecode files are small); one that
/// cannot be read as bytecode, or is over [`crate::pyc::MAX_SIZE`], passes through
/// unchanged.
fn relocate_pyc_strings(
    mut reader: impl Read,
    mut writer: impl Write,
    from: &[u8],
    to: &[u8],
) -> Result<(), Error> {
    let mut content = Vec::new();
    (&mut reader)
        .take(crate::pyc::MAX_SIZE + 1)
        .read_to_end(&mut content)
        .map_err(Error::Read)?;
    if content.len() as u64 > crate::pyc::MAX_SIZE {
        put(&mut writer, &content)?;
        return replace_stream(reader, writer, b"", b"");
    }
    let strings = crate::pyc::Strings {
        from,
        to,
        relative_to: None,
    };
    match crate::pyc::rewrite(&content, &strings) {
        Ok(rewritten) => put(&mut writer, &rewritten.bytes),
        Err(_) => put(&mut writer, &content),
    }
}

/// Replaces every occurrence of `from` with `to` from `reader` into `writer`, holding
/// at most [`CHUNK`] + `from.len()` − 1 bytes.
pub fn replace_stream(
    reader: impl Read,
    mut writer: impl Write,
    from: &[u8],
    to: &[u8],
) -> Result<(), Error> {
    let finder = memmem::Finder::new(from);
    let mut window = Window::new(reader, from.len().saturating_sub(1));
    loop {
        window.fill()?;
        let data = window.data();
        let mut last = 0;
        if !from.is_empty() {
            for at in finder.find_iter(data) {
                put(&mut writer, &data[last..at])?;
                put(&mut writer, to)?;
                last = at + from.len();
            }
        }
        let done = window.hold_after(last);
        put(&mut writer, &data[last..done])?;
        if window.at_end() {
            return Ok(());
        }
        window.consume(done);
    }
}

/// Rewrites each NUL-terminated string of `reader` that contains `from`: every `from`
/// in it becomes `to`, and the string is padded with NULs to its old length (so the
/// output is exactly as long as the input). The padding a string owes is counted, not
/// held, so a C string of any length streams through.
pub fn relocate_binary_stream(
    reader: impl Read,
    mut writer: impl Write,
    from: &[u8],
    to: &[u8],
) -> Result<(), Error> {
    if to.len() > from.len() {
        return Err(TooLong {
            new_len: to.len(),
            max_len: from.len(),
        }
        .into());
    }
    if from.is_empty() || from.contains(&0) {
        // Nothing to find (a C string cannot hold its own terminator): pass it on.
        return replace_stream(reader, writer, b"", b"");
    }
    let shrink = (from.len() - to.len()) as u64;
    let finder = memmem::Finder::new(from);
    let mut window = Window::new(reader, from.len() - 1);
    // The NULs owed by the C string being rewritten; `None` outside such a string.
    let mut owed: Option<u64> = None;
    loop {
        window.fill()?;
        let data = window.data();
        let mut pos = 0;
        // The first NUL at or after `pos` in this chunk, once looked for.
        let mut nul: Option<Option<usize>> = None;
        loop {
            let found = finder.find(&data[pos..]).map(|i| pos + i);
            if let Some(padding) = owed {
                let z = match nul {
                    Some(Some(z)) if z >= pos => Some(z),
                    Some(None) => None,
                    _ => memchr::memchr(0, &data[pos..]).map(|i| pos + i),
                };
                nul = Some(z);
                if let Some(z) = z.filter(|&z| found.is_none_or(|f| z < f)) {
                    // The string ends before any other placeholder: pay what it owes.
                    put(&mut writer, &data[pos..z])?;
                    put_zeros(&mut writer, padding)?;
                    owed = None;
                    pos = z;
                    continue;
                }
            }
            let Some(at) = found else { break };
            put(&mut writer, &data[pos..at])?;
            put(&mut writer, to)?;
            owed = Some(owed.unwrap_or(0) + shrink);
            pos = at + from.len();
        }
        let done = window.hold_after(pos);
        put(&mut writer, &data[pos..done])?;
        if window.at_end() {
            if let Some(padding) = owed {
                put_zeros(&mut writer, padding)?;
            }
            return Ok(());
        }
        window.consume(done);
    }
}

/// Replaces every occurrence of `from` with `to`.
pub fn replace_text(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    match replace_stream(src, &mut out, from, to) {
        Ok(()) => out,
        Err(e) => unreachable!("a slice reads and a Vec writes without failing: {e}"),
    }
}

/// Relocates a text file: replaces `from` with `to`, then shortens a shebang that the
/// kernel would refuse (over [`MAX_SHEBANG`] bytes) to `#!/usr/bin/env NAME ARGS`.
pub fn relocate_text(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match in_memory(src, FileMode::Text, from, to) {
        Ok(out) => out,
        Err(e) => unreachable!("text relocation has no length limit: {e}"),
    }
}

/// Rewrites an over-long `#!/abs/path/interp args` line to `#!/usr/bin/env interp args`.
pub fn fix_long_shebang(content: Vec<u8>) -> Vec<u8> {
    if !content.starts_with(b"#!") {
        return content;
    }
    let line_end = memchr::memchr(b'\n', &content).unwrap_or(content.len());
    let line = &content[2..line_end];
    if line.len() <= MAX_SHEBANG {
        return content;
    }
    let line_str = String::from_utf8_lossy(line);
    let line_str = line_str.trim();
    let (interp, args) = match line_str.split_once(char::is_whitespace) {
        Some((i, a)) => (i, Some(a.trim())),
        None => (line_str, None),
    };
    let name = interp.rsplit('/').next().unwrap_or(interp);
    if name.is_empty() {
        return content;
    }
    let mut out = Vec::with_capacity(content.len());
    out.extend_from_slice(b"#!/usr/bin/env ");
    out.extend_from_slice(name.as_bytes());
    if let Some(args) = args.filter(|a| !a.is_empty()) {
        out.push(b' ');
        out.extend_from_slice(args.as_bytes());
    }
    out.extend_from_slice(&content[line_end..]);
    out
}

/// Relocates a binary file: each NUL-terminated string containing `from` has every
/// `from` replaced by `to` and is padded with NULs to its old length.
pub fn relocate_binary(src: &[u8], from: &[u8], to: &[u8]) -> Result<Vec<u8>, TooLong> {
    in_memory(src, FileMode::Binary, from, to)
}

/// Relocates content in the given mode.
pub fn relocate(src: &[u8], mode: FileMode, from: &[u8], to: &[u8]) -> Result<Vec<u8>, TooLong> {
    in_memory(src, mode, from, to)
}

/// [`relocate_stream`] from a slice into a `Vec`.
fn in_memory(src: &[u8], mode: FileMode, from: &[u8], to: &[u8]) -> Result<Vec<u8>, TooLong> {
    let mut out = Vec::with_capacity(src.len());
    match relocate_stream(src, &mut out, mode, from, to) {
        Ok(()) => Ok(out),
        Err(Error::TooLong(e)) => Err(e),
        Err(Error::Read(e) | Error::Write(e)) => {
            unreachable!("a slice reads and a Vec writes without failing: {e}")
        }
    }
}

/// Undoes a binary relocation made by conda or rattler at install time: each C-string
/// holding `installed` (the prefix) gets `placeholder` (longer) back, taking the NUL
/// padding the installer left after the string. `None` if some string has too little
/// padding, i.e. the file was not produced by a padding installer.
pub fn unrelocate_binary(src: &[u8], installed: &[u8], placeholder: &[u8]) -> Option<Vec<u8>> {
    if placeholder.len() < installed.len() || installed.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(src.len());
    let finder = memmem::Finder::new(installed);
    let mut pos = 0;
    while let Some(found) = finder.find(&src[pos..]) {
        let start = pos + found;
        let end = memchr::memchr(0, &src[start..]).map(|n| start + n)?;
        let nuls = src[end..].iter().take_while(|&&b| b == 0).count();
        let replaced = replace_text(&src[start..end], installed, placeholder);
        let growth = replaced.len() - (end - start);
        if growth >= nuls {
            return None;
        }
        out.extend_from_slice(&src[pos..start]);
        out.extend_from_slice(&replaced);
        out.resize(out.len() + (nuls - growth), 0);
        pos = end + nuls;
    }
    out.extend_from_slice(&src[pos..]);
    (out.len() == src.len()).then_some(out)
}

/// The input of a streaming relocation, a chunk at a time: [`CHUNK`] new bytes after
/// at most `keep` bytes held back from the chunk before.
struct Window<R> {
    reader: R,
    buf: Vec<u8>,
    len: usize,
    keep: usize,
    end: bool,
}

impl<R: Read> Window<R> {
    fn new(reader: R, keep: usize) -> Self {
        Window {
            reader,
            buf: vec![0; keep + CHUNK],
            len: 0,
            keep,
            end: false,
        }
    }

    /// Reads the next chunk (one read; fewer bytes than asked for are fine), noting
    /// the end of the input.
    fn fill(&mut self) -> Result<(), Error> {
        loop {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.end = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Read(e)),
            }
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn at_end(&self) -> bool {
        self.end
    }

    /// Where the bytes that may be done with end, when everything before `from` is:
    /// all of them at the end of the input, else all but the last `keep` (where a
    /// placeholder cut by this read may begin).
    fn hold_after(&self, from: usize) -> usize {
        if self.end {
            self.len
        } else {
            self.len - self.keep.min(self.len - from)
        }
    }

    /// Drops the first `n` bytes; the rest (at most `keep`) moves to the front.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

fn put(writer: &mut impl Write, bytes: &[u8]) -> Result<(), Error> {
    writer.write_all(bytes).map_err(Error::Write)
}

fn put_zeros(writer: &mut impl Write, mut n: u64) -> Result<(), Error> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        put(writer, &ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Passes everything through to `inner` but the first line of a script (`#!`), which
/// it holds, up to [`MAX_SHEBANG_HOLD`] bytes, to shorten it with [`fix_long_shebang`].
struct ShebangWriter<W> {
    inner: W,
    /// What is held; `None` once it is written.
    head: Option<Vec<u8>>,
}

impl<W: Write> ShebangWriter<W> {
    fn new(inner: W) -> Self {
        ShebangWriter {
            inner,
            head: Some(Vec::new()),
        }
    }

    /// Writes what is still held (the end of the input is the end of the first line).
    fn finish(mut self) -> io::Result<W> {
        if let Some(head) = self.head.take() {
            let head = if head.len() <= MAX_SHEBANG_HOLD {
                fix_long_shebang(head)
            } else {
                head
            };
            self.inner.write_all(&head)?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ShebangWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(head) = self.head.as_mut() else {
            return self.inner.write(buf);
        };
        let seen = head.len();
        head.extend_from_slice(buf);
        let script = head.starts_with(b"#!") || b"#!".starts_with(head.as_slice());
        let release = if !script {
            Some(false)
        } else if let Some(line) = memchr::memchr(b'\n', &head[seen..]).map(|i| seen + i) {
            Some(line <= MAX_SHEBANG_HOLD)
        } else if head.len() > MAX_SHEBANG_HOLD {
            Some(false)
        } else {
            None
        };
        if let Some(fix) = release {
            let head = self.head.take().unwrap_or_default();
            let head = if fix { fix_long_shebang(head) } else { head };
            self.inner.write_all(&head)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_placeholders_are_the_placeholder_cut_to_length() {
        assert_eq!(placeholder_of_len(0), None);
        assert_eq!(placeholder_of_len(1), Some("/"));
        assert_eq!(
            placeholder_of_len(32),
            Some("/envoci/_placehold_placehold_pla")
        );
        assert_eq!(placeholder_of_len(255), Some(PLACEHOLDER));
        assert_eq!(placeholder_of_len(256), None);
    }

    /// A reader that hands out at most `step` bytes per read, so every read boundary
    /// falls where a test wants it.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn streamed(src: &[u8], step: usize, mode: FileMode, from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        relocate_stream(Trickle { data: src, step }, &mut out, mode, from, to).unwrap();
        out
    }

    /// The whole-buffer algorithms relocation had before it streamed: the reference
    /// the streaming code must agree with.
    mod oracle {
        use memchr::memmem;

        pub fn replace_text(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut last = 0;
            for at in memmem::find_iter(src, from) {
                out.extend_from_slice(&src[last..at]);
                out.extend_from_slice(to);
                last = at + from.len();
            }
            out.extend_from_slice(&src[last..]);
            out
        }

        pub fn relocate_binary(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let finder = memmem::Finder::new(from);
            let mut pos = 0;
            while let Some(found) = finder.find(&src[pos..]) {
                let start = pos + found;
                let end = memchr::memchr(0, &src[start..]).map_or(src.len(), |n| start + n);
                out.extend_from_slice(&src[pos..start]);
                let replaced = replace_text(&src[start..end], from, to);
                let padding = (end - start) - replaced.len();
                out.extend_from_slice(&replaced);
                out.resize(out.len() + padding, 0);
                pos = end;
            }
            out.extend_from_slice(&src[pos..]);
            out
        }
    }

    /// Deterministic pseudo-random bytes (xorshift), drawn from `alphabet`.
    fn noise(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn placeholder_is_255_bytes() {
        assert_eq!(PLACEHOLDER.len(), 255);
        assert_eq!(PLACEHOLDER.len(), MAX_PLACEHOLDER);
    }

    #[test]
    fn text_replacement_table() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "a /p/x b /p/y",
                "/p",
                "/longer/q",
                "a /longer/q/x b /longer/q/y",
            ),
            ("nothing here", "/p", "/q", "nothing here"),
            ("/p/p/p", "/p", "", ""),
            ("", "/p", "/q", ""),
            ("aaaa", "aa", "b", "bb"),
            ("aaa", "aa", "b", "ba"),
            // An empty placeholder matches nothing: never the target between bytes.
            ("abc", "", "/target", "abc"),
        ];
        for (src, from, to, want) in cases {
            for step in [1, 2, 3, 1000] {
                let got = streamed(
                    src.as_bytes(),
                    step,
                    FileMode::Text,
                    from.as_bytes(),
                    to.as_bytes(),
                );
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    *want,
                    "replace {from:?} by {to:?} in {src:?}, {step} bytes a read"
                );
            }
            let got = replace_text(src.as_bytes(), from.as_bytes(), to.as_bytes());
            assert_eq!(String::from_utf8(got).unwrap(), *want);
        }
    }

    #[test]
    fn binary_replacement_table() {
        // (source, from, to, expected)
        let cases: &[(&[u8], &str, &str, &[u8])] = &[
            (
                b"xx/long/prefix/bin\0yy",
                "/long/prefix",
                "/s",
                b"xx/s/bin\0\0\0\0\0\0\0\0\0\0\0yy",
            ),
            (
                b"/long/prefix:/long/prefix/lib\0",
                "/long/prefix",
                "/ab",
                b"/ab:/ab/lib\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ),
            (
                b"/long/prefix",
                "/long/prefix",
                "/abc",
                b"/abc\0\0\0\0\0\0\0\0",
            ),
            (
                b"a\0b\0/long/prefix\0c",
                "/long/prefix",
                "/long/prefix",
                b"a\0b\0/long/prefix\0c",
            ),
            (b"no match\0", "/long/prefix", "/x", b"no match\0"),
            // Two strings, each padded at its own NUL.
            (
                b"/long/prefix/a\0/long/prefix/b\0",
                "/long/prefix",
                "/x",
                b"/x/a\0\0\0\0\0\0\0\0\0\0\0/x/b\0\0\0\0\0\0\0\0\0\0\0",
            ),
            // An empty placeholder matches nothing.
            (b"abc\0", "", "", b"abc\0"),
        ];
        for (src, from, to, want) in cases {
            for step in [1, 2, 5, 1000] {
                let got = streamed(src, step, FileMode::Binary, from.as_bytes(), to.as_bytes());
                assert_eq!(got.len(), src.len());
                assert_eq!(&got[..], *want, "{from} -> {to}, {step} bytes a read");
            }
            let got = relocate_binary(src, from.as_bytes(), to.as_bytes()).unwrap();
            assert_eq!(&got[..], *want);
        }
    }

    #[test]
    fn binary_placeholders_holding_a_nul_or_empty_pass_content_through() {
        // Found by fuzzing: these made the C-string loop stand still.
        for (from, to, content) in [
            (&b"\0"[..], &b""[..], &b"\0"[..]),
            (b"", b"", b"\0"),
            (b"ab\0c", b"x", b"zzab\0czz\0"),
        ] {
            let mut out = Vec::new();
            relocate_binary_stream(content, &mut out, from, to).unwrap();
            assert_eq!(out, content, "{from:?}");
        }
    }

    #[test]
    fn binary_refuses_longer_target() {
        let err = relocate_binary(b"/p\0", b"/p", b"/pq").unwrap_err();
        assert_eq!(
            err,
            TooLong {
                new_len: 3,
                max_len: 2
            }
        );
        let mut out = Vec::new();
        let err = relocate_stream(&b"/p\0"[..], &mut out, FileMode::Binary, b"/p", b"/pq");
        assert!(matches!(err, Err(Error::TooLong(_))), "{err:?}");
    }

    #[test]
    fn a_placeholder_cut_by_a_read_at_every_offset_is_replaced() {
        let from = b"/placeholder/of/some/length";
        for mode in [FileMode::Text, FileMode::Binary] {
            for before in 0..from.len() + 2 {
                let mut src = vec![b'x'; before];
                src.extend_from_slice(from);
                src.extend_from_slice(b"/bin\0tail");
                let want = match mode {
                    FileMode::Text => oracle::replace_text(&src, from, b"/t"),
                    FileMode::Binary => oracle::relocate_binary(&src, from, b"/t"),
                    FileMode::Pyc => unreachable!("not a mode this test runs"),
                };
                for step in 1..=from.len() + 1 {
                    assert_eq!(
                        streamed(&src, step, mode, from, b"/t"),
                        want,
                        "{mode:?}: {before} bytes before, {step} a read"
                    );
                }
            }
        }
    }

    #[test]
    fn a_placeholder_across_the_chunk_boundary_at_every_offset_is_replaced() {
        // Full reads: the boundary is the chunk's own.
        let from = PLACEHOLDER.as_bytes();
        for cut in 0..=from.len() {
            let mut src = vec![b'a'; CHUNK - cut];
            src.extend_from_slice(from);
            src.extend_from_slice(b"/lib\0after");
            src.extend(std::iter::repeat_n(b'b', CHUNK));
            for mode in [FileMode::Text, FileMode::Binary] {
                let got = streamed(&src, usize::MAX, mode, from, b"/env");
                let want = match mode {
                    FileMode::Text => oracle::replace_text(&src, from, b"/env"),
                    FileMode::Binary => oracle::relocate_binary(&src, from, b"/env"),
                    FileMode::Pyc => unreachable!("not a mode this test runs"),
                };
                assert!(got == want, "{mode:?}: placeholder cut {cut} bytes in");
            }
        }
    }

    #[test]
    fn a_c_string_longer_than_several_chunks_is_padded_at_its_nul() {
        let from = b"/long/prefix";
        let mut src = b"head\0".to_vec();
        for i in 0..3 * CHUNK / 100 {
            src.extend_from_slice(&noise(i as u64 + 1, 90, b"abcdefgh:/"));
            if i % 7 == 0 {
                src.extend_from_slice(from);
            }
        }
        src.extend_from_slice(b"\0tail/long/prefix");
        assert!(src.len() > 2 * CHUNK);
        let want = oracle::relocate_binary(&src, from, b"/x");
        for step in [usize::MAX, 4093, 7] {
            let got = streamed(&src, step, FileMode::Binary, from, b"/x");
            assert_eq!(got.len(), src.len());
            assert!(got == want, "{step} bytes a read");
        }
    }

    #[test]
    fn streaming_agrees_with_whole_buffer_relocation_on_files_larger_than_a_chunk() {
        let from = b"/pl/ace";
        for seed in 1..20u64 {
            // Few letters, so the placeholder and its prefixes turn up often.
            let mut src = noise(seed, 2 * CHUNK + 4 * seed as usize, b"/plac\0e");
            src.extend_from_slice(from);
            for (step, to) in [(usize::MAX, &b"/t"[..]), (333, b""), (64, b"/pl/ace")] {
                assert!(
                    streamed(&src, step, FileMode::Binary, from, to)
                        == oracle::relocate_binary(&src, from, to),
                    "binary, seed {seed}, {step} bytes a read"
                );
                let text: Vec<u8> = src
                    .iter()
                    .map(|&b| if b == 0 { b'\n' } else { b })
                    .collect();
                let to = b"/a/much/longer/target/path";
                assert!(
                    streamed(&text, step, FileMode::Text, from, to)
                        == oracle::replace_text(&text, from, to),
                    "text, seed {seed}, {step} bytes a read"
                );
            }
        }
    }

    #[test]
    fn unrelocate_reverses_padding_installer() {
        let original: &[u8] = b"head\0/PLACEHOLDER_LONG/bin:/PLACEHOLDER_LONG/lib\0tail\0\0";
        let installed = relocate_binary(original, b"/PLACEHOLDER_LONG", b"/env").unwrap();
        let back = unrelocate_binary(&installed, b"/env", b"/PLACEHOLDER_LONG").unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn unrelocate_refuses_without_padding() {
        assert_eq!(
            unrelocate_binary(b"/env/bin\0x", b"/env", b"/PLACEHOLDER"),
            None
        );
        assert_eq!(
            unrelocate_binary(b"/env/bin", b"/env", b"/PLACEHOLDER"),
            None
        );
    }

    #[test]
    fn long_shebangs_are_shortened() {
        let long = format!("#!/{}/bin/python3 -E\nprint(1)\n", "x".repeat(200));
        assert_eq!(
            fix_long_shebang(long.into_bytes()),
            b"#!/usr/bin/env python3 -E\nprint(1)\n".to_vec()
        );
        let short = b"#!/short/bin/python\nx".to_vec();
        assert_eq!(fix_long_shebang(short.clone()), short);
        let not_script = b"no shebang".to_vec();
        assert_eq!(fix_long_shebang(not_script.clone()), not_script);
    }

    #[test]
    fn shebangs_made_too_long_by_relocation_are_shortened_while_streaming() {
        let long_target = format!("/{}", "t".repeat(150));
        let huge_line = format!("#!/PFX/bin/tool {}\nrest\n", "a".repeat(MAX_SHEBANG_HOLD));
        // (source, target, expected)
        let cases: Vec<(String, &str, String)> = vec![
            (
                "#!/PFX/bin/python3 -E\nprint('/PFX')\n".into(),
                &long_target,
                format!("#!/usr/bin/env python3 -E\nprint('{long_target}')\n"),
            ),
            (
                "#!/PFX/bin/python3\nx".into(),
                "/short",
                "#!/short/bin/python3\nx".into(),
            ),
            // No newline: the end of the file ends the line.
            (
                "#!/PFX/bin/sh".into(),
                &long_target,
                "#!/usr/bin/env sh".into(),
            ),
            // Not a script: never held, never changed but for the placeholder.
            ("#/PFX/x".into(), &long_target, format!("#{long_target}/x")),
            ("#".into(), &long_target, "#".into()),
            ("".into(), &long_target, "".into()),
            // A first line longer than anything held passes through (no kernel runs it).
            (
                huge_line.clone(),
                "/q",
                huge_line.replace("/PFX/bin", "/q/bin"),
            ),
        ];
        for (src, to, want) in &cases {
            for step in [1, 3, 64, usize::MAX] {
                let got = streamed(src.as_bytes(), step, FileMode::Text, b"/PFX", to.as_bytes());
                assert!(
                    got == want.as_bytes(),
                    "{step} bytes a read: {:?}",
                    String::from_utf8_lossy(&got[..got.len().min(400)])
                );
            }
            assert_eq!(
                relocate_text(src.as_bytes(), b"/PFX", to.as_bytes()),
                want.as_bytes()
            );
        }
    }

    #[test]
    fn read_and_write_failures_are_told_apart() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for mode in [FileMode::Text, FileMode::Binary] {
            let r = relocate_stream(Failing, Vec::new(), mode, b"/p", b"/q");
            assert!(matches!(r, Err(Error::Read(_))), "{r:?}");
            let r = relocate_stream(&b"data /p\0"[..], Failing, mode, b"/p", b"/q");
            assert!(matches!(r, Err(Error::Write(_))), "{r:?}");
        }
    }

    #[test]
    fn bytecode_that_cannot_be_read_or_is_too_large_passes_through() {
        let not_pyc = b"/p/lib \0 not bytecode".to_vec();
        let mut large = vec![0u8; crate::pyc::MAX_SIZE as usize + 10];
        large[100..102].copy_from_slice(b"/p");
        for content in [not_pyc, large] {
            for step in [usize::MAX, 4096] {
                let got = streamed(&content, step, FileMode::Pyc, b"/p", b"/longer");
                assert!(got == content, "{} bytes changed", content.len());
            }
        }
    }

    #[test]
    fn guesses_mode_by_nul() {
        assert_eq!(guess_mode(b"text\n"), FileMode::Text);
        assert_eq!(guess_mode(b"bin\0ary"), FileMode::Binary);
    }
}
