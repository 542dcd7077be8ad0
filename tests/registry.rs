//! Push and pull through a real CNCF distribution registry on loopback.

mod common;

use std::fs;

use common::envoci::{exit, Envoci};
use common::oci::{container_image_layout, skopeo};
use common::registry::TestRegistry;
use common::{install_env, run_stdout, ENV_ONE, ENV_TWO};

#[test]
fn push_then_pull_into_a_fresh_store_restores_a_working_environment() {
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, ENV_ONE);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "one"]);
    let remote = registry.reference("envs/demo:one");
    let pushed = builder.json(&["push", "one", &remote]);
    assert_eq!(pushed["blobs_skipped"].as_u64(), Some(0), "{pushed}");
    assert_eq!(
        pushed["blobs_transferred"].as_u64(),
        Some(ENV_ONE.len() as u64 + 2),
        "layers + env layer + catalog: {pushed}"
    );

    // Another machine: an empty store.
    let user = Envoci::new();
    let target = user.dir().join("restored");
    let out = user.json(&["restore", &remote, "--target", target.to_str().unwrap()]);
    assert_eq!(out["created"], true);
    assert_eq!(
        run_stdout(&target.join("bin/whereami")),
        target.to_str().unwrap()
    );
    assert_eq!(
        run_stdout(&target.join("bin/hello.sh")),
        target.to_str().unwrap()
    );
    let listed = user.json(&["ls"]);
    assert_eq!(
        listed[0]["tag"],
        remote.as_str(),
        "the pulled artifact is named by its reference"
    );
    assert_eq!(
        listed[0]["digest"], pushed["digest"],
        "digests are preserved"
    );
    user.ok(&["check", "--verify"]);
}

