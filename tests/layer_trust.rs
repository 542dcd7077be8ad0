//! A layer is trusted only once its blob digest, its diff id and its uncompressed size
//! all match the catalog: extraction stops at the catalog's size, and nothing from a
//! layer that fails reaches the file CAS or a space. Layers are written here as an
//! attacker would, tagged into a store through the library, then restored, exported
//! and imported with the real binary. The CAS is trusted as far as it was checked: a
//! corruption that keeps a file's metadata is repaired once a rehash found it. `check`
//! names what killed commands leave behind, and `check --repair` removes it.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use envoci::digest::Digest;
use envoci::layer::{Compression, LayerDigests};
use envoci::relocate::PLACEHOLDER;
use envoci::store::Store;

use common::envoci::{exit, Envoci};

/// A tar of `files` (name, content) and `links` (name, target bytes), written as an
/// attacker's tool would: headers filled in by hand.
fn raw_tar(files: &[(&str, &[u8])], links: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, *data).unwrap();
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::Symlink);
        h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_cksum();
        builder.append(&h, &b""[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The digests of an uncompressed layer.
fn plain(tar: &[u8]) -> LayerDigests {
    let digest = Digest::of(tar);
    let size = tar.len() as u64;
    LayerDigests {
        digest,
        size,
        diff_id: digest,
        uncompressed_size: size,
    }
}

/// `tar` gzipped, and its digests.
fn gzipped(tar: &[u8]) -> (LayerDigests, Vec<u8>) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar).unwrap();
    let blob = gz.finish().unwrap();
    let digests = LayerDigests {
        digest: Digest::of(&blob),
        size: blob.len() as u64,
        diff_id: Digest::of(tar),
        uncompressed_size: tar.len() as u64,
    };
    (digests, blob)
}

/// A zstd layer of one file holding `size` zero bytes (a few KB of blob), with the
/// digests a catalog claiming `claimed_size` uncompressed bytes would give.
fn zeros_bomb(size: u64, claimed_size: u64) -> (LayerDigests, Vec<u8>) {
    let mut out = zstd::Encoder::new(Vec::new(), 3).unwrap();
    {
        let mut builder = tar::Builder::new(&mut out);
        let mut h = tar::Header::new_gnu();
        h.set_path("bomb").unwrap();
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        builder
            .append(&h, std::io::Read::take(std::io::repeat(0), size))
            .unwrap();
        builder.finish().unwrap();
    }
    let blob = out.finish().unwrap();
    let digests = LayerDigests {
        digest: Digest::of(&blob),
        size: blob.len() as u64,
        diff_id: Digest::of(b"what the catalog claims"),
        uncompressed_size: claimed_size,
    };
    (digests, blob)
}

/// Tags a one-layer catalog in the store at `home` whose layer blob is `blob`, with
/// the catalog claiming `claimed` (diff id and uncompressed size may lie).
fn tag_layer(home: &Path, tag: &str, blob: &[u8], media: &'static str, claimed: LayerDigests) {
    assert_eq!(claimed.size, blob.len() as u64);
    let claim = common::catalog::Claim {
        digests: claimed,
        media,
        files: 1,
        relocations: vec![],
        placeholder: PLACEHOLDER,
    };
    common::catalog::tag_single_layer(home, tag, blob, claim);
}

/// Every regular file below `dir`, with its size.
fn files_below(dir: &Path) -> Vec<(String, u64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().display().to_string(), e.metadata().unwrap().len()))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_layer_larger_than_its_catalog_says_stops_early_and_adds_nothing() {
    let t = Envoci::new();
    // 256 MiB of zeros in a few KB of blob; the catalog says 4 bytes.
    let (lie, blob) = zeros_bomb(256 << 20, 4);
    assert!(blob.len() < 64 << 10);
    tag_layer(t.home(), "bomb", &blob, Compression::Zstd.media_type(), lie);
    let target = t.dir().join("space");
    let err = t.fail_as(
        exit::INTEGRITY,
        &["restore", "bomb", "--target", s(&target)],
    );
    assert!(err.contains("4 bytes uncompressed"), "{err}");
    assert!(!target.exists(), "no space");
    assert_eq!(
        files_below(&t.home().join("files-v1")),
        vec![],
        "nothing in the CAS"
    );
    assert_eq!(
        files_below(&t.home().join("ingest")),
        vec![],
        "scratch cleaned"
    );

    // The same through an archive into another store.
    let archive = t.dir().join("bomb.tar");
    t.ok(&["export", "bomb", "-o", s(&archive)]);
    let site = Envoci::new();
    let err = site.fail_as(exit::INTEGRITY, &["import", s(&archive)]);
    assert!(err.contains("4 bytes uncompressed"), "{err}");
    assert!(site.has_no_environments());
    assert_eq!(files_below(&site.home().join("files-v1")), vec![]);
    assert_eq!(
        files_below(&site.home().join("blobs")),
        vec![],
        "no blob committed"
    );
}

