//! A store shared by a team: a setgid, group-writable `ENVOCI_HOME` used by two real
//! users (made with `useradd`, switched to with `setpriv`). Each restores, updates,
//! checks and collects garbage without breaking the other. Needs root (CI runs as root).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::envoci::Envoci;
use common::registry::TestRegistry;

const GROUP: &str = "envoci-share";
const USERS: [&str; 2] = ["envoci-alice", "envoci-bob"];

/// Makes the group and the two users if this machine lacks them.
fn ensure_users() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test makes users: run it as root (CI does)"
    );
    let ok = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("groupadd").args(["-f", GROUP]));
    for user in USERS {
        let exists = Command::new("id")
            .arg(user)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            ok(Command::new("useradd").args(["-M", "-N", "-g", GROUP, "-s", "/bin/sh", user]));
        }
    }
}

/// Runs `envoci --store STORE ARGS` as `user`, with a home of its own under `dir`.
fn as_user(user: &str, dir: &Path, store: &Path, args: &[&str]) -> Output {
    let home = dir.join(format!("home-{user}"));
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={GROUP}"),
            "--init-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_envoci"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("HOME", &home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("ENVOCI_HOME")
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory `user` owns, for its homes and spaces.
fn owned_dir(dir: &Path, user: &str) -> PathBuf {
    let path = dir.join(user);
    fs::create_dir_all(&path).unwrap();
    let status = Command::new("chown")
        .arg(format!("{user}:{GROUP}"))
        .arg(&path)
        .arg(dir.join(format!("home-{user}")))
        .status()
        .unwrap();
    assert!(status.success());
    path
}

#[test]
fn two_users_restore_update_check_and_collect_in_one_shared_store() {
    ensure_users();
    let registry = TestRegistry::start();
    let builder = Envoci::new();
    for (tag, packages) in [("v1", common::ENV_ONE), ("v2", common::ENV_TWO)] {
        builder.with_env(tag, packages);
        builder.ok(&["push", tag, &registry.reference(&format!("team/env:{tag}"))]);
    }
    let (v1, v2) = (
        registry.reference("team/env:v1"),
        registry.reference("team/env:v2"),
    );

    // The team's store: setgid and group-writable, as the README sets it up.
    let dir = tempfile::Builder::new()
        .prefix("envoci-shared-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    assert!(Command::new("chgrp")
        .arg(GROUP)
        .arg(&store)
        .status()
        .unwrap()
        .success());
    fs::set_permissions(&store, fs::Permissions::from_mode(0o2775)).unwrap();
    for user in USERS {
        fs::create_dir_all(dir.path().join(format!("home-{user}"))).unwrap();
    }
    let [alice, bob] = USERS.map(|u| owned_dir(dir.path(), u));
    let space = |home: &Path| home.join("env").to_str().unwrap().to_string();

    ok(as_user(
        USERS[0],
        dir.path(),
        &store,
        &["restore", &v1, "--target", &space(&alice)],
    ));
    ok(as_user(
        USERS[1],
        dir.path(),
        &store,
        &["restore", &v1, "--target", &space(&bob)],
    ));
    ok(as_user(
        USERS[1],
        dir.path(),
        &store,
        &["restore", &v2, "--target", &space(&bob)],
    ));
    ok(as_user(
        USERS[0],
        dir.path(),
        &store,
        &["restore", &v2, "--target", &space(&alice)],
    ));
    ok(as_user(USERS[0], dir.path(), &store, &["rm", &v1]));
    ok(as_user(USERS[1], dir.path(), &store, &["gc"]));
    ok(as_user(
        USERS[0],
        dir.path(),
        &store,
        &["restore", &v2, "--target", &space(&alice)],
    ));
    for user in USERS {
        let check = ok(as_user(
            user,
            dir.path(),
            &store,
            &["--json", "check", "--verify"],
        ));
        let check: serde_json::Value = serde_json::from_str(&check).unwrap();
        assert_eq!(check["problems"], serde_json::json!([]), "{user}: {check}");
    }

    // What either made stays the group's: directories group-writable and setgid.
    for sub in ["blobs/sha256", "files-v1", "state-v2", "locks"] {
        let meta = fs::metadata(store.join(sub)).unwrap();
        assert_eq!(meta.mode() & 0o2070, 0o2070, "{sub} is the group's");
    }
    let shard = fs::read_dir(store.join("files-v1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        shard.metadata().unwrap().mode() & 0o2070,
        0o2070,
        "a CAS shard is too"
    );
    let index = fs::metadata(store.join("index.json")).unwrap();
    assert_eq!(index.mode() & 0o060, 0o060, "index.json is group-writable");
}
