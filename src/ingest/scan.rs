//! Reading the prefix's files into one layer: hash, find the prefix, rewrite it, store
//! in the CAS, append to the tar — one read per file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::walk::{Walked, WalkedKind};
use super::{Attribution, Error};
use crate::catalog::Relocation;
use crate::digest::Digest;
use crate::layer::{Entry, EntryKind, LAYER_MTIME};
use crate::pyc;
use crate::relocate::{self, FileMode, PLACEHOLDER};
use crate::store::{CasKey, Scratch, Store};

/// Files up to this size are read into memory whole; larger ones are streamed.
const IN_MEMORY_LIMIT: u64 = 32 * 1024 * 1024;

/// Everything the layer builders share.
pub(super) struct Context<'a> {
    pub store: &'a Store,
    pub scratch: &'a Scratch,
    pub prefix: &'a Path,
    pub prefix_str: &'a str,
    pub attribution: &'a Attribution,
    /// mtime and size of every `.py` file, to validate `.pyc` headers.
    pub py_sources: &'a HashMap<&'a str, (i64, u64)>,
    /// What the prefix becomes in binary files no package declares (as long as the
    /// prefix); `None`: such files keep the prefix as their own placeholder.
    pub binary_placeholder: Option<&'static str>,
}

/// Reads the files of one layer (`entries`, sorted by path) once each: hashes them,
/// rewrites the prefix to the placeholder, puts new content in the file CAS. Returns
/// the layer's index entries and relocations (both sorted by path).
///
/// Bytecode comes last, so that a `.pyc` knows whether its source was relocated: its
/// header must then be made to match the source as the layer holds it ([`pyc_content`]).
pub(super) fn scan_layer(
    ctx: &Context<'_>,
    entries: &[&Walked],
) -> Result<(Vec<Entry>, Vec<Relocation>), Error> {
    let mut index: Vec<Option<Entry>> = vec![None; entries.len()];
    let mut relocations = Vec::new();
    let mut sources = RelocatedSources::new();
    let (pycs, others): (Vec<_>, Vec<_>) = entries
        .iter()
        .enumerate()
        .partition(|(_, w)| is_bytecode(w));
    for (at, walked) in others.into_iter().chain(pycs) {
        let (entry, reloc) = scan_entry(ctx, walked, &mut sources)?;
        index[at] = Some(entry);
        relocations.extend(reloc);
    }
    relocations.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((index.into_iter().flatten().collect(), relocations))
}

/// A `.pyc` small enough to be read whole.
fn is_bytecode(walked: &Walked) -> bool {
    matches!(walked.kind, WalkedKind::File { size, .. } if size <= IN_MEMORY_LIMIT)
        && walked.rel.ends_with(".pyc")
}

/// The `.py` files of a layer that were relocated as text: path → content as found and
/// as the layer holds it.
type RelocatedSources = HashMap<String, (Vec<u8>, Vec<u8>)>;