#[test]
fn a_huge_long_name_in_a_layer_is_refused_unread() {
    // A GNU long-name entry of 512 MiB (a few hundred KB of zstd), then one file: the
    // catalog states the layer truthfully, so only the long name attacks (memory).
    const NAME: u64 = 512 << 20;
    let mut tar = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar);
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        long.set_mode(0o644);
        long.set_size(NAME);
        long.set_cksum();
        builder
            .append(&long, std::io::Read::take(std::io::repeat(b'a'), NAME))
            .unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_path("short").unwrap();
        file.set_mode(0o644);
        file.set_size(1);
        file.set_cksum();
        builder.append(&file, &b"x"[..]).unwrap();
        builder.finish().unwrap();
    }
    let blob = zstd::encode_all(&tar[..], 3).unwrap();
    let digests = LayerDigests {
        digest: Digest::of(&blob),
        size: blob.len() as u64,
        diff_id: Digest::of(&tar),
        uncompressed_size: tar.len() as u64,
    };
    drop(tar);
    let t = Envoci::new();
    tag_layer(
        t.home(),
        "longname",
        &blob,
        Compression::Zstd.media_type(),
        digests,
    );
    let target = t.dir().join("env");
    let mut cmd = t.cmd(&["restore", "longname", "--target", s(&target)]);
    common::envoci::limit_address_space(&mut cmd, 400_000_000);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::INTEGRITY), "{err}");
    assert!(
        err.contains(&format!("{NAME}-byte long name")) && err.contains("refused unread"),
        "{err}"
    );
    assert!(
        files_below(&t.home().join("files-v1")).is_empty(),
        "nothing in the CAS"
    );
}

#[test]
fn a_layer_whose_diff_id_or_size_differs_from_the_catalog_is_refused() {
    let t = Envoci::new();
    let tar = raw_tar(&[("data.txt", b"payload")], &[]);
    let (real_gz, blob_gz) = gzipped(&tar);
    let real = plain(&tar);
    let cases = [
        (
            "diffid",
            blob_gz.clone(),
            Compression::Gzip,
            LayerDigests {
                diff_id: Digest::of(b"another tar"),
                ..real_gz
            },
            "diffId",
        ),
        (
            "smaller",
            blob_gz,
            Compression::Gzip,
            LayerDigests {
                uncompressed_size: real_gz.uncompressed_size + 512,
                ..real_gz
            },
            "bytes uncompressed",
        ),
        (
            "larger",
            tar.clone(),
            Compression::None,
            LayerDigests {
                uncompressed_size: real.uncompressed_size - 512,
                ..real
            },
            "bytes uncompressed",
        ),
    ];
    for (tag, blob, compression, claimed, why) in cases {
        tag_layer(t.home(), tag, &blob, compression.media_type(), claimed);
        let target = t.dir().join(tag);
        let err = t.fail_as(exit::INTEGRITY, &["restore", tag, "--target", s(&target)]);
        assert!(err.contains(why), "{tag}: {err}");
        assert!(!target.exists(), "{tag}: no space");
        assert_eq!(files_below(&t.home().join("files-v1")), vec![], "{tag}");
    }
}

#[test]
fn a_layer_blob_that_is_not_what_its_name_says_adds_nothing_on_import() {
    // Two uncompressed layers of the same size; the archive carries the second's bytes
    // under the first one's name.
    let blob_a = raw_tar(&[("data.bin", &[b'a'; 1 << 20])], &[]);
    let blob_b = raw_tar(&[("data.bin", &[b'b'; 1 << 20])], &[]);
    let real_a = plain(&blob_a);
    assert_eq!(blob_a.len(), blob_b.len());
    let t = Envoci::new();
    tag_layer(
        t.home(),
        "a",
        &blob_a,
        Compression::None.media_type(),
        real_a,
    );
    let layout = t.dir().join("layout");
    t.ok(&["export", "a", "-o", s(&layout)]);
    let victim = layout.join("blobs/sha256").join(real_a.digest.hex());
    fs::remove_file(&victim).unwrap();
    fs::File::create(&victim)
        .unwrap()
        .write_all(&blob_b)
        .unwrap();

    let site = Envoci::new();
    let err = site.fail_as(exit::INTEGRITY, &["import", s(&layout)]);
    assert!(err.contains(&real_a.digest.oci()), "{err}");
    assert!(site.has_no_environments());
    assert_eq!(
        files_below(&site.home().join("files-v1")),
        vec![],
        "nothing in the CAS"
    );
    assert_eq!(files_below(&site.home().join("blobs")), vec![]);
}