#[test]
fn only_missing_blobs_cross_the_wire_in_either_direction() {
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    for (tag, pkgs) in [("one", ENV_ONE), ("two", ENV_TWO)] {
        let prefix = builder.dir().join(tag);
        install_env(&prefix, pkgs);
        builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", tag]);
    }
    let one = registry.reference("envs/demo:one");
    let two = registry.reference("envs/demo:two");
    builder.json(&["push", "one", &one]);
    let again = builder.json(&["push", "one", &one]);
    assert_eq!(
        again["blobs_transferred"].as_u64(),
        Some(0),
        "a re-push uploads nothing: {again}"
    );

    // Layers both environments share are not uploaded again.
    let catalog_one = builder.catalog("one");
    let catalog_two = builder.catalog("two");
    let layers = |c: &serde_json::Value| -> Vec<(String, u64)> {
        c["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["digest"].as_str().unwrap().to_string(), 0))
            .collect()
    };
    let in_one: std::collections::HashSet<String> =
        layers(&catalog_one).into_iter().map(|l| l.0).collect();
    let new_layers: Vec<String> = layers(&catalog_two)
        .into_iter()
        .map(|l| l.0)
        .filter(|d| !in_one.contains(d))
        .collect();
    assert!(
        new_layers.len() >= 3,
        "app-two, pad-4 and the env layer differ: {new_layers:?}"
    );
    let pushed_two = builder.json(&["push", "two", &two]);
    assert_eq!(
        pushed_two["blobs_transferred"].as_u64(),
        Some(new_layers.len() as u64 + 1),
        "new layers + catalog: {pushed_two}"
    );

    // A machine that has `one` pulls `two`: exactly the missing layers' bytes.
    let user = Envoci::new();
    user.json(&["pull", &one]);
    let pulled = user.json(&["pull", &two]);
    let inspect = builder.json(&["inspect", "two"]);
    let sizes: std::collections::HashMap<String, u64> = inspect["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let config_size = inspect["manifest"]["config"]["size"].as_u64().unwrap();
    let expected: u64 = new_layers.iter().map(|d| sizes[d]).sum::<u64>() + config_size;
    assert_eq!(
        pulled["bytes_transferred"].as_u64(),
        Some(expected),
        "{pulled}"
    );
    assert_eq!(
        pulled["blobs_transferred"].as_u64(),
        Some(new_layers.len() as u64 + 1),
        "{pulled}"
    );
    let nothing = user.json(&["pull", &two]);
    assert_eq!(nothing["blobs_transferred"].as_u64(), Some(0), "{nothing}");
    let target = user.dir().join("two");
    user.ok(&["restore", &two, "--target", target.to_str().unwrap()]);
    assert!(fs::read_to_string(target.join("share/app-two/README"))
        .unwrap()
        .contains("app two"));
}

#[test]
fn unknown_references_and_malformed_ones_fail_clearly() {
    let registry = TestRegistry::start();
    let t = Envoci::new();
    let missing = registry.reference("envs/nothing:here");
    let err = t.fail_as(exit::NOT_FOUND, &["pull", &missing]);
    assert!(
        err.contains("not found") && err.contains("envs/nothing:here"),
        "{err}"
    );
    let err = t.fail_as(exit::USAGE, &["pull", "no-registry-host"]);
    assert!(err.contains("not a registry reference"), "{err}");
    let err = t.fail_as(
        exit::NOT_FOUND,
        &["push", "not-in-store", &registry.reference("envs/x:y")],
    );
    assert!(err.contains("`not-in-store` is not in the store"), "{err}");
}

/// A store with a snapshot holding one large incompressible file, pushed to `registry`;
/// returns the builder, the remote reference, and the large layer's digest and size.
fn pushed_big_env(registry: &TestRegistry) -> (Envoci, String, String, u64) {
    let builder = Envoci::new();
    let dir = builder.dir().join("big-env");
    fs::create_dir_all(dir.join("lib")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..6 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(dir.join("lib/big.bin"), noise).unwrap();
    builder.ok(&["snapshot", dir.to_str().unwrap(), "--tag", "big"]);
    let remote = registry.reference("envs/big:v1");
    builder.ok(&["push", "big", &remote]);
    let layer = builder.json(&["inspect", "big"])["manifest"]["layers"][0].clone();
    (
        builder,
        remote,
        layer["digest"].as_str().unwrap().to_string(),
        layer["size"].as_u64().unwrap(),
    )
}

#[test]
fn a_registry_that_stalls_times_out_and_the_next_pull_resumes() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let stall = (size / 3) as usize;
    let proxy = common::proxy::Proxy::start(
        &registry.addr,
        common::proxy::Fault::StallAfter(stall),
        &digest,
    );
    let via_proxy = proxy.via(&remote);
    let user = Envoci::new();
    let started = std::time::Instant::now();
    let err = user.fail_as(
        exit::NETWORK,
        &[
            "pull",
            &via_proxy,
            "--jobs",
            "1",
            "--retries",
            "0",
            "--timeout",
            "2",
        ],
    );
    assert!(proxy.fired(), "the stall happened");
    assert!(err.contains("timed out") && err.contains("2 s"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "a silent registry does not hang the pull"
    );
    assert!(
        err.contains("interrupted") && err.contains("kept to resume"),
        "{err}"
    );
    assert!(user.has_no_environments(), "nothing committed");
    let resumed = user.json(&["pull", &remote]);
    assert_eq!(resumed["blobs_resumed"].as_u64(), Some(1), "{resumed}");
    assert!(
        resumed["bytes_transferred"].as_u64().unwrap() < size,
        "{resumed}"
    );
}

#[test]
fn a_registry_that_trickles_fails_as_too_slow_and_the_next_pull_resumes() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let proxy = common::proxy::Proxy::start(
        &registry.addr,
        common::proxy::Fault::TrickleAfter((size / 4) as usize),
        &digest,
    );
    let via_proxy = proxy.via(&remote);
    let user = Envoci::new();
    // One byte every 50 ms is never silent for a second, but far below 4 MiB/s: the
    // budget is 1 s plus the blob's time at that speed (about 1.5 s).
    let err = user.fail_as(
        exit::NETWORK,
        &[
            "pull",
            &via_proxy,
            "--jobs",
            "1",
            "--retries",
            "0",
            "--timeout",
            "1",
            "--min-speed",
            "4096",
        ],
    );
    assert!(proxy.fired(), "the trickle happened");
    assert!(
        err.contains("below 4096 KiB/s") && err.contains("kept to resume"),
        "{err}"
    );
    assert!(user.has_no_environments(), "nothing committed");
    let resumed = user.json(&["pull", &remote]);
    assert_eq!(resumed["blobs_resumed"].as_u64(), Some(1), "{resumed}");
}

#[test]
fn a_full_disk_during_a_pull_keeps_the_partial_blob_and_the_next_pull_resumes() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let user = Envoci::new();
    let room = size / 2;
    let mut cmd = user.cmd(&["pull", &remote, "--jobs", "1"]);
    common::envoci::limit_file_size(&mut cmd, room);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write"),
        "the error says what failed: {err}"
    );
    assert!(user.has_no_environments(), "nothing committed");
    let partial = user
        .home()
        .join("ingest/partial")
        .join(digest.trim_start_matches("sha256:"));
    assert_eq!(
        fs::metadata(&partial).unwrap().len(),
        room,
        "what arrived is kept"
    );

    let resumed = user.json(&["pull", &remote]);
    assert_eq!(resumed["blobs_resumed"].as_u64(), Some(1), "{resumed}");
    let moved = resumed["bytes_transferred"].as_u64().unwrap();
    assert!(moved < size - room + 4096, "only the rest: {resumed}");
    user.ok(&["check", "--verify"]);
}

