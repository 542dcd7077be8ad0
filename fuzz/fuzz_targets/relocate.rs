//! Relocation's pure functions (`envoci::relocate`, `envoci::pyc`) on any content, placeholder and
//! target. Input: one byte each for the lengths of `from` and `to` (at most 255, a
//! placeholder's limit), then `from`, `to`, and the file content.
#![no_main]

use envoci::relocate::{self, FileMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [from_len, to_len, rest @ ..] = data else {
        return;
    };
    let (from_len, to_len) = (usize::from(*from_len), usize::from(*to_len));
    if rest.len() < from_len + to_len {
        return;
    }
    let (from, rest) = rest.split_at(from_len);
    let (to, src) = rest.split_at(to_len);

    let _ = relocate::contains(src, from);
    let mode = relocate::guess_mode(src);
    let _ = relocate::replace_text(src, from, to);
    let _ = relocate::relocate_text(src, from, to);
    let _ = relocate::fix_long_shebang(src.to_vec());
    // A placeholder that is empty or holds a NUL passes content through (it used to
    // hang: fuzz/seeds/relocate/binary-*-placeholder-hang*).
    match relocate::relocate_binary(src, from, to) {
        Ok(out) => assert_eq!(out.len(), src.len(), "binary relocation keeps the length"),
        Err(e) => assert!(to.len() > from.len(), "refused: {e}"),
    }
    if let Some(out) = relocate::unrelocate_binary(src, from, to) {
        assert_eq!(out.len(), src.len(), "unrelocation keeps the length");
    }
    let _ = relocate::relocate(src, mode, from, to);
    let _ = relocate::relocate(src, FileMode::Text, from, to);
    // Bytecode: anything that is no valid pyc passes through; nothing panics.
    let _ = relocate::relocate(src, FileMode::Pyc, from, to);
    let strings = envoci::pyc::Strings {
        from,
        to,
        relative_to: Some(from),
    };
    let _ = envoci::pyc::relocate(src, &strings, Some((from, to, 0)));
});
