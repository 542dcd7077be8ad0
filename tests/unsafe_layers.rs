//! Layers are never trusted: a layer with an absolute path, a `..` component, or a file
//! below a symbolic link is refused before anything is written; a link pointing outside
//! the space that a package really ships is recreated as a link and never followed.

use std::fs;
use std::path::Path;

use envoci::digest::Digest;
use envoci::layer::{Compression, LayerDigests};
use envoci::relocate::PLACEHOLDER;

mod common;
use common::envoci::{exit, Envoci};

enum Raw<'a> {
    File(&'a [u8], &'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
}

/// A tar written header by header, names verbatim (the tar crate refuses to write
/// `..` itself, an attacker's tool would not).
fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data, kind, link): (&[u8], &[u8], _, Option<&[u8]>) = match entry {
            Raw::File(name, data) => (name, data, tar::EntryType::Regular, None),
            Raw::Symlink(name, target) => (name, b"", tar::EntryType::Symlink, Some(target)),
        };
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Tags a one-layer catalog whose layer is `tar` (uncompressed).
fn tag_layer(home: &Path, tag: &str, tar: &[u8], files: u64) {
    let digest = Digest::of(tar);
    let size = tar.len() as u64;
    let claim = common::catalog::Claim {
        digests: LayerDigests {
            digest,
            size,
            diff_id: digest,
            uncompressed_size: size,
        },
        media: Compression::None.media_type(),
        files,
        relocations: vec![],
        placeholder: PLACEHOLDER,
    };
    common::catalog::tag_single_layer(home, tag, tar, claim);
}

#[test]
fn layers_with_escaping_paths_are_refused_and_nothing_is_written() {
    let t = Envoci::new();
    let outside = t.dir().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let abs_name = format!("{}/abs.txt", outside.display());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[
                Raw::File(b"ok.txt", b"fine"),
                Raw::File(b"../escape.txt", b"evil"),
            ]),
            "`..` component",
        ),
        (
            "absolute",
            raw_tar(&[Raw::File(abs_name.as_bytes(), b"evil")]),
            "absolute path",
        ),
        (
            "through-link",
            raw_tar(&[
                Raw::Symlink(b"lib", outside.to_str().unwrap().as_bytes()),
                Raw::File(b"lib/evil.txt", b"evil"),
            ]),
            "lies below the symbolic link `lib`",
        ),
    ];
    for (tag, tar, why) in cases {
        tag_layer(t.home(), tag, &tar, 2);
        let target = t.dir().join(format!("space-{tag}"));
        let err = t.fail_as(
            exit::INTEGRITY,
            &["restore", tag, "--target", target.to_str().unwrap()],
        );
        assert!(err.contains(why), "{tag}: {err}");
        assert!(!target.exists(), "{tag}: nothing written");
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing escaped"
    );
    assert!(!t.dir().join("escape.txt").exists());
}

#[test]
fn a_shipped_link_to_outside_is_recreated_as_a_link_and_never_followed() {
    let t = Envoci::new();
    let outside = t.dir().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let tar = raw_tar(&[
        Raw::Symlink(b"etc/system", outside.to_str().unwrap().as_bytes()),
        Raw::File(b"etc/z.txt", b"ok"),
    ]);
    tag_layer(t.home(), "links", &tar, 2);
    let target = t.dir().join("space");
    t.ok(&["restore", "links", "--target", target.to_str().unwrap()]);
    assert_eq!(fs::read_link(target.join("etc/system")).unwrap(), outside);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // Restoring again over it does not write through it either.
    fs::remove_file(target.join("etc/z.txt")).unwrap();
    t.ok(&["restore", "links", "--target", target.to_str().unwrap()]);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}
