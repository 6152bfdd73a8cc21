//! Placement as tables: each row is one ring operation, the replica moves it must
//! make (the minimum, worked out by hand in the comments), and every member's
//! `replicas/primaries` afterwards. Then a property test of random join, leave and
//! replace sequences.

use proptest::prelude::*;
use shoal_engine::placement::{PlacementError, Ring, RingDiff};
use shoal_engine::NodeId;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The fewest moves `op` can make on a balanced `before`: a joiner must receive at
/// least the floor of the new average, and every member above the new ceiling must
/// shed its excess, all of it to the joiner; a leaver's replicas must all go.
fn minimum_moves(before: &Ring, op: &Op) -> usize {
    match *op {
        Op::Join(_) => {
            let report = before.balance_report();
            let members = before.members().len() + 1;
            let floor = report.replicas_total / members;
            let ceil = floor + usize::from(!report.replicas_total.is_multiple_of(members));
            let excess: usize = report
                .nodes
                .values()
                .map(|n| n.replicas.saturating_sub(ceil))
                .sum();
            floor.max(excess)
        }
        Op::Leave(node) | Op::Replace(node, _) => before.load(node),
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Join(NodeId),
    Leave(NodeId),
    Replace(NodeId, NodeId),
}

impl Op {
    fn parse(text: &str) -> Op {
        let words: Vec<&str> = text.split_whitespace().collect();
        let node = |i: usize| -> NodeId { words[i].parse().expect("node id") };
        match words[0] {
            "join" => Op::Join(node(1)),
            "leave" => Op::Leave(node(1)),
            "replace" => Op::Replace(node(1), node(2)),
            other => panic!("unknown op {other}"),
        }
    }

    fn apply(&self, ring: &Ring) -> Result<(Ring, RingDiff), PlacementError> {
        match *self {
            Op::Join(node) => ring.join(node),
            Op::Leave(node) => ring.leave(node),
            Op::Replace(old, new) => ring.replace(old, new),
        }
    }
}

fn loads(ring: &Ring) -> String {
    ring.balance_report()
        .nodes
        .iter()
        .map(|(node, load)| format!("{node}:{}/{}", load.replicas, load.primaries))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run a table. Rows are `op | moves | loads`; the first row is `new <members>`
/// with moves `0`; a refused operation has `refused` and the error text instead.
/// Returns the table as it ran, with the minimum and coordinator changes added.
fn run_table(partition_count: u32, replicas_n: u8, table: &str) -> String {
    let mut rows = table
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("op "));
    let mut printed = String::new();
    let _ = writeln!(
        printed,
        "{partition_count} partitions, n={replicas_n}\n{:<14} {:>5} {:>7} {:>12}  node:replicas/primaries",
        "op", "moves", "minimum", "coordinators"
    );
    let first = rows.next().expect("a `new` row");
    let columns: Vec<&str> = first.split('|').map(str::trim).collect();
    let members = columns[0]
        .strip_prefix("new")
        .expect("first row is `new`")
        .split_whitespace()
        .map(|n| n.parse::<NodeId>().expect("node id"));
    let mut ring = Ring::new(partition_count, replicas_n, members).expect("first ring");
    assert_eq!(loads(&ring), columns[2], "row `{first}`");
    let _ = writeln!(
        printed,
        "{:<14} {:>5} {:>7} {:>12}  {}",
        columns[0],
        0,
        0,
        "-",
        loads(&ring)
    );
    for row in rows {
        let columns: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(columns.len(), 3, "row `{row}` needs op | moves | loads");
        let op = Op::parse(columns[0]);
        if columns[1] == "refused" {
            let err = op.apply(&ring).expect_err(row);
            assert_eq!(err.to_string(), columns[2], "row `{row}`");
            let _ = writeln!(printed, "{:<14} refused: {err}", columns[0]);
            continue;
        }
        let expected_moves: usize = columns[1].parse().expect("moves");
        let minimum = minimum_moves(&ring, &op);
        let (next, diff) = op.apply(&ring).expect(row);
        assert_eq!(
            minimum, expected_moves,
            "row `{row}`: hand-computed minimum"
        );
        assert_eq!(diff.moves.len(), expected_moves, "row `{row}`: moves");
        assert_eq!(loads(&next), columns[2], "row `{row}`: loads after");
        assert_eq!(next.version(), ring.version() + 1);
        check_invariants(&next);
        let _ = writeln!(
            printed,
            "{:<14} {:>5} {:>7} {:>12}  {}",
            columns[0],
            diff.moves.len(),
            minimum,
            diff.coordinator_changes.len(),
            loads(&next)
        );
        ring = next;
    }
    printed
}

fn check_invariants(ring: &Ring) {
    ring.validate().expect("well formed");
    let report = ring.balance_report();
    assert!(
        report.loads_balanced(),
        "loads out of floor/ceil:\n{report}"
    );
    assert!(
        report.primaries_balanced(),
        "primaries out of floor/ceil:\n{report}"
    );
    for partition in 0..ring.partition_count() {
        let list = ring.preference_list(partition);
        let distinct: BTreeSet<&NodeId> = list.iter().collect();
        assert_eq!(distinct.len(), usize::from(ring.replicas_n()));
        assert!(list.iter().all(|node| ring.is_member(*node)));
    }
}

// 256 partitions × n=3 = 768 replicas.
//   3 nodes: 768/3 = 256 each (every node holds every partition).
//   join 4: 768/4 = 192 each; the joiner must receive 192, so 192 moves.
//   join 5: 768/5 = 153.6; the joiner receives the floor, 153. The donors level
//           from the top, lowest id first among equals: 38 rounds of 1,2,3,4 bring
//           each to 154, the 153rd move comes from node 1.
//   leave 5: its 153 replicas go; 615 + 153 = 768 = 4 × 192.
//   leave 4: its 192 replicas go; back to 256 each.
// Primaries: 256/3 = 85.3, 256/4 = 64, 256/5 = 51.2.
const GROW_AND_SHRINK: &str = "
    op          | moves | node:replicas/primaries after
    new 1 2 3   |     0 | 1:256/86 2:256/85 3:256/85
    join 4      |   192 | 1:192/64 2:192/64 3:192/64 4:192/64
    join 5      |   153 | 1:153/51 2:154/51 3:154/51 4:154/51 5:153/52
    leave 5     |   153 | 1:192/64 2:192/64 3:192/64 4:192/64
    leave 4     |   192 | 1:256/85 2:256/85 3:256/86
";

#[test]
fn placement_three_to_five_and_back_moves_the_minimum() {
    let printed = run_table(256, 3, GROW_AND_SHRINK);
    eprintln!("{printed}");
}

// n=1, 8 partitions, from one node: 8 → 4+4 → 3+3+2 → 2+2+2+2; then leaves. With
// n=1 a replica is its partition's coordinator, so primaries equal replicas.
//   leave 1: its 2 go to the least loaded, lowest id first: 2 then 3.
//   leave 2: 3 replicas onto 3:3 4:2 → 4 gets one, then 3 (tie, lower id), then 4.
const SINGLE_REPLICA: &str = "
    op          | moves | node:replicas/primaries after
    new 1       |     0 | 1:8/8
    join 2      |     4 | 1:4/4 2:4/4
    join 3      |     2 | 1:3/3 2:3/3 3:2/2
    join 4      |     2 | 1:2/2 2:2/2 3:2/2 4:2/2
    leave 1     |     2 | 2:3/3 3:3/3 4:2/2
    leave 2     |     3 | 3:4/4 4:4/4
    leave 3     |     4 | 4:8/8
    leave 4     | refused | cannot remove node 4: 0 members would be left for 1 replicas
    join 4      | refused | cannot join node 4: it is already a member
";

#[test]
fn placement_single_replica_from_one_node() {
    eprintln!("{}", run_table(8, 1, SINGLE_REPLICA));
}

// More members than replicas to go round: 8 partitions, n=1, 10 nodes → 8 hold one,
// the last two joiners (9, 10) hold none; an 11th joins with no move at all.
const MORE_NODES_THAN_PARTITIONS: &str = "
    op                      | moves | node:replicas/primaries after
    new 1 2 3 4 5 6 7 8 9 10 |    0 | 1:1/1 2:1/1 3:1/1 4:1/1 5:1/1 6:1/1 7:1/1 8:1/1 9:0/0 10:0/0
    join 11                 |     0 | 1:1/1 2:1/1 3:1/1 4:1/1 5:1/1 6:1/1 7:1/1 8:1/1 9:0/0 10:0/0 11:0/0
    leave 3                 |     1 | 1:1/1 2:1/1 4:1/1 5:1/1 6:1/1 7:1/1 8:1/1 9:1/1 10:0/0 11:0/0
    replace 9 12            |     1 | 1:1/1 2:1/1 4:1/1 5:1/1 6:1/1 7:1/1 8:1/1 10:0/0 11:0/0 12:1/1
";

#[test]
fn placement_more_nodes_than_partitions() {
    eprintln!("{}", run_table(8, 1, MORE_NODES_THAN_PARTITIONS));
}

// n=5 on exactly 5 nodes: every node holds all 256 partitions. 1280 replicas / 6 =
// 213.3: the joiner receives 213; levelling 256 → 214 takes 42 from each (210),
// the last 3 come from nodes 1, 2, 3. Leaving again forces everything back.
const FIVE_REPLICAS_ON_FIVE_NODES: &str = "
    op          | moves | node:replicas/primaries after
    new 1 2 3 4 5 |   0 | 1:256/52 2:256/51 3:256/51 4:256/51 5:256/51
    leave 1     | refused | cannot remove node 1: 4 members would be left for 5 replicas
    join 6      |   213 | 1:213/43 2:213/42 3:213/42 4:214/43 5:214/43 6:213/43
    leave 6     |   213 | 1:256/52 2:256/51 3:256/51 4:256/51 5:256/51
    replace 3 9 |   256 | 1:256/52 2:256/51 4:256/51 5:256/51 9:256/51
";

#[test]
fn placement_five_replicas_on_five_nodes() {
    eprintln!("{}", run_table(256, 5, FIVE_REPLICAS_ON_FIVE_NODES));
}

// The largest partition count: 16384 × 3 = 49152 replicas; 49152/4 = 12288.
const ONE_PARTITION_PER_SLOT: &str = "
    op          | moves | node:replicas/primaries after
    new 1 2 3   |     0 | 1:16384/5462 2:16384/5461 3:16384/5461
    join 4      | 12288 | 1:12288/4096 2:12288/4096 3:12288/4096 4:12288/4096
    leave 2     | 12288 | 1:16384/5462 3:16384/5461 4:16384/5461
";

#[test]
fn placement_one_partition_per_slot() {
    eprintln!("{}", run_table(16384, 3, ONE_PARTITION_PER_SLOT));
}

#[test]
fn placement_too_few_members_for_n_is_refused() {
    let err = Ring::new(256, 2, [1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot build ring: 1 members cannot hold 2 distinct replicas"
    );
}

/// How many of `leaver`'s replicas can move to members that neither hold the
/// partition already nor go above `ceil`: a maximum matching, by augmenting paths
/// (Kuhn's algorithm over one slot per unit of room).
fn placeable_under_ceiling(ring: &Ring, leaver: NodeId, ceil: usize) -> usize {
    let slots: Vec<NodeId> = ring
        .members()
        .iter()
        .filter(|n| **n != leaver)
        .flat_map(|n| std::iter::repeat_n(*n, ceil.saturating_sub(ring.load(*n))))
        .collect();
    let items: Vec<Vec<usize>> = ring
        .partitions_of(leaver)
        .map(|p| {
            let owners = ring.preference_list(p);
            (0..slots.len())
                .filter(|s| !owners.contains(&slots[*s]))
                .collect()
        })
        .collect();
    let mut slot_item: Vec<Option<usize>> = vec![None; slots.len()];
    (0..items.len())
        .filter(|item| {
            let mut seen = vec![false; slots.len()];
            augment(*item, &items, &mut slot_item, &mut seen)
        })
        .count()
}

fn augment(
    item: usize,
    items: &[Vec<usize>],
    slot_item: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for &slot in &items[item] {
        if std::mem::replace(&mut seen[slot], true) {
            continue;
        }
        let free = match slot_item[slot] {
            None => true,
            Some(other) => augment(other, items, slot_item, seen),
        };
        if free {
            slot_item[slot] = Some(item);
            return true;
        }
    }
    false
}

/// Apply `op` and check everything an operation promises.
fn apply_checked(ring: &Ring, op: Op) -> Ring {
    let minimum = minimum_moves(ring, &op);
    let (next, diff) = op.apply(ring).expect("valid op");
    check_invariants(&next);
    assert_eq!(next.version(), ring.version() + 1);
    assert_eq!(
        (diff.version_from, diff.version_to),
        (ring.version(), next.version())
    );
    match op {
        Op::Leave(node) => {
            // The leaver's replicas all move, first. More moves only when no placement
            // of them alone balances the ring: at most one per missing replica of a
            // member short of the new floor (it may hold every partition they could
            // bring it), plus one per replica of the leaver that no member under the
            // new ceiling can take (each such member already holds that partition).
            let held = ring.load(node);
            assert!(diff.moves[..held].iter().all(|m| m.from == node));
            let extra = &diff.moves[held..];
            let report = next.balance_report();
            let deficit: usize = next
                .members()
                .iter()
                .map(|n| report.load_floor.saturating_sub(ring.load(*n)))
                .sum();
            let homeless = held - placeable_under_ceiling(ring, node, report.load_ceil);
            assert!(
                extra.len() <= deficit + homeless,
                "{op:?}: {} extra moves, {deficit} short of the floor, {homeless} homeless",
                extra.len()
            );
            assert!(extra.iter().all(|m| m.from != node));
        }
        _ => assert_eq!(diff.moves.len(), minimum, "{op:?}: not the minimum"),
    }
    match op {
        Op::Join(node) => {
            assert_eq!(diff.moves.len(), next.load(node), "{op:?}");
            assert!(diff.moves.iter().all(|m| m.to == node));
        }
        Op::Leave(node) => assert!(!next.is_member(node)),
        Op::Replace(old, new) => {
            for partition in 0..ring.partition_count() {
                let expected: Vec<NodeId> = ring
                    .preference_list(partition)
                    .iter()
                    .map(|n| if *n == old { new } else { *n })
                    .collect();
                assert_eq!(next.preference_list(partition), expected.as_slice());
            }
        }
    }
    // The moves explain every change of owner set; a partition no move touched
    // keeps its owners, and its order too unless its coordinator changed (reordered
    // to balance coordinators, listed in the diff).
    let touched: BTreeSet<u32> = diff.moves.iter().map(|m| m.partition).collect();
    let mut sets: Vec<BTreeSet<NodeId>> = (0..ring.partition_count())
        .map(|p| ring.preference_list(p).iter().copied().collect())
        .collect();
    for m in &diff.moves {
        let set = &mut sets[m.partition as usize];
        assert!(set.remove(&m.from), "{m:?}: from does not hold it");
        assert!(set.insert(m.to), "{m:?}: to already holds it");
    }
    for partition in 0..ring.partition_count() {
        let after: BTreeSet<NodeId> = next.preference_list(partition).iter().copied().collect();
        assert_eq!(sets[partition as usize], after, "partition {partition}");
        let (before, after) = (
            ring.preference_list(partition),
            next.preference_list(partition),
        );
        let listed = diff
            .coordinator_changes
            .iter()
            .find(|c| c.partition == partition);
        assert_eq!(
            listed.map(|c| (c.from, c.to)),
            (before[0] != after[0]).then_some((before[0], after[0])),
            "partition {partition}: coordinator change not listed exactly"
        );
        if !touched.contains(&partition) && listed.is_none() {
            assert_eq!(after, before, "partition {partition} reordered silently");
        }
    }
    next
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn placement_random_membership_changes_keep_every_invariant(
        partition_count in prop::sample::select(vec![8u32, 16, 64, 256]),
        replicas_n in 1u8..=4,
        extra_members in 0usize..=8,
        ids in prop::collection::btree_set(1u32..10_000, 40),
        steps in prop::collection::vec((0u8..3, any::<u16>()), 1..12),
    ) {
        let mut fresh = ids.into_iter();
        let initial: Vec<NodeId> =
            fresh.by_ref().take(usize::from(replicas_n) + extra_members).collect();
        let mut ring = Ring::new(partition_count, replicas_n, initial.iter().copied()).unwrap();
        // Built from the same members in another order: must be the same ring, and
        // stay the same under the same operations.
        let mut twin = Ring::new(partition_count, replicas_n, initial.iter().rev().copied()).unwrap();
        prop_assert_eq!(&ring, &twin);
        check_invariants(&ring);
        for (kind, pick) in steps {
            let members: Vec<NodeId> = ring.members().iter().copied().collect();
            let chosen = members[usize::from(pick) % members.len()];
            let op = match kind {
                1 if members.len() > usize::from(replicas_n) => Op::Leave(chosen),
                2 => Op::Replace(chosen, fresh.next().unwrap()),
                _ => Op::Join(fresh.next().unwrap()),
            };
            ring = apply_checked(&ring, op);
            twin = op.apply(&twin).unwrap().0;
            prop_assert_eq!(&ring, &twin);
        }
    }
}

/// Found by CI's random search: 8 partitions, n=4, 12 members, three at the floor.
/// Node 3 leaves; every member under the new ceiling already holds partition 1, so
/// its replica goes above the ceiling and one levelling move follows.
#[test]
fn placement_leave_with_a_homeless_replica_levels_once() {
    let mut ring = Ring::new(8, 4, 1..=11).unwrap();
    for op in [Op::Join(12), Op::Join(13), Op::Leave(13)] {
        ring = apply_checked(&ring, op);
    }
    assert_eq!(placeable_under_ceiling(&ring, 3, 3), 1);
    let next = apply_checked(&ring, Op::Leave(3));
    let (_, diff) = Op::Leave(3).apply(&ring).unwrap();
    assert_eq!(diff.moves.len(), 3);
    assert!(next.balance_report().load_ceil >= 3);
}
