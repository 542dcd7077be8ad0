//! `kill -9` at random points of `import` and `pull`, ten times or more each: after every
//! kill the store is consistent (`check` finds no problem; what a killed command left is
//! listed as leftovers, never tagged), and the next command succeeds, with
//! `check --verify` clean at the end.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::envoci::{Envoci, Json};
use common::registry::TestRegistry;

/// A pseudo-random number below `n`, different on every call.
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n
}

/// A store holding `big`: an environment of many files and a few large incompressible
/// ones (enough work for a kill to land in the middle).
fn builder_with_big_env() -> Envoci {
    let builder = Envoci::new();
    let dir = builder.dir().join("big-env");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for d in 0..4 {
        let sub = dir.join(format!("lib/part{d}"));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("blob.bin"), noise(4 << 20)).unwrap();
        for i in 0..400 {
            fs::write(
                sub.join(format!("f{i}.txt")),
                format!("{d}-{i}\n").repeat(50),
            )
            .unwrap();
        }
    }
    builder.ok(&["snapshot", dir.to_str().unwrap(), "--tag", "big"]);
    builder
}

/// Runs `args` against `t`'s store, killing it after a random delay; whether the kill
/// landed before the command finished.
fn run_and_kill(t: &Envoci, args: &[&str], max_ms: u64) -> bool {
    let mut child = t
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(5 + random_below(max_ms)));
    let _ = child.kill();
    child.wait().unwrap().signal() == Some(libc::SIGKILL)
}

/// `check` after a kill: no problem, no environment tagged half-way.
fn assert_consistent(t: &Envoci, what: &str) {
    let out = t.run(&["--json", "check"]);
    let report: Json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: check printed no JSON ({e})"));
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.is_empty(), "{what}: {report}");
    // A kill can land after the tag was written and before the process exited: a
    // tag must then name a complete environment, every blob and file sound.
    let tags = t.json(&["ls"]);
    if !tags.as_array().unwrap().is_empty() {
        let verified = t.json(&["check", "--verify"]);
        let problems = verified["problems"].as_array().unwrap();
        assert!(
            problems.is_empty(),
            "{what}: a tagged environment is complete: {tags} {verified}"
        );
    }
}

/// Repeats a killed `args` until it was killed mid-way `kills` times (at most 80
/// tries), checking the store after each kill.
fn kill_repeatedly(t: &Envoci, args: &[&str], kills: usize, max_ms: u64) {
    kill_repeatedly_then(t, args, kills, max_ms, |_| {}, || {});
}

/// [`kill_repeatedly`], also running `after_kill` after each kill and `reset` when a
/// run finished before its kill (with the store's removal).
fn kill_repeatedly_then(
    t: &Envoci,
    args: &[&str],
    kills: usize,
    max_ms: u64,
    after_kill: impl Fn(&str),
    reset: impl Fn(),
) {
    let mut done = 0;
    for attempt in 0..80 {
        if done >= kills {
            break;
        }
        if !run_and_kill(t, args, max_ms) {
            // It finished first: start over from an empty store.
            let _ = fs::remove_dir_all(t.home());
            reset();
            continue;
        }
        done += 1;
        let what = format!("kill {done} (try {attempt})");
        assert_consistent(t, &what);
        after_kill(&what);
    }
    assert!(
        done >= kills,
        "only {done} of {kills} runs could be killed mid-way"
    );
}

fn restore_and_verify(t: &Envoci, reference: &str, target: &Path) {
    t.ok(&["restore", reference, "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::metadata(target.join("lib/part3/blob.bin"))
            .unwrap()
            .len(),
        4 << 20
    );
    t.ok(&["check", "--verify"]);
}

#[test]
fn imports_killed_at_random_points_leave_the_store_consistent() {
    let builder = builder_with_big_env();
    let archive = builder.dir().join("envs.tar");
    builder.ok(&["export", "big", "-o", archive.to_str().unwrap()]);
    let site = Envoci::new();
    kill_repeatedly(&site, &["import", archive.to_str().unwrap()], 10, 400);
    site.ok(&["import", archive.to_str().unwrap()]);
    restore_and_verify(&site, "big", &site.dir().join("env"));
}

#[test]
fn pulls_killed_at_random_points_leave_the_store_consistent() {
    let registry = TestRegistry::start();
    let builder = builder_with_big_env();
    let remote = registry.reference("envs/big:v1");
    builder.ok(&["push", "big", &remote]);
    let user = Envoci::new();
    kill_repeatedly(&user, &["pull", &remote, "--jobs", "2"], 10, 400);
    // The last pull continues what the killed ones left, and completes.
    user.ok(&["pull", &remote]);
    restore_and_verify(&user, &remote, &user.dir().join("env"));
}

/// Files a killed process left staged beside their place in the CAS.
fn staged_leftovers(t: &Envoci) -> Vec<std::path::PathBuf> {
    let staged = |p: &std::path::PathBuf| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.starts_with(".staged-")
    };
    t.cas_dir_files().into_iter().filter(staged).collect()
}

#[test]
fn restores_from_a_registry_killed_while_unpacking_leave_no_space_and_a_consistent_store() {
    let registry = TestRegistry::start();
    let builder = builder_with_big_env();
    let remote = registry.reference("envs/big:v1");
    builder.ok(&["push", "big", &remote]);
    let user = Envoci::new();
    let target = user.dir().join("env");
    let target_str = target.to_str().unwrap();
    let no_half_space = |what: &str| {
        // A new space appears whole (renamed into place) or not at all.
        if target.exists() {
            assert_eq!(
                fs::metadata(target.join("lib/part3/blob.bin"))
                    .unwrap()
                    .len(),
                4 << 20,
                "{what}: a space that exists is complete"
            );
            user.ok(&["check", "--verify"]);
        }
    };
    let reset = || {
        let _ = fs::remove_dir_all(&target);
    };
    let args = ["restore", &remote, "--target", target_str, "--jobs", "2"];
    kill_repeatedly_then(&user, &args, 10, 400, no_half_space, reset);
    // The next restore finishes the job; gc sweeps what the killed ones left staged.
    user.ok(&["restore", &remote, "--target", target_str]);
    restore_and_verify(&user, &remote, &target);
    user.ok(&["gc"]);
    assert_eq!(staged_leftovers(&user), Vec::<std::path::PathBuf>::new());
    user.ok(&["check", "--verify"]);
}