#[test]
fn a_download_cut_half_way_is_resumed_not_restarted() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let cut = (size / 2) as usize;
    let proxy =
        common::proxy::Proxy::start(&registry.addr, common::proxy::Fault::CutAfter(cut), &digest);
    let via_proxy = proxy.via(&remote);
    let user = Envoci::new();
    let err = user.fail_as(
        exit::NETWORK,
        &["pull", &via_proxy, "--jobs", "1", "--retries", "0"],
    );
    assert!(proxy.fired(), "the cut happened");
    assert!(err.contains("broke off"), "{err}");
    assert!(
        err.contains(digest.trim_start_matches("sha256:").get(..12).unwrap())
            || err.contains(&digest),
        "{err}"
    );
    assert!(user.has_no_environments(), "nothing committed");

    let resumed = user.json(&["pull", &remote]);
    assert_eq!(resumed["blobs_resumed"].as_u64(), Some(1), "{resumed}");
    let layer_bytes = resumed["bytes_transferred"].as_u64().unwrap();
    let config_bytes = 2048; // the catalog is small
    assert!(
        layer_bytes <= size - cut as u64 + config_bytes && layer_bytes >= size - cut as u64,
        "downloaded about the rest ({layer_bytes} of {size}, cut at {cut}): {resumed}"
    );
    let target = user.dir().join("big");
    user.ok(&["restore", &remote, "--target", target.to_str().unwrap()]);
    user.ok(&["check", "--verify"]);
}

#[test]
fn a_cut_connection_is_retried_and_continued_within_the_same_pull() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let proxy = common::proxy::Proxy::start(
        &registry.addr,
        common::proxy::Fault::CutAfter((size / 2) as usize),
        &digest,
    );
    let via_proxy = proxy.via(&remote);
    let user = Envoci::new();
    let pulled = user.json(&["pull", &via_proxy]);
    assert!(proxy.fired());
    assert_eq!(pulled["blobs_resumed"].as_u64(), Some(1), "{pulled}");
    let config = pulled["bytes_transferred"].as_u64().unwrap() - size;
    assert!(
        config < 4096,
        "every byte of the layer crossed the wire once: {pulled}"
    );
    user.ok(&["check", "--verify"]);
}

#[test]
fn a_flipped_byte_fails_the_digest_check_and_commits_nothing() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let proxy = common::proxy::Proxy::start(
        &registry.addr,
        common::proxy::Fault::FlipAt((size / 3) as usize),
        &digest,
    );
    let via_proxy = proxy.via(&remote);
    let user = Envoci::new();
    let err = user.fail_as(exit::INTEGRITY, &["pull", &via_proxy]);
    assert!(proxy.fired());
    assert!(
        err.contains("does not match its digest") && err.contains(&digest),
        "{err}"
    );
    assert!(user.has_no_environments(), "nothing committed");
    let blob = user
        .home()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(!blob.exists());
    let clean = user.json(&["pull", &remote]);
    assert_eq!(
        clean["blobs_resumed"].as_u64(),
        Some(0),
        "a corrupt partial is not resumed: {clean}"
    );
    user.ok(&["check", "--verify"]);
}

#[test]
fn a_corrupt_layer_met_while_unpacking_during_a_restore_commits_nothing_and_creates_no_space() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, size) = pushed_big_env(&registry);
    let proxy = common::proxy::Proxy::start(
        &registry.addr,
        common::proxy::Fault::FlipAt((size / 2) as usize),
        &digest,
    );
    let user = Envoci::new();
    let target = user.dir().join("env");
    let target_str = target.to_str().unwrap();
    let err = user.fail_as(
        exit::INTEGRITY,
        &["restore", &proxy.via(&remote), "--target", target_str],
    );
    assert!(proxy.fired());
    assert!(err.contains(&digest), "{err}");
    assert!(!target.exists(), "no space from a corrupt layer");
    assert!(user.has_no_environments(), "nothing tagged");
    // The unpacking that ran alongside the download staged what the corrupt bytes
    // gave: none of it may reach the CAS, not even under a staging name.
    assert_eq!(user.cas_dir_files(), Vec::<std::path::PathBuf>::new());
    user.ok(&["restore", &remote, "--target", target_str]);
    assert_eq!(
        fs::metadata(target.join("lib/big.bin")).unwrap().len(),
        6 * 1024 * 1024
    );
    user.ok(&["check", "--verify"]);
}