#[test]
fn a_non_utf8_symlink_target_is_restored_byte_exact() {
    use std::os::unix::ffi::OsStrExt;
    let t = Envoci::new();
    let target_bytes = b"lib\xff\xfename.so.1".to_vec();
    let blob = raw_tar(&[("data.txt", b"payload")], &[("link", &target_bytes)]);
    tag_layer(
        t.home(),
        "odd",
        &blob,
        Compression::None.media_type(),
        plain(&blob),
    );
    let space = t.dir().join("space");
    t.ok(&["restore", "odd", "--target", s(&space)]);
    let link = fs::read_link(space.join("link")).unwrap();
    assert_eq!(link.as_os_str().as_bytes(), &target_bytes[..]);
    t.ok(&["check", "--verify"]);
    let out = t.json(&["restore", "odd", "--target", s(&space)]);
    assert_eq!(out["written"], 0, "the link is found unchanged: {out}");
}

/// Overwrites `path` in place with as many bytes of `fill`, keeping size, mode and the
/// layer mtime: a corruption only a rehash finds.
fn corrupt_in_place(path: &Path, fill: u8) {
    let len = fs::metadata(path).unwrap().len() as usize;
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(&vec![fill; len]).unwrap();
    drop(f);
    let mtime = filetime::FileTime::from_unix_time(envoci::layer::LAYER_MTIME as i64, 0);
    filetime::set_file_mtime(path, mtime).unwrap();
}

#[test]
fn a_cas_file_corrupted_with_its_metadata_intact_is_found_and_repaired() {
    let t = Envoci::new();
    let payload = b"the real content of a file".as_slice();
    let blob = raw_tar(&[("data.txt", payload)], &[]);
    tag_layer(
        t.home(),
        "e",
        &blob,
        Compression::None.media_type(),
        plain(&blob),
    );
    let one = t.dir().join("one");
    let hard = ["--link", "hardlink"];
    t.ok(&[&["restore", "e", "--target", s(&one)][..], &hard].concat());
    // Written through the hard link: the CAS file is the same inode.
    corrupt_in_place(&one.join("data.txt"), b'X');
    t.ok(&["check"]); // metadata cannot tell

    // restore --verify rehashes what it links: a new space gets the real content.
    let two = t.dir().join("two");
    t.ok(&[
        &["restore", "e", "--target", s(&two), "--verify"][..],
        &hard,
    ]
    .concat());
    assert_eq!(fs::read(two.join("data.txt")).unwrap(), payload);

    // Corrupt again; check --verify finds it, and the next plain restore repairs the
    // CAS and the space, as it says.
    corrupt_in_place(&two.join("data.txt"), b'Y');
    let out = t.run(&["check", "--verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("changed in the file CAS") && report.contains("next restore repairs it"),
        "{report}"
    );
    t.ok(&[&["restore", "e", "--target", s(&two)][..], &hard].concat());
    assert_eq!(
        fs::read(two.join("data.txt")).unwrap(),
        payload,
        "space repaired"
    );
    let three = t.dir().join("three");
    t.ok(&["restore", "e", "--target", s(&three), "--link", "copy"]);
    assert_eq!(
        fs::read(three.join("data.txt")).unwrap(),
        payload,
        "never the bad copy"
    );
    // `one` still holds the old, damaged inode, though its record matches its
    // metadata: a plain restore sees the CAS file was replaced since, and relinks it.
    t.ok(&[&["restore", "e", "--target", s(&one)][..], &hard].concat());
    assert_eq!(fs::read(one.join("data.txt")).unwrap(), payload);
    t.ok(&["check", "--verify"]);
}

#[test]
fn check_lists_leftovers_with_sizes_and_repair_removes_them() {
    let t = Envoci::new();
    let blob = raw_tar(&[("data.txt", b"payload")], &[]);
    tag_layer(
        t.home(),
        "e",
        &blob,
        Compression::None.media_type(),
        plain(&blob),
    );
    let space = t.dir().join("space");
    t.ok(&["restore", "e", "--target", s(&space)]);
    // An unreferenced blob and CAS file, and the scratch of a dead process with the
    // temporary of the restore it was running.
    let store = Store::open(t.home()).unwrap();
    let scratch = store.scratch().unwrap();
    let (junk, _) = store.put_blob(&scratch, &[7u8; 1000]).unwrap();
    let (key, _) = store
        .cas_insert_reader(&scratch, &mut &[8u8; 300][..], false, false)
        .unwrap();
    drop(scratch);
    drop(store);
    let dead = t.home().join("ingest/999999-00000000deadbeef");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("tmp-1"), [0u8; 50]).unwrap();
    let temp = t.dir().join(".other.envoci-0123456789abcdef");
    fs::create_dir_all(temp.join("lib")).unwrap();
    fs::write(temp.join("lib/x"), [0u8; 20]).unwrap();
    fs::write(dead.join("owned-dir"), temp.to_str().unwrap()).unwrap();

    // The scratch holds its 50 bytes and the note naming the temporary.
    let scratch_bytes = 50 + temp.to_str().unwrap().len() as u64;
    let total = 1000 + 300 + 20 + scratch_bytes;
    let out = t.stdout(&["check"]);
    assert!(out.contains("all consistent"), "{out}");
    for needle in [
        format!(
            "blob {}: blob no tag and no space references, 1000 bytes",
            junk.oci()
        ),
        format!(
            "file {}: CAS file no layer and no space references, 300 bytes",
            key.digest.hex()
        ),
        format!(
            "scratch {}: scratch of a process that is gone, {scratch_bytes} bytes",
            dead.display()
        ),
        format!(
            "temp {}: temporary directory of a killed restore, 20 bytes",
            temp.display()
        ),
        format!("4 left over ({total} bytes"),
    ] {
        assert!(out.contains(&needle), "`{needle}` in:\n{out}");
    }
    let out = t.stdout(&["check", "--repair"]);
    assert!(out.contains(&format!("4 removed ({total} bytes)")), "{out}");
    assert!(!dead.exists() && !temp.exists());
    let out = t.stdout(&["check", "--verify"]);
    assert!(!out.contains("left over"), "{out}");
    t.ok(&["restore", "e", "--target", s(&space), "--verify"]);
}

