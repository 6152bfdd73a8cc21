//! One incoming owner's pull of a partition, driven directly: how many old
//! owners must answer whole, live ones asked first, failures passed over to
//! the next source, and a staying owner's own copy counted only when it is
//! whole (not restoring, every record read back, which is checked last). No
//! sockets, no madsim.

use shoal_engine::cluster::handoff_pull::{OwnCopy, PartitionPull, PullShort, Step};
use shoal_engine::cluster::map::{ClusterMap, RingChange};
use shoal_engine::placement::{PartitionId, Ring};
use std::collections::BTreeSet;

fn three() -> ClusterMap {
    let ring = Ring::new(16, 3, [1, 2, 3]).expect("ring");
    let addresses = (1..=3).map(|n| (n, format!("127.0.0.1:{}", 7000 + n)));
    ClusterMap::bootstrap(ring, addresses.collect()).expect("map")
}

/// Namespace 3 pinned to nodes 1 and 2: both stay, and both pull it from the
/// three old owners (n=3 w=2: any two of them hold every write).
fn pinned() -> (ClusterMap, PartitionId) {
    let (map, _) = three()
        .change(&RingChange::Pin {
            namespace: 3,
            nodes: BTreeSet::from([1, 2]),
            replicas_n: 2,
            r: 1,
            w: 2,
        })
        .expect("pin");
    let partition = *map.incoming(1).first().expect("node 1 pulls");
    (map, partition)
}

/// Node 4 joins three: it owns partitions it never held.
fn joined() -> (ClusterMap, PartitionId) {
    let (map, _) = three()
        .change(&RingChange::Join {
            node: 4,
            address: "127.0.0.1:7004".into(),
        })
        .expect("join");
    let partition = *map.incoming(4).first().expect("node 4 pulls");
    (map, partition)
}

/// Run `pull` to its end, each source answering as `answer` says and the own
/// copy reading back `own_whole`: the steps taken, and the end.
fn run(
    mut pull: PartitionPull,
    own_whole: bool,
    answer: impl Fn(u32) -> Result<(), String>,
) -> (Vec<Step>, Result<(), PullShort>) {
    let mut steps = Vec::new();
    loop {
        let step = pull.step();
        steps.push(step);
        match step {
            Step::Scan(source) => pull.scanned(source, answer(source)),
            Step::CheckOwnCopy => pull.own_checked(own_whole),
            Step::End => return (steps, pull.end()),
        }
    }
}

fn scanned(steps: &[Step]) -> Vec<u32> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Scan(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_owner_needs_n_minus_w_plus_one_old_owners_and_asks_live_ones_first() {
    let (map, partition) = joined();
    let old = map.handoff_sources(partition, 4);
    assert_eq!(old.len(), 3);
    let down = old[0];
    let pull = PartitionPull::new(&map, partition, 4, 2, OwnCopy::NotAnOldOwner, |n| n != down);
    assert_eq!(pull.needed(), 2);
    let (steps, end) = run(pull, true, |_| Ok(()));
    assert_eq!(end, Ok(()));
    let asked = scanned(&steps);
    assert_eq!(asked.len(), 2, "two answered whole: enough");
    assert!(!steps.contains(&Step::CheckOwnCopy), "no own copy to check");
    assert!(
        !asked.contains(&down),
        "the down owner is asked last: {asked:?}"
    );
}

#[test]
fn a_failed_source_is_passed_over_and_a_short_pull_names_each_failure() {
    let (map, partition) = joined();
    let old = map.handoff_sources(partition, 4);
    let pull = PartitionPull::new(&map, partition, 4, 2, OwnCopy::NotAnOldOwner, |_| true);
    let failing = old[0];
    let (steps, end) = run(pull, true, |n| {
        if n == failing {
            Err("connection refused".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(end, Ok(()), "the other two answered");
    assert_eq!(scanned(&steps).len(), 3);

    let pull = PartitionPull::new(&map, partition, 4, 2, OwnCopy::NotAnOldOwner, |_| true);
    let (_, end) = run(pull, true, |n| {
        if n == old[2] {
            Ok(())
        } else {
            Err(format!("node {n} cannot read its copy"))
        }
    });
    let short = end.expect_err("one of two");
    assert_eq!((short.pulled, short.needed), (1, 2));
    assert_eq!(short.failures.len(), 2);
    let text = short.to_string();
    assert!(
        text.starts_with("pulled from 1 of the 2 old owners needed (node "),
        "{text}"
    );
    assert!(text.contains("cannot read its copy"), "{text}");
}

#[test]
fn a_staying_owner_counts_its_own_copy_only_when_whole() {
    let (map, partition) = pinned();
    assert!(map.was_owner(partition, 1));
    let needed = |own| PartitionPull::new(&map, partition, 1, 2, own, |_| true).needed();
    assert_eq!(needed(OwnCopy::of(true, false)), 1, "counted until checked");
    assert_eq!(needed(OwnCopy::of(true, true)), 2, "restoring: not counted");
    assert_eq!(needed(OwnCopy::of(false, false)), 2);

    // Whole: one other old owner and the check end it.
    let pull = PartitionPull::new(&map, partition, 1, 2, OwnCopy::of(true, false), |_| true);
    let (steps, end) = run(pull, true, |_| Ok(()));
    assert_eq!(steps, [Step::Scan(2), Step::CheckOwnCopy, Step::End]);
    assert_eq!(end, Ok(()));

    // Damaged here, and node 3 (the only other holder) unreachable: after
    // node 2, the check finds the damage, node 3 is asked, and the pull is
    // short instead of done.
    let pull = PartitionPull::new(&map, partition, 1, 2, OwnCopy::of(true, false), |n| n != 3);
    let (steps, end) = run(pull, false, |n| {
        if n == 3 {
            Err("not connected".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(
        steps,
        [Step::Scan(2), Step::CheckOwnCopy, Step::Scan(3), Step::End]
    );
    let short = end.expect_err("short");
    assert_eq!((short.pulled, short.needed), (1, 2));
}

#[test]
fn the_own_copy_is_not_read_back_while_the_other_sources_are_short() {
    let (map, partition) = pinned();
    let pull = PartitionPull::new(&map, partition, 1, 2, OwnCopy::of(true, false), |_| true);
    let (steps, end) = run(pull, true, |_| Err("not connected".into()));
    assert!(!steps.contains(&Step::CheckOwnCopy), "{steps:?}");
    assert!(end.is_err());
}
