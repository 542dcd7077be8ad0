//! Prefix relocation as pure functions from bytes to bytes.
//!
//! An environment's files may contain its own absolute path (scripts, config files,
//! compiled-in strings). At ingest that path is replaced by a **placeholder**; at restore
//! the placeholder is replaced by the space's path. Text files get a plain replacement.
//! Binary files get a C-string replacement: the string holding the placeholder is
//! rewritten in place and padded with NULs so every offset in the file stays valid,
//! which is why a binary file's target path may not be longer than its placeholder.

use memchr::memmem;

/// The canonical placeholder envoci writes into layers: 255 bytes, like conda-build's,
/// so any target path up to 255 bytes can be relocated into binary files built by envoci.
pub const PLACEHOLDER: &str = "/envoci/_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_placehold_envoci";

/// Longest shebang line (without `#!`) the Linux kernel accepts.
pub const MAX_SHEBANG: usize = 127;

/// How a relocated file is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// Plain replacement; the file may change length.
    Text,
    /// C-string replacement with NUL padding; the file keeps its length.
    Binary,
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

/// Replaces every occurrence of `from` with `to`.
pub fn replace_text(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let mut last = 0;
    for at in memmem::find_iter(src, from) {
        out.extend_from_slice(&src[last..at]);
        out.extend_from_slice(to);
        last = at + from.len();
    }
    out.extend_from_slice(&src[last..]);
    out
}

/// Relocates a text file: replaces `from` with `to`, then shortens a shebang that the
/// kernel would refuse (over [`MAX_SHEBANG`] bytes) to `#!/usr/bin/env NAME ARGS`.
pub fn relocate_text(src: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    fix_long_shebang(replace_text(src, from, to))
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
    if to.len() > from.len() {
        return Err(TooLong {
            new_len: to.len(),
            max_len: from.len(),
        });
    }
    let mut out = Vec::with_capacity(src.len());
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
    debug_assert_eq!(out.len(), src.len());
    Ok(out)
}

/// Undoes a binary relocation made by conda or rattler at install time: each C-string
/// holding `installed` (the prefix) gets `placeholder` (longer) back, taking the NUL
/// padding the installer left after the string. `None` if some string has too little
/// padding, i.e. the file was not produced by a padding installer.
pub fn unrelocate_binary(src: &[u8], installed: &[u8], placeholder: &[u8]) -> Option<Vec<u8>> {
    if placeholder.len() < installed.len() {
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

/// Relocates content in the given mode.
pub fn relocate(src: &[u8], mode: FileMode, from: &[u8], to: &[u8]) -> Result<Vec<u8>, TooLong> {
    match mode {
        FileMode::Text => Ok(relocate_text(src, from, to)),
        FileMode::Binary => relocate_binary(src, from, to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_is_255_bytes() {
        assert_eq!(PLACEHOLDER.len(), 255);
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
        ];
        for (src, from, to, want) in cases {
            let got = replace_text(src.as_bytes(), from.as_bytes(), to.as_bytes());
            assert_eq!(
                String::from_utf8(got).unwrap(),
                *want,
                "replace {from} by {to} in {src:?}"
            );
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
        ];
        for (src, from, to, want) in cases {
            let got = relocate_binary(src, from.as_bytes(), to.as_bytes()).unwrap();
            assert_eq!(got.len(), src.len());
            assert_eq!(&got[..], *want, "{from} -> {to}");
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
    fn guesses_mode_by_nul() {
        assert_eq!(guess_mode(b"text\n"), FileMode::Text);
        assert_eq!(guess_mode(b"bin\0ary"), FileMode::Binary);
    }
}