#[test]
fn a_registry_sending_more_bytes_than_the_blob_has_is_refused_and_nothing_is_kept() {
    let registry = TestRegistry::start();
    let (_builder, remote, digest, _size) = pushed_big_env(&registry);
    let proxy =
        common::proxy::Proxy::start(&registry.addr, common::proxy::Fault::Pad(4096), &digest);
    let via_proxy = proxy.via(&remote);
    let user = Envoci::new();
    let err = user.fail_as(exit::INTEGRITY, &["pull", &via_proxy]);
    assert!(proxy.fired());
    assert!(
        err.contains("more bytes than the manifest says") && err.contains(&digest),
        "{err}"
    );
    assert!(user.has_no_environments(), "nothing committed");
    // Other downloads cut short by the failure may keep their partials to resume;
    // the one with the wrong bytes is gone.
    let check = user.json(&["check"]);
    let kept = check["leftovers"].as_array().unwrap();
    assert!(
        kept.iter().all(|l| l["subject"] != digest.as_str()),
        "no partial of the padded blob {digest}: {check}"
    );
    let clean = user.json(&["pull", &remote]);
    assert_eq!(clean["blobs_resumed"].as_u64(), Some(0), "{clean}");
}

#[test]
fn two_platforms_pushed_to_one_tag_make_an_index_and_pull_picks_by_platform() {
    use envoci::artifact;
    use envoci::layer::{Compression, LayerDigests};

    let registry = TestRegistry::start();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-text", "links", "shared-dep"]);
    let linux = builder.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    // A linux-aarch64 twin: the same layers under a catalog for another platform.
    let arm_digest = {
        let store = envoci::store::Store::open(builder.home()).unwrap();
        let scratch = store.scratch().unwrap();
        let artifact = artifact::load(&store, "x").unwrap();
        let mut twin = artifact.catalog.clone();
        twin.platform = "linux-aarch64".into();
        let layers: Vec<(LayerDigests, &'static str)> = twin
            .layers
            .iter()
            .zip(artifact.manifest.layers())
            .map(|(l, d)| {
                (
                    LayerDigests {
                        digest: l.digest,
                        size: d.size(),
                        diff_id: l.diff_id,
                        uncompressed_size: l.size,
                    },
                    Compression::Zstd.media_type(),
                )
            })
            .collect();
        envoci::ingest::commit_catalog(&store, &scratch, &twin, &layers, "x-arm")
            .unwrap()
            .0
            .oci()
    };
    let remote = registry.reference("envs/multi:latest");
    builder.ok(&["push", "x", &remote]);
    let second = builder.json(&["push", "x-arm", &remote]);
    assert_eq!(
        second["blobs_transferred"].as_u64(),
        Some(1),
        "only the twin's catalog is new: {second}"
    );

    let user = Envoci::new();
    let host = user.json(&["pull", &remote]);
    assert_eq!(
        host["digest"], linux["digest"],
        "the index resolves to this machine's platform"
    );
    let arm = user.json(&["pull", &remote, "--platform", "linux-aarch64"]);
    assert_eq!(arm["digest"].as_str(), Some(arm_digest.as_str()));
    assert_eq!(
        arm["blobs_transferred"].as_u64(),
        Some(1),
        "layers shared with the first pull: {arm}"
    );
    let err = user.fail(&["pull", &remote, "--platform", "osx-arm64"]);
    assert!(
        err.contains("no osx-arm64 environment")
            && err.contains("linux-64")
            && err.contains("linux-aarch64"),
        "{err}"
    );
    // Pushing linux-64 again keeps the other platform in the index.
    builder.ok(&["push", "x", &remote]);
    let again = Envoci::new().json(&["pull", &remote, "--platform", "linux-aarch64"]);
    assert_eq!(again["digest"].as_str(), Some(arm_digest.as_str()));

    // The whole index copied to another registry: every platform, the same index.
    let mirror = TestRegistry::start();
    let copy = mirror.reference("mirror/multi:latest");
    let copied = Envoci::new().json(&["copy", "--all-platforms", &remote, &copy]);
    assert_eq!(copied.as_array().map(Vec::len), Some(2), "{copied}");
    let raw = |reference: &str| {
        let out = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{reference}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        raw(&copy),
        raw(&remote),
        "the index is copied byte for byte"
    );
    let arm = Envoci::new().json(&["pull", &copy, "--platform", "linux-aarch64"]);
    assert_eq!(arm["digest"].as_str(), Some(arm_digest.as_str()));

    // And into a layout directory: one index under the tag, readable by skopeo.
    let site = Envoci::new();
    let usb = site.dir().join("usb");
    let layout = format!("oci:{}:multi", usb.display());
    site.ok(&["copy", "--all-platforms", &remote, &layout]);
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &layout])
        .output()
        .unwrap();
    assert_eq!(out.stdout, raw(&remote), "the same index in the layout");
    let other = Envoci::new();
    let arm = other.json(&["pull", &layout, "--platform", "linux-aarch64"]);
    assert_eq!(arm["digest"].as_str(), Some(arm_digest.as_str()));
    let host = other.json(&["pull", &layout]);
    assert_eq!(host["digest"], linux["digest"]);
}

