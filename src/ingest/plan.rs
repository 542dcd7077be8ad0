//! The layer plan: which layer each walked path goes into. One layer per owner (conda
//! package, pip distribution, the environment itself last), unless that makes more
//! layers than a registry accepts; then small packages share group layers.

use std::collections::HashSet;

use super::walk::{Walked, WalkedKind};
use super::{Attribution, Owner};
use crate::catalog::LayerKind;
use crate::digest::Digest;

/// One layer to write: its owner (a package, the environment, or a group) and, for a
/// group, the packages it holds.
pub(super) struct Planned<'a> {
    pub owner: Owner,
    pub members: Vec<Owner>,
    pub entries: Vec<&'a Walked>,
}

/// The walked paths of each owner, in the order of `attribution.owners`. Empty
/// directories belong to the environment.
pub(super) fn group_by_owner<'a>(
    walked: &'a [Walked],
    attribution: &Attribution,
) -> Vec<Vec<&'a Walked>> {
    let mut groups: Vec<Vec<&Walked>> = vec![Vec::new(); attribution.owners.len()];
    for w in walked {
        let owner = match w.kind {
            WalkedKind::EmptyDir => attribution.env_owner(),
            _ => attribution.owner(&w.rel),
        };
        groups[owner].push(w);
    }
    groups
}

/// The layers of an environment: one per owner (the environment's own last), unless
/// that is more than `limit`. Then the largest packages keep their own layers and the
/// others share `limit / 8` group layers, each package's group chosen by a hash of its
/// name, so a small package lands in the same group in every environment. Each path
/// has exactly one owner, so merging owners never changes which file wins a path.
pub(super) fn plan_layers<'a>(
    owners: &[Owner],
    groups: Vec<Vec<&'a Walked>>,
    limit: usize,
) -> Vec<Planned<'a>> {
    let limit = limit.max(3);
    if owners.len() <= limit {
        return owners
            .iter()
            .zip(groups)
            .map(|(owner, entries)| single(owner, entries))
            .collect();
    }
    let env = owners.len() - 1;
    let shared = (limit / 8).max(1);
    let kept = largest(owners, &groups, limit - 1 - shared);
    let mut buckets: Vec<(Vec<Owner>, Vec<&'a Walked>)> = vec![(Vec::new(), Vec::new()); shared];
    let mut planned = Vec::new();
    let mut env_layer = None;
    for (i, entries) in groups.into_iter().enumerate() {
        if i == env {
            env_layer = Some(single(&owners[i], entries));
        } else if kept.contains(&i) {
            planned.push(single(&owners[i], entries));
        } else {
            let bucket = &mut buckets[bucket_of(&owners[i].name, shared)];
            bucket.0.push(owners[i].clone());
            bucket.1.extend(entries);
        }
    }
    for (i, (members, entries)) in buckets.into_iter().enumerate() {
        if !members.is_empty() {
            planned.push(Planned {
                owner: group_owner(i, shared),
                members,
                entries,
            });
        }
    }
    planned.extend(env_layer);
    planned
}

/// A layer of one owner.
fn single<'a>(owner: &Owner, entries: Vec<&'a Walked>) -> Planned<'a> {
    Planned {
        owner: owner.clone(),
        members: Vec::new(),
        entries,
    }
}

/// The `keep` packages (not the environment, which is last) with the most bytes; ties
/// broken by name.
fn largest(owners: &[Owner], groups: &[Vec<&Walked>], keep: usize) -> HashSet<usize> {
    let sizes: Vec<u64> = groups
        .iter()
        .map(|entries| {
            entries
                .iter()
                .map(|w| match w.kind {
                    WalkedKind::File { size, .. } => size,
                    _ => 0,
                })
                .sum()
        })
        .collect();
    let mut by_size: Vec<usize> = (0..owners.len() - 1).collect();
    by_size.sort_by(|&a, &b| {
        sizes[b]
            .cmp(&sizes[a])
            .then_with(|| owners[a].name.cmp(&owners[b].name))
    });
    by_size.into_iter().take(keep).collect()
}

/// The group of a package: a hash of its name, the same in every environment.
fn bucket_of(name: &str, shared: usize) -> usize {
    let hash = Digest::of(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.0[..8]);
    (u64::from_be_bytes(first) % shared as u64) as usize
}

/// The owner of group layer `i` of `shared`.
fn group_owner(i: usize, shared: usize) -> Owner {
    Owner {
        kind: LayerKind::Group,
        name: format!("group-{i:02}-of-{shared:02}"),
        version: None,
        build: None,
        subdir: None,
        channel: None,
        sha256: None,
    }
}
