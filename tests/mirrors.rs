//! Mirrors and pull-through caches: registries.conf and `--mirror` send pulls to
//! mirrors first — a real CNCF distribution in `proxy:` mode in front of another — and
//! fall back to the registry when a mirror is down, lacks the content, lies or stalls;
//! pushes go to the registry's location only; credentials go only where they belong.

mod common;

use std::path::{Path, PathBuf};

use common::envoci::{exit, Envoci};
use common::install_env;
use common::proxy::{Fault, Proxy};
use common::registry::TestRegistry;

/// An environment of several layers pushed to `registry` as `envs/m:v1`: the builder,
/// the reference, and the manifest.
fn pushed(registry: &TestRegistry) -> (Envoci, String, serde_json::Value) {
    let builder = Envoci::new();
    builder.with_env("x", &["reloc-bin", "links", "shared-dep"]);
    let remote = registry.reference("envs/m:v1");
    builder.ok(&["push", "x", &remote]);
    let manifest = builder.json(&["inspect", "x"])["manifest"].clone();
    (builder, remote, manifest)
}

/// Writes a registries.conf in `dir` and returns its path.
fn registries_conf(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("registries.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// `envoci --json pull …` with `conf` as the registries configuration.
fn pull_with(t: &Envoci, conf: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--json", "pull"];
    all.extend_from_slice(args);
    t.cmd(&all)
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The requests envoci made to `registry` (not the harness, not a cache).
fn envoci_requests(registry: &TestRegistry) -> Vec<String> {
    let requests = registry.requests();
    requests
        .into_iter()
        .filter(|r| r.contains("envoci/"))
        .collect()
}

/// What each endpoint served: (endpoint, manifest, blobs).
fn served(report: &serde_json::Value) -> Vec<(String, bool, u64)> {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_string(),
                e["manifest"].as_bool().unwrap(),
                e["blobs"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The blob GETs among `requests`.
fn blob_gets(requests: &[String]) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .count()
}

#[test]
fn a_pull_through_cache_in_registries_conf_serves_every_pull_of_a_fleet() {
    let upstream = TestRegistry::start();
    let (builder, remote, manifest) = pushed(&upstream);
    let digest = builder.digest("x");
    let blobs = 1 + manifest["layers"].as_array().unwrap().len();
    let cache = TestRegistry::start_proxy(&upstream.addr);
    let dir = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        dir.path(),
        &format!(
            "[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{cache}\"\ninsecure = true\n",
            up = upstream.addr,
            cache = cache.addr
        ),
    );
    let cache_name = format!("{}/envs/m", cache.addr);
    let pull_one = |conf: &Path| {
        let t = Envoci::new();
        let report = json_of(&pull_with(&t, conf, &[&remote]));
        t.ok(&["check", "--verify"]);
        report
    };

    // The first client alone fills the cache.
    let report = pull_one(&conf);
    assert_eq!(served(&report), [(cache_name.clone(), true, blobs as u64)]);
    assert_eq!(report["digest"], digest.as_str());

    // Four more at once: the upstream sends no blob, the cache answers each client's
    // manifest and blobs.
    let (up_before, cache_before) = (upstream.requests().len(), cache.requests().len());
    let reports: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4).map(|_| scope.spawn(|| pull_one(&conf))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for report in reports {
        assert_eq!(served(&report), [(cache_name.clone(), true, blobs as u64)]);
    }
    let upstream_saw = upstream.requests()[up_before..].to_vec();
    assert_eq!(blob_gets(&upstream_saw), 0, "{upstream_saw:?}");
    assert!(
        upstream_saw.iter().all(|r| !r.contains("envoci/")),
        "{upstream_saw:?}"
    );
    let cache_saw: Vec<String> = cache.requests()[cache_before..]
        .iter()
        .filter(|r| r.contains("envoci/"))
        .cloned()
        .collect();
    let manifests = cache_saw
        .iter()
        .filter(|r| r.contains("/manifests/"))
        .count();
    assert_eq!(
        (manifests, blob_gets(&cache_saw)),
        (4, 4 * blobs),
        "{cache_saw:?}"
    );

    // skopeo, given the same registries.conf, gets the same manifest from the cache.
    let layout = dir.path().join("skopeo-layout");
    let out = std::process::Command::new("skopeo")
        .arg("--registries-conf")
        .arg(&conf)
        .args(["copy", &format!("docker://{remote}")])
        .arg(format!("oci:{}:m", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // The cache gone: pulls fall back to the upstream and succeed.
    drop(cache);
    let report = pull_one(&conf);
    let location = format!("{}/envs/m", upstream.addr);
    assert_eq!(served(&report), [(location, true, blobs as u64)]);
}

#[test]
fn mirrors_that_are_down_empty_lying_or_stalled_are_skipped_for_the_registry() {
    let upstream = TestRegistry::start();
    let (_builder, remote, manifest) = pushed(&upstream);
    let layers = manifest["layers"].as_array().unwrap();
    let blobs = 1 + layers.len() as u64;
    let layer = layers[0]["digest"].as_str().unwrap().to_string();
    let location = format!("{}/envs/m", upstream.addr);
    let empty = TestRegistry::start();
    let lying = Proxy::start(&upstream.addr, Fault::FlipAt(10), &layer);
    let stalled = Proxy::start(&upstream.addr, Fault::StallAfter(10), &layer);

    // Down, then empty: everything from the registry.
    let t = Envoci::new();
    let report = t.json(&[
        "pull",
        &remote,
        "--mirror",
        "127.0.0.1:1",
        "--mirror",
        &empty.addr,
    ]);
    assert_eq!(served(&report), [(location.clone(), true, blobs)]);

    // Lying about one layer: that layer from the registry, the rest from the mirror.
    let t = Envoci::new();
    let report = t.json(&["pull", &remote, "--mirror", &lying.addr]);
    assert!(lying.fired());
    let mirror = format!("{}/envs/m", lying.addr);
    assert_eq!(
        served(&report),
        [(mirror, true, blobs - 1), (location.clone(), false, 1)]
    );
    assert_eq!(
        report["endpoints"][1]["digests"],
        serde_json::json!([layer]),
        "the registry served the layer the mirror corrupted"
    );
    t.ok(&["check", "--verify"]);

    // Stalled past the timeout, with no retries: the layer from the registry,
    // resuming what arrived from the mirror.
    let t = Envoci::new();
    let report = t.json(&[
        "pull",
        &remote,
        "--mirror",
        &stalled.addr,
        "--timeout",
        "1",
        "--retries",
        "0",
    ]);
    assert!(stalled.fired());
    let mirror = format!("{}/envs/m", stalled.addr);
    assert_eq!(
        served(&report),
        [(mirror, true, blobs - 1), (location, false, 1)]
    );
    assert_eq!(report["blobs_resumed"].as_u64(), Some(1), "{report}");
    t.ok(&["check", "--verify"]);
}

#[test]
fn when_every_endpoint_fails_the_error_names_each() {
    let upstream = TestRegistry::start();
    let empty = TestRegistry::start();
    let t = Envoci::new();
    let missing = upstream.reference("envs/none:v1");
    let err = t.fail_as(
        exit::NOT_FOUND,
        &[
            "pull",
            &missing,
            "--mirror",
            "127.0.0.1:1",
            "--mirror",
            &empty.addr,
        ],
    );
    for endpoint in [
        "127.0.0.1:1/envs/none",
        &format!("{}/envs/none", empty.addr),
    ] {
        assert!(err.contains(endpoint), "names {endpoint}: {err}");
    }
    assert!(err.contains(&upstream.addr), "{err}");
}

#[test]
fn digest_only_mirrors_serve_pulls_by_digest_only() {
    let upstream = TestRegistry::start();
    let (builder, remote, _) = pushed(&upstream);
    let digest = builder.digest("x");
    let mirror = Proxy::plain(&upstream.addr);
    let dir = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        dir.path(),
        &format!(
            "[[registry]]\nprefix = \"{up}/envs\"\n\n[[registry.mirror]]\nlocation = \"{m}/envs\"\npull-from-mirror = \"digest-only\"\n",
            up = upstream.addr,
            m = mirror.addr
        ),
    );
    let by_tag = json_of(&pull_with(&Envoci::new(), &conf, &[&remote]));
    assert!(served(&by_tag)
        .iter()
        .all(|(e, _, _)| !e.starts_with(&mirror.addr)));
    let by_digest = format!("{}/envs/m@{digest}", upstream.addr);
    let pulled = json_of(&pull_with(&Envoci::new(), &conf, &[&by_digest]));
    assert!(served(&pulled)[0].0.starts_with(&mirror.addr), "{pulled}");
}

#[test]
fn pushes_go_to_the_location_and_never_to_a_mirror() {
    let upstream = TestRegistry::start();
    let mirror = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        dir.path(),
        &format!(
            "[[registry]]\nprefix = \"registry.example/envs\"\nlocation = \"{up}/team\"\n\n[[registry.mirror]]\nlocation = \"{m}/team\"\n",
            up = upstream.addr,
            m = mirror.addr
        ),
    );
    let t = Envoci::new();
    let prefix = t.dir().join("env");
    install_env(&prefix, &["links"]);
    t.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let out = t
        .cmd(&["push", "x", "registry.example/envs/app:1"])
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        envoci_requests(&mirror).is_empty(),
        "{:?}",
        mirror.requests()
    );
    let user = Envoci::new();
    user.ok(&["pull", &upstream.reference("team/app:1")]);
}

#[test]
fn a_mirror_gets_only_the_credentials_stored_for_its_own_host() {
    let upstream = TestRegistry::start_token("robot", "s3cret");
    let builder = Envoci::new();
    let prefix = builder.dir().join("env");
    install_env(&prefix, &["links"]);
    builder.ok(&["snapshot", prefix.to_str().unwrap(), "--tag", "x"]);
    let remote = upstream.reference("envs/private:v1");
    let as_robot = |t: &Envoci, args: &[&str]| {
        t.cmd(args)
            .env("ENVOCI_REGISTRY_USER", "robot")
            .env("ENVOCI_REGISTRY_PASSWORD", "s3cret")
            .env("DOCKER_CONFIG", t.dir().join("no-docker-config"))
            .output()
            .unwrap()
    };
    assert!(as_robot(&builder, &["push", "x", &remote]).status.success());
    // A mirror in front of the same registry: it challenges like it, but no
    // credential is stored for its host, so it gets an anonymous token only.
    let mirror = Proxy::plain(&upstream.addr);
    let user = Envoci::new();
    let out = as_robot(
        &user,
        &["--json", "pull", &remote, "--mirror", &mirror.addr],
    );
    let report = json_of(&out);
    assert_eq!(
        served(&report)[0].0,
        format!("{}/envs/private", upstream.addr)
    );
    let sent = mirror.authorizations();
    assert!(
        sent.iter().all(|a| !a.starts_with("Basic")),
        "the password never went to the mirror: {sent:?}"
    );
}

#[test]
fn blocked_references_and_bad_configurations_are_refused_clearly() {
    let upstream = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        dir.path(),
        &format!(
            "[[registry]]\nprefix = \"{}/secret\"\nblocked = true\n",
            upstream.addr
        ),
    );
    let t = Envoci::new();
    let out = pull_with(&t, &conf, &[&upstream.reference("secret/env:1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::OTHER), "{err}");
    assert!(
        err.contains("blocked") && err.contains(conf.to_str().unwrap()),
        "{err}"
    );
    assert!(
        envoci_requests(&upstream).is_empty(),
        "nothing was asked: {:?}",
        upstream.requests()
    );

    let broken = registries_conf(dir.path(), "[[registry]]\nprefix = \"a.io\"\nlocation = \n");
    let out = pull_with(&t, &broken, &[&upstream.reference("any/env:1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{err}");
    assert!(
        err.contains(broken.to_str().unwrap()) && err.contains("line 3"),
        "{err}"
    );

    let err = t.fail_as(
        exit::USAGE,
        &[
            "pull",
            &upstream.reference("any/env:1"),
            "--mirror",
            "https://m.lan",
        ],
    );
    assert!(err.contains("scheme"), "{err}");
}

#[test]
fn a_pull_asks_for_the_manifest_once_and_each_missing_blob_once() {
    let upstream = TestRegistry::start();
    let (_builder, remote, manifest) = pushed(&upstream);
    let blobs = 1 + manifest["layers"].as_array().unwrap().len();
    let before = upstream.requests().len();
    let t = Envoci::new();
    t.ok(&["pull", &remote]);
    let asked: Vec<String> = upstream.requests()[before..].to_vec();
    let count = |what: &str| asked.iter().filter(|r| r.starts_with(what)).count();
    assert_eq!(count("GET /v2/ "), 1, "{asked:?}");
    assert_eq!(count("GET /v2/envs/m/manifests/"), 1, "{asked:?}");
    assert_eq!(count("GET /v2/envs/m/blobs/"), blobs, "{asked:?}");
    assert_eq!(count("HEAD "), 0, "{asked:?}");
    assert_eq!(asked.len(), 2 + blobs, "{asked:?}");
}

#[test]
fn recently_pulled_tags_and_held_digests_restore_without_a_request_and_offline_never_asks() {
    let upstream = TestRegistry::start();
    let (builder, remote, _) = pushed(&upstream);
    let digest = builder.digest("x");
    let t = Envoci::new();
    t.ok(&["pull", &remote]);
    let asked = || envoci_requests(&upstream).len();
    let target = |name: &str| t.dir().join(name).to_str().unwrap().to_string();
    let before = asked();
    t.ok(&[
        "restore",
        &remote,
        "--target",
        &target("a"),
        "--max-age",
        "1h",
    ]);
    assert_eq!(asked(), before, "a tag pulled within the hour: no request");
    let by_digest = format!("{}/envs/m@{digest}", upstream.addr);
    t.ok(&["restore", &by_digest, "--target", &target("b")]);
    assert_eq!(asked(), before, "a digest the store holds: no request");
    t.ok(&["restore", &remote, "--target", &target("c")]);
    assert_eq!(
        asked(),
        before + 2,
        "a tag is asked for by default (probe, manifest)"
    );

    drop(upstream);
    t.ok(&["restore", &remote, "--target", &target("d"), "--offline"]);
    let stranger = Envoci::new();
    let err = stranger.fail_as(
        exit::NOT_FOUND,
        &["restore", &remote, "--target", &target("e"), "--offline"],
    );
    assert!(
        err.contains("not in the store") && err.contains("--offline"),
        "{err}"
    );
    let err = t.fail_as(
        exit::USAGE,
        &[
            "restore",
            &remote,
            "--target",
            &target("f"),
            "--max-age",
            "5x",
        ],
    );
    assert!(err.contains("`x` is not a unit"), "{err}");
}
