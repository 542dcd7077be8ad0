//! One blob-store conformance suite, run against every place blobs live: the local
//! store, an OCI layout directory, an OCI archive (a real tar) and a repository of a
//! real CNCF distribution registry. Each backend declares what it cannot do; the suite
//! asserts exactly that refusal for it and the full behaviour for the others, so no
//! check is skipped in silence.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::TestRegistry;
use envoci::digest::Digest;
use envoci::store::Store;
use envoci::transfer::blobs::{Appended, BlobStore, Operation, RegistryBlobs, Written};
use envoci::transfer::layout::{Form, Layout};
use envoci::transfer::{Error, ErrorKind, RegistryOptions, RemoteRef};

/// The most a read takes in the suite: far more than its blobs.
const LIMIT: u64 = 1 << 20;

/// A blob of the suite: its digest and content. Contents are distinct and long enough
/// to be found in an archive (and for a ranged read to start inside them).
struct Blob {
    digest: Digest,
    bytes: Vec<u8>,
}

fn blob(name: &str) -> Blob {
    let bytes: Vec<u8> = format!("envoci conformance blob `{name}`\n")
        .repeat(40)
        .into_bytes();
    Blob {
        digest: Digest::of(&bytes),
        bytes,
    }
}

/// Present before the suite runs (written by the test, or in the archive): read as is.
fn present() -> Blob {
    blob("present")
}

/// Present before the suite runs, then damaged behind the store's back.
fn damaged() -> Blob {
    blob("damaged")
}

/// What a backend can do, as the table in `envoci::transfer::blobs` says; the suite
/// asserts `Unsupported` for the rest.
struct Expect {
    write: bool,
    resume: bool,
}

/// A backend under test: the store, how to damage one of its blobs behind its back,
/// and (where it has one) a listing of its committed blob files, to see that a refused
/// write left nothing there.
struct Backend<'a, S> {
    store: &'a S,
    expect: Expect,
    damage: &'a dyn Fn(&Digest),
    committed: &'a dyn Fn() -> BTreeSet<PathBuf>,
}

/// The whole suite, in the order a reader would check a store.
async fn suite<S: BlobStore>(backend: Backend<'_, S>) {
    absent_blobs_are_not_found(backend.store).await;
    present_blobs_read_back_exactly(backend.store).await;
    a_damaged_blob_is_detected_by_read(&backend).await;
    write_makes_a_blob_visible_once(&backend).await;
    a_write_with_the_wrong_digest_is_refused_and_leaves_nothing(&backend).await;
    an_interrupted_write_is_continued(&backend).await;
}

fn assert_unsupported(e: Error, operation: Operation) {
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    match e {
        Error::Unsupported { operation: op, .. } => assert_eq!(op, operation),
        other => panic!("expected Unsupported {operation:?}, got {other}"),
    }
}

async fn absent_blobs_are_not_found<S: BlobStore>(store: &S) {
    let absent = blob("absent");
    assert!(!store.has(&absent.digest).await.unwrap());
    for result in [
        store.size(&absent.digest).await.map(|_| ()),
        store.read(&absent.digest, LIMIT).await.map(|_| ()),
        store.read_from(&absent.digest, 3, LIMIT).await.map(|_| ()),
    ] {
        let e = result.expect_err("an absent blob cannot be read");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
}

async fn present_blobs_read_back_exactly<S: BlobStore>(store: &S) {
    let b = present();
    assert!(store.has(&b.digest).await.unwrap());
    assert_eq!(store.size(&b.digest).await.unwrap(), b.bytes.len() as u64);
    assert_eq!(store.read(&b.digest, LIMIT).await.unwrap(), b.bytes);
    // A ranged read gives exactly the tail: how an interrupted read continues.
    for offset in [0, 1, 100, b.bytes.len() - 1] {
        let tail = store
            .read_from(&b.digest, offset as u64, LIMIT)
            .await
            .unwrap();
        assert_eq!(tail, b.bytes[offset..], "tail from {offset}");
    }
    let small = b.bytes.len() as u64 - 1;
    let e = store.read(&b.digest, small).await.unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if limit == small),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Refused);
}

async fn a_damaged_blob_is_detected_by_read<S: BlobStore>(backend: &Backend<'_, S>) {
    let b = damaged();
    assert_eq!(backend.store.read(&b.digest, LIMIT).await.unwrap(), b.bytes);
    (backend.damage)(&b.digest);
    let e = backend.store.read(&b.digest, LIMIT).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(
        envoci::ErrorKind::from(e.kind()),
        envoci::ErrorKind::Integrity,
        "the command line reports it as an integrity failure (exit code 6)"
    );
}