/// A pseudo-random number below `n` (no need for a real RNG).
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n
}

#[test]
fn restores_killed_at_random_points_leave_only_what_check_names() {
    use std::os::unix::process::ExitStatusExt;
    let t = Envoci::new();
    let names: Vec<String> = (0..4000)
        .map(|i| format!("lib/d{:02}/f{i}.txt", i % 40))
        .collect();
    let contents: Vec<Vec<u8>> = (0..4000)
        .map(|i| format!("{i}\n").repeat(200).into_bytes())
        .collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&contents)
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let blob = raw_tar(&files, &[]);
    tag_layer(
        t.home(),
        "big",
        &blob,
        Compression::None.media_type(),
        plain(&blob),
    );
    let target = t.dir().join("space");
    let args = ["restore", "big", "--target", s(&target), "--link", "copy"];

    let mut kills = 0;
    for _ in 0..80 {
        if kills >= 10 {
            break;
        }
        if target.exists() {
            // Make the next restore an update with work to do.
            fs::remove_dir_all(target.join(format!("lib/d{:02}", random_below(40)))).unwrap();
        }
        let mut child = t
            .cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + random_below(300)));
        let _ = child.kill();
        if child.wait().unwrap().signal() != Some(libc::SIGKILL) {
            continue;
        }
        kills += 1;
        let out = t.run(&["--json", "check"]);
        let report: common::envoci::Json = serde_json::from_slice(&out.stdout).unwrap();
        for p in report["problems"].as_array().unwrap() {
            assert_eq!(p["kind"], "space", "only an interrupted update: {report}");
        }
        let listed: Vec<&str> = report["leftovers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["subject"].as_str().unwrap())
            .collect();
        for entry in fs::read_dir(t.dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".space.envoci-") {
                let path = entry.path().display().to_string();
                assert!(listed.contains(&path.as_str()), "{path} is named: {report}");
            }
        }
        for entry in fs::read_dir(t.home().join("ingest")).unwrap().flatten() {
            let path = entry.path().display().to_string();
            assert!(
                entry.file_name() == "partial" || listed.contains(&path.as_str()),
                "{path} is named: {report}"
            );
        }
    }
    assert!(kills >= 10, "only {kills} restores could be killed mid-way");
    t.ok(&args);
    t.ok(&["check", "--repair"]);
    let out = t.stdout(&["check", "--verify"]);
    assert!(
        out.contains("all consistent") && !out.contains("left over"),
        "{out}"
    );
    for (name, content) in names.iter().zip(&contents).step_by(97) {
        assert_eq!(&fs::read(target.join(name)).unwrap(), content);
    }
}