#[test]
fn an_authenticated_tls_registry_takes_passwords_logins_and_says_what_is_wrong() {
    let registry = TestRegistry::start_secure("robot", "s3cret");
    let ca = registry.ca_file.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-text", "links"]);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = registry.reference("envs/private:x");
    let docker_config = builder.dir().join("docker");

    // Passwords from the environment.
    let push = builder
        .cmd(&["--json", "push", "x", &remote, "--ca-file", ca])
        .env("ENVOCI_REGISTRY_USER", "robot")
        .env("ENVOCI_REGISTRY_PASSWORD", "s3cret")
        .env("DOCKER_CONFIG", &docker_config)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );

    let user = Envoci::new();
    let anonymous = user
        .cmd(&["pull", &remote, "--ca-file", ca])
        .env("DOCKER_CONFIG", &docker_config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert_eq!(anonymous.status.code(), Some(exit::AUTH));
    assert!(
        err.contains("refused access")
            && err.contains("no credentials were given")
            && err.contains("envoci login"),
        "{err}"
    );

    let wrong = user
        .cmd(&["pull", &remote, "--ca-file", ca])
        .env("ENVOCI_REGISTRY_USER", "robot")
        .env("ENVOCI_REGISTRY_PASSWORD", "wrong")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(exit::AUTH));
    assert!(
        err.contains("refused access") && err.contains("check the user name and password"),
        "{err}"
    );

    // Without the CA the certificate is not trusted.
    let untrusted = user
        .cmd(&["pull", &remote, "--retries", "0"])
        .env("ENVOCI_REGISTRY_USER", "robot")
        .env("ENVOCI_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(
        untrusted.status.code(),
        Some(exit::OTHER),
        "plain HTTP to a TLS registry is not a registry: {err}"
    );
    assert!(
        err.contains("not an OCI registry") && err.contains("--ca-file"),
        "{err}"
    );

    // A wrong password is not saved; the right one is, in Docker's format, and used.
    let mut login = user.cmd(&[
        "login",
        &registry.addr,
        "--username",
        "robot",
        "--password-stdin",
        "--ca-file",
        ca,
    ]);
    login
        .env("DOCKER_CONFIG", &docker_config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run_login = |mut cmd: std::process::Command, password: &str| {
        use std::process::Stdio;
        cmd.env("DOCKER_CONFIG", &docker_config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(
            child.stdin.as_mut().unwrap(),
            format!("{password}\n").as_bytes(),
        )
        .unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let bad = run_login(
        user.cmd(&[
            "login",
            &registry.addr,
            "-u",
            "robot",
            "--password-stdin",
            "--ca-file",
            ca,
        ]),
        "nope",
    );
    assert_eq!(
        bad.status.code(),
        Some(exit::AUTH),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        !docker_config.join("config.json").exists(),
        "a refused login is not saved"
    );
    let ok = run_login(login, "s3cret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(docker_config.join("config.json")).unwrap()).unwrap();
    assert!(
        config["auths"][&registry.addr]["auth"].as_str().is_some(),
        "{config}"
    );
    let pulled = user
        .cmd(&["--json", "pull", &remote, "--ca-file", ca])
        .env("DOCKER_CONFIG", &docker_config)
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let logout = user
        .cmd(&["logout", &registry.addr])
        .env("DOCKER_CONFIG", &docker_config)
        .output()
        .unwrap();
    assert!(logout.status.success());
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(docker_config.join("config.json")).unwrap()).unwrap();
    assert!(config["auths"].get(&registry.addr).is_none(), "{config}");
}

#[test]
fn skopeo_copies_straight_from_the_store_layout_and_envoci_pulls_the_result() {
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-bin", "links", "shared-dep"]);
    let snap = builder.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    // The store is an OCI image layout: skopeo reads it as it is.
    let src = format!("oci:{}:x", builder.home().display());
    let remote = registry.reference("mirror/env:x");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &src,
        &format!("docker://{remote}"),
    ]);
    let user = Envoci::new();
    let pulled = user.json(&["pull", &remote]);
    assert_eq!(
        pulled["digest"], snap["digest"],
        "skopeo preserved the manifest digest"
    );
    let target = user.dir().join("space");
    user.ok(&["restore", &remote, "--target", target.to_str().unwrap()]);
    assert_eq!(
        run_stdout(&target.join("bin/whereami")),
        target.to_str().unwrap()
    );
}