async fn write_makes_a_blob_visible_once<S: BlobStore>(backend: &Backend<'_, S>) {
    let store = backend.store;
    let b = blob("written");
    assert!(!store.has(&b.digest).await.unwrap());
    let outcome = store.write(&b.digest, &b.bytes).await;
    if !backend.expect.write {
        assert_unsupported(outcome.unwrap_err(), Operation::Write);
        assert!(!store.has(&b.digest).await.unwrap());
        return;
    }
    assert_eq!(outcome.unwrap(), Written::Stored);
    assert!(store.has(&b.digest).await.unwrap());
    assert_eq!(store.size(&b.digest).await.unwrap(), b.bytes.len() as u64);
    assert_eq!(store.read(&b.digest, LIMIT).await.unwrap(), b.bytes);
    assert_eq!(
        store.write(&b.digest, &b.bytes).await.unwrap(),
        Written::AlreadyExists
    );
    assert_eq!(store.read(&b.digest, LIMIT).await.unwrap(), b.bytes);
}

async fn a_write_with_the_wrong_digest_is_refused_and_leaves_nothing<S: BlobStore>(
    backend: &Backend<'_, S>,
) {
    let store = backend.store;
    let claimed = blob("claimed");
    let other = blob("other content");
    let before = (backend.committed)();
    let outcome = store.write(&claimed.digest, &other.bytes).await;
    if !backend.expect.write {
        assert_unsupported(outcome.unwrap_err(), Operation::Write);
    } else {
        let e = outcome.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    }
    assert!(!store.has(&claimed.digest).await.unwrap());
    assert!(!store.has(&other.digest).await.unwrap());
    assert_eq!((backend.committed)(), before, "a refused write left files");
}

async fn an_interrupted_write_is_continued<S: BlobStore>(backend: &Backend<'_, S>) {
    let store = backend.store;
    let b = blob("resumed");
    let size = b.bytes.len() as u64;
    let half = b.bytes.len() / 2;
    if !backend.expect.resume {
        assert_unsupported(store.kept(&b.digest).await.unwrap_err(), Operation::Resume);
        let e = store.append(&b.digest, size, &b.bytes).await.unwrap_err();
        assert_unsupported(e, Operation::Resume);
        assert!(!store.has(&b.digest).await.unwrap());
        return;
    }
    assert_eq!(store.kept(&b.digest).await.unwrap(), 0);
    let first = store.append(&b.digest, size, &b.bytes[..half]).await;
    assert_eq!(first.unwrap(), Appended::Partial { kept: half as u64 });
    assert!(
        !store.has(&b.digest).await.unwrap(),
        "a partial blob is not visible"
    );
    // Where a new attempt (another process, after a crash) continues from.
    let kept = store.kept(&b.digest).await.unwrap();
    assert_eq!(kept, half as u64);
    let rest = store.append(&b.digest, size, &b.bytes[half..]).await;
    assert_eq!(rest.unwrap(), Appended::Committed(Written::Stored));
    assert_eq!(store.read(&b.digest, LIMIT).await.unwrap(), b.bytes);
    assert_eq!(store.kept(&b.digest).await.unwrap(), 0);

    // A continuation that does not make the blob is refused, and what was kept goes.
    let c = blob("resumed wrongly");
    let size = c.bytes.len() as u64;
    store.append(&c.digest, size, &c.bytes[..10]).await.unwrap();
    let mut wrong = c.bytes[10..].to_vec();
    wrong[0] ^= 1;
    let e = store.append(&c.digest, size, &wrong).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(!store.has(&c.digest).await.unwrap());
    assert_eq!(store.kept(&c.digest).await.unwrap(), 0);
    // So is one that runs past the size.
    store.append(&c.digest, size, &c.bytes[..10]).await.unwrap();
    let e = store.append(&c.digest, size, &c.bytes).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(store.kept(&c.digest).await.unwrap(), 0);
    // And a clean start afterwards succeeds.
    let whole = store.append(&c.digest, size, &c.bytes).await.unwrap();
    assert_eq!(whole, Appended::Committed(Written::Stored));
}

/// Every file under `dir` (relative names), when it exists.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Flips one byte of `file` in place (same length), where `needle` starts.
fn flip_byte_of(file: &Path, needle: &[u8]) {
    let mut bytes = fs::read(file).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the content is in the file");
    bytes[at + needle.len() / 2] ^= 0x20;
    let mode = fs::metadata(file).unwrap().permissions().mode();
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(file, bytes).unwrap();
    fs::set_permissions(file, fs::Permissions::from_mode(mode)).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    envoci::runtime().unwrap()
}

/// An empty OCI layout directory, as the image-spec defines one.
fn empty_layout(dir: &Path) -> Layout {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    )
    .unwrap();
    Layout::open(dir, Form::Dir).unwrap()
}