/// Reads one path of a layer: its index entry and relocation.
fn scan_entry(
    ctx: &Context<'_>,
    walked: &Walked,
    sources: &mut RelocatedSources,
) -> Result<(Entry, Option<Relocation>), Error> {
    let rel = walked.rel.as_str();
    let path = ctx.prefix.join(rel);
    let mut relocation = None;
    let kind = match &walked.kind {
        WalkedKind::EmptyDir => EntryKind::Dir,
        WalkedKind::Symlink { target } => EntryKind::Symlink {
            target: relative_symlink(rel, target, ctx.prefix_str).into(),
        },
        WalkedKind::File { size, exec, .. } => {
            let (key, size, reloc) = if *size > IN_MEMORY_LIMIT {
                large_file(ctx, rel, *exec)?
            } else {
                let content = std::fs::read(&path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                store_content(ctx, rel, *exec, content, sources)?
            };
            relocation = reloc;
            EntryKind::File {
                digest: key.digest,
                size,
                exec: key.exec,
            }
        }
    };
    let entry = Entry {
        path: rel.to_string(),
        kind,
    };
    Ok((entry, relocation))
}

/// Processes a file's content and puts the result in the CAS.
fn store_content(
    ctx: &Context<'_>,
    rel: &str,
    exec: bool,
    content: Vec<u8>,
    sources: &mut RelocatedSources,
) -> Result<(CasKey, u64, Option<Relocation>), Error> {
    let (content, reloc) = if rel.ends_with(".pyc") {
        pyc_content(ctx, rel, content, sources)
    } else if rel.ends_with(".py") && relocate::contains(&content, ctx.prefix_str.as_bytes()) {
        let original = content.clone();
        let (content, reloc) = process(ctx, rel, content);
        if reloc.as_ref().is_some_and(|r| r.mode == FileMode::Text) {
            sources.insert(rel.to_string(), (original, content.clone()));
        }
        (content, reloc)
    } else {
        process(ctx, rel, content)
    };
    let key = CasKey {
        digest: Digest::of(&content),
        exec,
    };
    ctx.store.cas_insert_bytes(&key, &content)?;
    Ok((key, content.len() as u64, reloc))
}

/// A file too large to hold in memory: streamed into the CAS while hashed and scanned;
/// only if it holds the prefix (rare for large files) is it read whole and rewritten.
fn large_file(
    ctx: &Context<'_>,
    rel: &str,
    exec: bool,
) -> Result<(CasKey, u64, Option<Relocation>), Error> {
    let path = ctx.prefix.join(rel);
    let read_err = |source| Error::Read {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(read_err)?;
    let mut scanner = Scanner::new(file, ctx.prefix_str.as_bytes());
    let (key, size) = ctx
        .store
        .cas_insert_reader(ctx.scratch, &mut scanner, exec, false)?;
    if scanner.found && !rel.ends_with(".pyc") {
        let content = std::fs::read(&path).map_err(read_err)?;
        return store_content(ctx, rel, exec, content, &mut RelocatedSources::new());
    }
    Ok((key, size, None))
}

/// Rewrites one file's content (not bytecode) for its layer: the prefix becomes a
/// placeholder.
fn process(ctx: &Context<'_>, rel: &str, content: Vec<u8>) -> (Vec<u8>, Option<Relocation>) {
    let prefix = ctx.prefix_str.as_bytes();
    if !relocate::contains(&content, prefix) {
        return (content, None);
    }
    let declared = ctx.attribution.declared.get(rel);
    let mode = declared
        .map(|d| d.mode)
        .unwrap_or_else(|| relocate::guess_mode(&content));
    let reloc = |placeholder: Option<String>| {
        Some(Relocation {
            path: rel.to_string(),
            mode,
            placeholder,
        })
    };
    match mode {
        FileMode::Text | FileMode::Pyc => (
            relocate::replace_text(&content, prefix, PLACEHOLDER.as_bytes()),
            reloc(None),
        ),
        FileMode::Binary => {
            // Prefer the package's own bytes back: undo the installer's padding.
            if let Some(d) = declared.filter(|d| d.placeholder.len() >= prefix.len()) {
                if let Some(original) =
                    relocate::unrelocate_binary(&content, prefix, d.placeholder.as_bytes())
                {
                    let hash = Digest::of(&original).0;
                    if d.hashes.is_empty() || d.hashes.contains(&hash) {
                        let own = (d.placeholder != PLACEHOLDER).then(|| d.placeholder.clone());
                        return (original, reloc(own));
                    }
                }
            }
            if let Some(canonical) = ctx.binary_placeholder {
                if let Ok(rewritten) =
                    relocate::relocate_binary(&content, prefix, canonical.as_bytes())
                {
                    let own = (canonical != PLACEHOLDER).then(|| canonical.to_string());
                    return (rewritten, reloc(own));
                }
            }
            (content, reloc(Some(ctx.prefix_str.to_string())))
        }
    }
}

/// Rewrites a `.pyc` for its layer. A timestamp pyc that matched its source gets the
/// layer mtime in its header ([`normalise_pyc`]). Bytecode holding the prefix has its
/// strings rewritten ([`crate::pyc`]): the prefix becomes the placeholder, except in a
/// code object's file name below it, which becomes relative (CPython puts the source's
/// path back on import), so the layer does not depend on where the environment was. If
/// its source was relocated and the header matched it, the header is made to match the
/// layer's source. Either makes it a `pyc` relocation; bytecode that cannot be read is
/// kept as it is.
fn pyc_content(
    ctx: &Context<'_>,
    rel: &str,
    content: Vec<u8>,
    sources: &RelocatedSources,
) -> (Vec<u8>, Option<Relocation>) {
    let content = normalise_pyc(ctx, rel, content);
    let prefix = ctx.prefix_str.as_bytes();
    let source = super::attribute::pyc_source(rel).and_then(|s| sources.get(&s));
    if source.is_none() && !relocate::contains(&content, prefix) {
        return (content, None);
    }
    let strings = pyc::Strings {
        from: prefix,
        to: PLACEHOLDER.as_bytes(),
        relative_to: Some(prefix),
    };
    let mtime = LAYER_MTIME as i64;
    let sources = source.map(|(found, layer)| (&found[..], &layer[..], mtime));
    let Ok(rewritten) = pyc::relocate(&content, &strings, sources) else {
        return (content, None);
    };
    let header_follows = sources.is_some_and(|(found, _, mtime)| {
        pyc::Header::parse(&content).is_ok_and(|h| h.matches(found, mtime))
    });
    let reloc = (rewritten.replaced || header_follows).then(|| Relocation {
        path: rel.to_string(),
        mode: FileMode::Pyc,
        placeholder: None,
    });
    (rewritten.bytes, reloc)
}

/// A timestamp-based `.pyc` (PEP 552 flags 0) whose header matches its source's mtime
/// and size gets [`LAYER_MTIME`] instead, which is the mtime restore gives the source.
fn normalise_pyc(ctx: &Context<'_>, rel: &str, mut content: Vec<u8>) -> Vec<u8> {
    if content.len() < 16 || content[4..8] != [0, 0, 0, 0] {
        return content;
    }
    let Some(source) = super::attribute::pyc_source(rel) else {
        return content;
    };
    let Some(&(mtime, size)) = ctx.py_sources.get(source.as_str()) else {
        return content;
    };
    let header_mtime = u32::from_le_bytes([content[8], content[9], content[10], content[11]]);
    let header_size = u32::from_le_bytes([content[12], content[13], content[14], content[15]]);
    if header_mtime == mtime as u32 && header_size == size as u32 {
        content[8..12].copy_from_slice(&(LAYER_MTIME as u32).to_le_bytes());
    }
    content
}

/// An absolute link into the prefix becomes relative, so it survives relocation.
fn relative_symlink(rel: &str, target: &str, prefix: &str) -> String {
    let inside = target
        .strip_prefix(prefix)
        .filter(|rest| rest.starts_with('/'));
    let Some(rest) = inside else {
        return target.to_string();
    };
    let depth = rel.matches('/').count();
    let up = "../".repeat(depth);
    let rest = rest.trim_start_matches('/');
    if up.is_empty() {
        rest.to_string()
    } else {
        format!("{up}{rest}")
    }
}

/// A reader that notices whether a needle passes through it (across read boundaries).
struct Scanner<R> {
    inner: R,
    needle: Vec<u8>,
    tail: Vec<u8>,
    found: bool,
}

impl<R: Read> Scanner<R> {
    fn new(inner: R, needle: &[u8]) -> Self {
        Scanner {
            inner,
            needle: needle.to_vec(),
            tail: Vec::new(),
            found: false,
        }
    }
}

impl<R: Read> Read for Scanner<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.found && n > 0 {
            self.tail.extend_from_slice(&buf[..n]);
            self.found = relocate::contains(&self.tail, &self.needle);
            let keep = self.needle.len().saturating_sub(1).min(self.tail.len());
            self.tail.drain(..self.tail.len() - keep);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_into_the_prefix_become_relative() {
        assert_eq!(relative_symlink("bin/x", "/env/bin/y", "/env"), "../bin/y");
        assert_eq!(relative_symlink("x", "/env/lib/y", "/env"), "lib/y");
        assert_eq!(
            relative_symlink("bin/x", "/usr/bin/sh", "/env"),
            "/usr/bin/sh"
        );
        assert_eq!(
            relative_symlink("bin/x", "/env2/bin/y", "/env"),
            "/env2/bin/y"
        );
        assert_eq!(relative_symlink("bin/x", "y", "/env"), "y");
    }

    #[test]
    fn scanner_finds_needles_across_reads() {
        let data = b"aaaa/my/prefixbbbb".to_vec();
        for chunk in 1..data.len() {
            struct Chunked<'a>(&'a [u8], usize);
            impl Read for Chunked<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    let n = self.1.min(self.0.len()).min(buf.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut s = Scanner::new(Chunked(&data, chunk), b"/my/prefix");
            io::copy(&mut s, &mut io::sink()).unwrap();
            assert!(s.found, "chunk {chunk}");
        }
    }
}