#[test]
fn pulling_a_container_image_says_what_it_is() {
    let registry = TestRegistry::start();
    let t = Envoci::new();
    // A minimal OCI container image, written as a layout and copied by skopeo.
    let layout = t.dir().join("image");
    container_image_layout(&layout, "app");
    let remote = registry.reference("apps/web:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:app", layout.display()),
        &format!("docker://{remote}"),
    ]);
    let err = t.fail(&["pull", &remote]);
    assert!(
        err.contains("is not an envoci environment") && err.contains("container image"),
        "{err}"
    );
    assert!(t.has_no_environments());
}

#[test]
fn copy_between_registries_preserves_the_digest_and_skips_what_is_there() {
    let first = TestRegistry::start();
    let second = TestRegistry::start();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-text", "links", "shared-dep"]);
    let snap = builder.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let src = first.reference("envs/a:x");
    builder.ok(&["push", "x", &src]);

    let operator = Envoci::new();
    let dst = second.reference("mirror/a:x");
    let copied = operator.json(&["copy", &src, &dst]);
    assert_eq!(copied["destination"]["digest"], snap["digest"]);
    assert_eq!(copied["destination"]["blobs_skipped"].as_u64(), Some(0));
    let again = operator.json(&["copy", &src, &dst]);
    assert_eq!(
        again["source"]["blobs_transferred"].as_u64(),
        Some(0),
        "{again}"
    );
    assert_eq!(
        again["destination"]["blobs_transferred"].as_u64(),
        Some(0),
        "{again}"
    );
    let user = Envoci::new();
    assert_eq!(user.json(&["pull", &dst])["digest"], snap["digest"]);
}

#[test]
fn copy_within_one_registry_mounts_blobs_instead_of_uploading_them() {
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-text", "links", "shared-dep"]);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let src = registry.reference("team/envs:x");
    let pushed = builder.json(&["push", "x", &src]);
    let blobs = pushed["blobs_transferred"].as_u64().unwrap();

    let operator = Envoci::new();
    let dst = registry.reference("release/envs:x");
    let copied = operator.json(&["copy", &src, &dst]);
    let sent = &copied["destination"];
    assert_eq!(sent["blobs_mounted"].as_u64(), Some(blobs), "{copied}");
    assert_eq!(sent["bytes_transferred"].as_u64(), Some(0), "{copied}");
    assert_eq!(sent["digest"], pushed["digest"]);
    // The mounted copy is complete: a fresh store pulls and restores it.
    let user = Envoci::new();
    let target = user.dir().join("space");
    user.ok(&["restore", &dst, "--target", target.to_str().unwrap()]);
    assert!(target.join("conda-meta").is_dir());
}

#[test]
fn a_registry_refusing_pushes_gets_its_error_summarised_with_a_hint() {
    let registry = TestRegistry::start_read_only();
    let t = Envoci::new();
    let prefix = t.dir().join("env");
    install_env(&prefix, &["links"]);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let err = t.fail(&["push", "x", &registry.reference("envs/x:1")]);
    assert!(err.contains("405") && err.contains("read-only"), "{err}");
    assert!(err.lines().count() <= 3, "one short message: {err}");
}