#[test]
fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    runtime().block_on(async {
        for b in [present(), damaged()] {
            assert_eq!(
                store.write(&b.digest, &b.bytes).await.unwrap(),
                Written::Stored
            );
        }
        let root = store.root().to_path_buf();
        suite(Backend {
            store: &store,
            expect: Expect {
                write: true,
                resume: true,
            },
            damage: &|d| flip_byte_of(&blob_file(&store, d), &damaged().bytes),
            // The whole store but the lock files (lock files of partial blobs stay).
            committed: &|| {
                files_under(&root)
                    .into_iter()
                    .filter(|p| !p.starts_with("locks"))
                    .collect()
            },
        })
        .await;
        // The refused write reached neither the layout's blobs nor the scratch area.
        let claimed = blob("claimed").digest;
        assert!(!root.join("blobs/sha256").join(claimed.hex()).exists());
        assert_eq!(files_under(&root.join("ingest")), BTreeSet::new());

        // A download interrupted by pull leaves its bytes in `ingest/partial/<hex>`:
        // the store's append continues exactly there.
        let b = blob("left by pull");
        // The documented place of an interrupted download (README, the local store).
        let partial = store.root().join("ingest/partial").join(b.digest.hex());
        fs::create_dir_all(partial.parent().unwrap()).unwrap();
        fs::write(&partial, &b.bytes[..123]).unwrap();
        assert_eq!(store.kept(&b.digest).await.unwrap(), 123);
        assert!(!store.has(&b.digest).await.unwrap());
        let size = b.bytes.len() as u64;
        let done = store
            .append(&b.digest, size, &b.bytes[123..])
            .await
            .unwrap();
        assert_eq!(done, Appended::Committed(Written::Stored));
        assert_eq!(fs::read(blob_file(&store, &b.digest)).unwrap(), b.bytes);
        assert!(!partial.exists());
        // `check` agrees with read about what is damaged, and nothing else is.
        let (count, bad) = store.verify_blobs().unwrap();
        assert_eq!(count, 6);
        assert_eq!(bad, vec![damaged().digest.hex()]);
    });
}

#[test]
fn layout_dir_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("layout");
    let layout = empty_layout(&root);
    runtime().block_on(async {
        for b in [present(), damaged()] {
            assert_eq!(
                layout.write(&b.digest, &b.bytes).await.unwrap(),
                Written::Stored
            );
        }
        suite(Backend {
            store: &layout,
            expect: Expect {
                write: true,
                resume: false,
            },
            damage: &|d| flip_byte_of(&root.join("blobs/sha256").join(d.hex()), &damaged().bytes),
            committed: &|| files_under(&root),
        })
        .await;
    });
    // What it wrote is a layout other tools read: blobs named by their digest, and no
    // temporary left beside them.
    for name in files_under(&root.join("blobs/sha256")) {
        let hex = name.to_str().unwrap();
        assert!(Digest::parse(hex).is_ok(), "stray file {hex}");
    }
}

#[test]
fn archive_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout");
    let layout = empty_layout(&src);
    let archive = dir.path().join("layout.tar");
    runtime().block_on(async {
        for b in [present(), damaged()] {
            layout.write(&b.digest, &b.bytes).await.unwrap();
        }
    });
    // A real tar, as any tool would make it.
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(status.success());
    let layout = Layout::open(&archive, Form::Archive).unwrap();
    let bytes_before = fs::read(&archive).unwrap();
    runtime().block_on(async {
        suite(Backend {
            store: &layout,
            expect: Expect {
                write: false,
                resume: false,
            },
            damage: &|_| flip_byte_of(&archive, &damaged().bytes),
            committed: &|| files_under(dir.path()),
        })
        .await;
    });
    // The suite's writes were all refused: the archive is as tar made it but for the
    // one byte damaged on purpose.
    let bytes_after = fs::read(&archive).unwrap();
    assert_eq!(bytes_after.len(), bytes_before.len());
    let differing = bytes_after
        .iter()
        .zip(&bytes_before)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 1);
}

#[test]
fn registry_conforms() {
    let registry = TestRegistry::start();
    let remote = RemoteRef::parse(&registry.reference("conformance/blobs:any")).unwrap();
    runtime().block_on(async {
        let repo = RegistryBlobs::connect(&remote, &RegistryOptions::default())
            .await
            .unwrap();
        for b in [present(), damaged()] {
            assert_eq!(
                repo.write(&b.digest, &b.bytes).await.unwrap(),
                Written::Stored
            );
        }
        suite(Backend {
            store: &repo,
            expect: Expect {
                write: true,
                resume: false,
            },
            damage: &|d| flip_byte_of(&registry.blob_data(&d.hex()), &damaged().bytes),
            committed: &|| files_under(&registry.blob_root()),
        })
        .await;
    });
}

/// A blob's file in the store's OCI layout (`blobs/sha256/<hex>`, a documented format).
fn blob_file(store: &Store, digest: &Digest) -> std::path::PathBuf {
    store.root().join("blobs/sha256").join(digest.hex())
}