#[test]
fn a_registry_with_bearer_tokens_is_followed_as_it_challenges() {
    let registry = TestRegistry::start_token("robot", "s3cret");
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-bin", "links"]);
    let snap = builder.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = registry.reference("envs/token:x");
    let with_password = |t: &Envoci, args: &[&str], password: &str| {
        t.cmd(args)
            .env("ENVOCI_REGISTRY_USER", "robot")
            .env("ENVOCI_REGISTRY_PASSWORD", password)
            .env("DOCKER_CONFIG", t.dir().join("no-docker-config"))
            .output()
            .unwrap()
    };
    let push = with_password(&builder, &["--json", "push", "x", &remote], "s3cret");
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let tokens = registry.token.as_ref().unwrap();
    assert!(
        tokens.issued() >= 1,
        "the push went through the token server"
    );

    let user = Envoci::new();
    let anonymous = user
        .cmd(&["pull", &remote])
        .env("DOCKER_CONFIG", user.dir().join("no-docker-config"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert!(
        anonymous.status.code() == Some(exit::AUTH)
            && err.contains("refused access")
            && err.contains("envoci login"),
        "{err}"
    );
    let wrong = with_password(&user, &["pull", &remote], "nope");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        wrong.status.code() == Some(exit::AUTH) && err.contains("refused access"),
        "{err}"
    );
    assert!(user.has_no_environments());

    let target = user.dir().join("space");
    let restore = with_password(
        &user,
        &["restore", &remote, "--target", target.to_str().unwrap()],
        "s3cret",
    );
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_eq!(
        run_stdout(&target.join("bin/whereami")),
        target.to_str().unwrap()
    );
    assert_eq!(user.json(&["ls"])[0]["digest"], snap["digest"]);
}

#[test]
fn credentials_never_go_over_plain_http_to_a_token_service_of_a_tls_registry() {
    let registry = TestRegistry::start_token_tls("robot", "s3cret");
    let token = registry.token.as_ref().unwrap();
    let ca = registry.ca_file.clone().unwrap();
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-text"]);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = registry.reference("envs/leak:x");
    let out = builder
        .cmd(&["push", "x", &remote, "--ca-file", ca.to_str().unwrap()])
        .env("ENVOCI_REGISTRY_USER", "robot")
        .env("ENVOCI_REGISTRY_PASSWORD", "s3cret")
        .env("DOCKER_CONFIG", builder.dir().join("no-docker-config"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::AUTH), "{err}");
    assert!(
        err.contains("plain HTTP") && err.contains(&token.addr),
        "the refusal names the token service: {err}"
    );
    assert_eq!(
        token.issued(),
        0,
        "the password never reached the token service"
    );
}

/// Runs envoci with the token registry's user and `password` (and no Docker config).
fn as_robot(t: &Envoci, args: &[&str], password: &str) -> std::process::Output {
    t.cmd(args)
        .env("ENVOCI_REGISTRY_USER", "robot")
        .env("ENVOCI_REGISTRY_PASSWORD", password)
        .env("DOCKER_CONFIG", t.dir().join("no-docker-config"))
        .output()
        .unwrap()
}

/// A token registry holding one pushed environment: its reference and the digests of
/// its config blob and first layer.
fn pushed_to_token_registry(registry: &TestRegistry, builder: &Envoci) -> (String, String, String) {
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["reloc-bin", "links", "shared-dep"]);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = registry.reference("envs/renew:x");
    let push = as_robot(builder, &["push", "x", &remote], "s3cret");
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let manifest = builder.json(&["inspect", "x"])["manifest"].clone();
    let digest = |v: &serde_json::Value| v["digest"].as_str().unwrap().to_string();
    (
        remote,
        digest(&manifest["config"]),
        digest(&manifest["layers"][0]),
    )
}

#[test]
fn a_token_the_registry_refuses_is_renewed_once_and_the_pull_goes_on() {
    let registry = TestRegistry::start_token("robot", "s3cret");
    let tokens = registry.token.as_ref().unwrap();
    let (remote, _config, layer) = pushed_to_token_registry(&registry, &Envoci::new());
    let proxy = common::proxy::Proxy::start(&registry.addr, common::proxy::Fault::Refuse, &layer);
    let via_proxy = proxy.via(&remote);
    let before = tokens.issued();
    let user = Envoci::new();
    let pull = as_robot(&user, &["pull", &via_proxy, "--retries", "0"], "s3cret");
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    assert!(proxy.fired(), "the layer's first request was refused");
    assert_eq!(tokens.issued() - before, 2, "one token, then one renewal");
    user.ok(&["check", "--verify"]);
}

#[test]
fn a_token_is_renewed_when_the_token_service_says_its_life_is_over() {
    let registry = TestRegistry::start_token("robot", "s3cret");
    let tokens = registry.token.as_ref().unwrap();
    let (remote, config, _layer) = pushed_to_token_registry(&registry, &Envoci::new());
    // The config blob is fetched first, the layers after it: slowed down past the
    // token's announced one second, the layers need a new token.
    let delay = common::proxy::Fault::Delay(std::time::Duration::from_millis(1500));
    let proxy = common::proxy::Proxy::start(&registry.addr, delay, &config);
    let via_proxy = proxy.via(&remote);
    tokens.set_lifetime(1);
    let before = tokens.issued();
    let user = Envoci::new();
    let pull = as_robot(&user, &["pull", &via_proxy, "--jobs", "1"], "s3cret");
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    assert!(proxy.fired());
    assert_eq!(
        tokens.issued() - before,
        2,
        "renewed once, before it expired"
    );
}

#[test]
fn an_identity_token_from_docker_login_is_exchanged_for_access() {
    let registry = TestRegistry::start_token("robot", "s3cret");
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["links"]);
    let snap = builder.json(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = registry.reference("envs/idtoken:x");
    // What `docker login` writes for registries that hand out identity tokens (ACR).
    let with_identity = |t: &Envoci, token: &str, args: &[&str]| {
        let config = t.dir().join(format!("docker-{token}"));
        fs::create_dir_all(&config).unwrap();
        fs::write(
            config.join("config.json"),
            serde_json::json!({ "auths": { &registry.addr: { "auth": "", "identitytoken": token } } })
                .to_string(),
        )
        .unwrap();
        t.cmd(args).env("DOCKER_CONFIG", &config).output().unwrap()
    };
    let push = with_identity(
        &builder,
        common::token::IDENTITY_TOKEN,
        &["push", "x", &remote],
    );
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let user = Envoci::new();
    let stale = with_identity(&user, "expired-token", &["pull", &remote]);
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stale.status.code() == Some(exit::AUTH)
            && err.contains("refused the stored identity token"),
        "{err}"
    );
    let pull = with_identity(
        &user,
        common::token::IDENTITY_TOKEN,
        &["--json", "pull", &remote],
    );
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let pulled: serde_json::Value = serde_json::from_slice(&pull.stdout).unwrap();
    assert_eq!(pulled["digest"], snap["digest"]);
}

#[test]
fn logout_keeps_a_linked_docker_config_a_link() {
    let t = Envoci::new();
    let dotfiles = t.dir().join("dotfiles");
    let docker = t.dir().join("docker");
    fs::create_dir_all(&dotfiles).unwrap();
    fs::create_dir_all(&docker).unwrap();
    let real = dotfiles.join("docker-config.json");
    fs::write(
        &real,
        r#"{"auths":{"a.example:5000":{"auth":"dTpw"},"b.example":{"auth":"dTpw"}}}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&real, docker.join("config.json")).unwrap();
    let out = t
        .cmd(&["logout", "a.example:5000"])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = fs::symlink_metadata(docker.join("config.json")).unwrap();
    assert!(link.file_type().is_symlink(), "config.json is still a link");
    let kept = fs::read_to_string(&real).unwrap();
    assert!(
        !kept.contains("a.example") && kept.contains("b.example"),
        "{kept}"
    );
}

#[test]
fn debug_logs_every_request_and_never_a_credential() {
    let registry = TestRegistry::start_token("robot", "s3cret");
    let builder = Envoci::new();
    let (remote, _config, _layer) = pushed_to_token_registry(&registry, &builder);
    let user = Envoci::new();
    let pull = as_robot(&user, &["--debug", "pull", &remote], "s3cret");
    let log = String::from_utf8_lossy(&pull.stderr);
    assert!(pull.status.success(), "{log}");
    let token_service = registry.token.as_ref().unwrap();
    for expected in [
        format!("url=\"http://{}/v2/\"", registry.addr),
        format!("url=\"http://{}/token\"", token_service.addr),
        "/manifests/x".to_string(),
        "status=200".to_string(),
        "blob request".to_string(),
        "blob served".to_string(),
    ] {
        assert!(log.contains(&expected), "the log has {expected}:\n{log}");
    }
    for secret in ["s3cret", "eyJ", "Bearer ", "Basic ", "cm9ib3Q6czNjcmV0"] {
        assert!(!log.contains(secret), "no `{secret}` in the log:\n{log}");
    }
    let quiet = as_robot(&Envoci::new(), &["pull", &remote], "s3cret");
    assert_eq!(
        String::from_utf8_lossy(&quiet.stderr),
        "",
        "no log without -v or --debug"
    );
}
