//! The claim's working state: a ring being changed (`Layout`) and the
//! coordinator matching that keeps first-in-list counts balanced.

use super::*;
use crate::version::NodeId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A ring being changed: owners plus indexes of who holds what.
pub(super) struct Layout {
    pub(super) partition_count: u32,
    pub(super) replicas_n: usize,
    pub(super) owners: Vec<Vec<NodeId>>,
    /// Every member (even one holding nothing) → the partitions it holds.
    pub(super) held: BTreeMap<NodeId, BTreeSet<PartitionId>>,
    pub(super) primaries: BTreeMap<NodeId, usize>,
}

impl Layout {
    pub(super) fn of(ring: &Ring) -> Layout {
        let mut held: BTreeMap<NodeId, BTreeSet<PartitionId>> = ring
            .members
            .iter()
            .map(|node| (*node, BTreeSet::new()))
            .collect();
        let mut primaries: BTreeMap<NodeId, usize> =
            ring.members.iter().map(|node| (*node, 0)).collect();
        for (partition, list) in ring.owners.iter().enumerate() {
            for node in list {
                held.entry(*node)
                    .or_default()
                    .insert(partition as PartitionId);
            }
            if let Some(first) = list.first() {
                *primaries.entry(*first).or_default() += 1;
            }
        }
        Layout {
            partition_count: ring.partition_count,
            replicas_n: usize::from(ring.replicas_n),
            owners: ring.owners.clone(),
            held,
            primaries,
        }
    }

    pub(super) fn load(&self, node: NodeId) -> usize {
        self.held.get(&node).map_or(0, BTreeSet::len)
    }

    pub(super) fn primary_count(&self, node: NodeId) -> usize {
        self.primaries.get(&node).copied().unwrap_or(0)
    }

    pub(super) fn holds(&self, node: NodeId, partition: PartitionId) -> bool {
        self.held
            .get(&node)
            .is_some_and(|set| set.contains(&partition))
    }

    pub(super) fn position(&self, partition: PartitionId, node: NodeId) -> Option<usize> {
        self.owners
            .get(partition as usize)?
            .iter()
            .position(|n| *n == node)
    }

    pub(super) fn add_member(&mut self, node: NodeId) {
        self.held.entry(node).or_default();
        self.primaries.entry(node).or_default();
    }

    /// Give `from`'s replica of `partition` to `to`, in the same list position.
    pub(super) fn hand_over(
        &mut self,
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
    ) -> ReplicaMove {
        let position = self.position(partition, from);
        debug_assert!(position.is_some(), "{from} does not hold {partition}");
        debug_assert!(!self.holds(to, partition), "{to} already holds {partition}");
        if let (Some(position), Some(list)) = (position, self.owners.get_mut(partition as usize)) {
            list[position] = to;
            if position == 0 {
                if let Some(count) = self.primaries.get_mut(&from) {
                    *count -= 1;
                }
                *self.primaries.entry(to).or_default() += 1;
            }
        }
        if let Some(set) = self.held.get_mut(&from) {
            set.remove(&partition);
        }
        self.held.entry(to).or_default().insert(partition);
        ReplicaMove {
            partition,
            from,
            to,
        }
    }

    pub(super) fn totals(&self) -> (usize, usize) {
        (
            self.partition_count as usize * self.replicas_n,
            self.held.len(),
        )
    }

    /// The most loaded member other than `except`, lowest id among equals.
    pub(super) fn most_loaded_except(&self, except: NodeId) -> Option<(NodeId, usize)> {
        self.held
            .iter()
            .filter(|(node, _)| **node != except)
            .map(|(node, set)| (*node, set.len()))
            .max_by_key(|(node, load)| (*load, Reverse(*node)))
    }

    pub(super) fn join(&mut self, joiner: NodeId) -> Vec<ReplicaMove> {
        self.add_member(joiner);
        let (replicas_total, members) = self.totals();
        let (load_floor, load_ceil) = floor_ceil(replicas_total, members);
        let (primary_floor, primary_ceil) = floor_ceil(self.partition_count as usize, members);
        let mut moves = Vec::with_capacity(load_floor);
        loop {
            let joiner_load = self.load(joiner);
            let Some((donor, donor_load)) = self.most_loaded_except(joiner) else {
                break;
            };
            if joiner_load >= load_floor && donor_load <= load_ceil {
                break;
            }
            // On a ring that was balanced this never triggers; on any other it stops
            // a move that would not narrow the spread.
            if donor_load <= joiner_load + 1 {
                break;
            }
            let want_primary = self.primary_count(donor) > primary_floor
                && self.primary_count(joiner) < primary_ceil;
            // Spread what the joiner takes over the whole partition range.
            let start = (joiner_load * self.partition_count as usize / load_floor.max(1))
                % self.partition_count as usize;
            let Some(partition) = self.pick(donor, joiner, want_primary, start as PartitionId)
            else {
                break;
            };
            moves.push(self.hand_over(partition, donor, joiner));
        }
        moves
    }

    /// A partition `donor` holds and `joiner` does not, scanning from `start` and
    /// wrapping; one where the donor is coordinator if `want_primary`, else one where
    /// it is not, if there is such a partition.
    pub(super) fn pick(
        &self,
        donor: NodeId,
        joiner: NodeId,
        want_primary: bool,
        start: PartitionId,
    ) -> Option<PartitionId> {
        let set = self.held.get(&donor)?;
        let mut fallback = None;
        for &partition in set.range(start..).chain(set.range(..start)) {
            if self.holds(joiner, partition) {
                continue;
            }
            let donor_is_primary = self.position(partition, donor) == Some(0);
            if donor_is_primary == want_primary {
                return Some(partition);
            }
            fallback.get_or_insert(partition);
        }
        fallback
    }

    pub(super) fn leave(&mut self, leaver: NodeId) -> Vec<ReplicaMove> {
        let items: Vec<PartitionId> = self
            .held
            .remove(&leaver)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default();
        self.primaries.remove(&leaver);
        let (replicas_total, members) = self.totals();
        let (load_floor, load_ceil) = floor_ceil(replicas_total, members);
        let current: BTreeMap<NodeId, usize> =
            self.held.iter().map(|(n, set)| (*n, set.len())).collect();
        let bounds: BTreeMap<NodeId, (usize, usize)> = current
            .iter()
            .map(|(node, load)| {
                (
                    *node,
                    (
                        load_floor.saturating_sub(*load),
                        load_ceil.saturating_sub(*load),
                    ),
                )
            })
            .collect();
        let eligible: Vec<Vec<NodeId>> = items
            .iter()
            .map(|partition| {
                let list = self.owners.get(*partition as usize);
                self.held
                    .keys()
                    .copied()
                    .filter(|node| list.is_none_or(|l| !l.contains(node)))
                    .collect()
            })
            .collect();
        let mut matching = Matching {
            eligible,
            bounds,
            assigned: vec![None; items.len()],
            received: current.keys().map(|node| (*node, 0)).collect(),
        };
        // Greedy: each replica to the least loaded eligible member with room.
        for item in 0..items.len() {
            let choice = matching.eligible[item]
                .iter()
                .copied()
                .filter(|node| matching.has_room(*node))
                .min_by_key(|node| {
                    (
                        current.get(node).copied().unwrap_or(0) + matching.received(*node),
                        *node,
                    )
                });
            if let Some(node) = choice {
                matching.assign(item, node);
            }
        }
        // Repair what the greedy order got wrong, moving only the leaver's replicas.
        for item in 0..items.len() {
            if matching.assigned[item].is_none() && !matching.augment_upper(item) {
                // No balanced home exists (the ring was unbalanced before): least
                // loaded eligible member, ignoring the ceiling.
                let choice = matching.eligible[item].iter().copied().min_by_key(|node| {
                    (
                        current.get(node).copied().unwrap_or(0) + matching.received(*node),
                        *node,
                    )
                });
                if let Some(node) = choice {
                    matching.assign(item, node);
                }
            }
        }
        let nodes: Vec<NodeId> = current.keys().copied().collect();
        for node in nodes {
            while matching.received(node) < matching.lower(node) {
                if !matching.augment_lower(node) {
                    break;
                }
            }
        }
        let mut moves = Vec::with_capacity(items.len());
        for (item, partition) in items.iter().enumerate() {
            match matching.assigned[item] {
                Some(to) => moves.push(self.hand_over(*partition, leaver, to)),
                // Only when fewer than n members would remain, which `Ring::leave`
                // refuses before getting here.
                None => debug_assert!(false, "no member can take partition {partition}"),
            }
        }
        self.level(&mut moves);
        moves
    }

    /// Move replicas from the most loaded member to the least loaded one until no
    /// two members differ by more than one. After a leave this runs only when no
    /// placement of the leaver's replicas alone can balance the ring: a member short
    /// of the floor already holds every partition the leaver had (possible when a
    /// member holds only a few replicas, e.g. 8 partitions on 12 nodes).
    pub(super) fn level(&mut self, moves: &mut Vec<ReplicaMove>) {
        while let Some((short, short_load)) = self.least_loaded() {
            let Some((full, full_load)) = self.most_loaded_except(short) else {
                break;
            };
            if full_load <= short_load + 1 {
                break;
            }
            // `full` holds more partitions than `short`, so one of them is new to it.
            let Some(partition) = self.pick(full, short, false, 0) else {
                break;
            };
            moves.push(self.hand_over(partition, full, short));
        }
    }

    /// The least loaded member, lowest id among equals.
    pub(super) fn least_loaded(&self) -> Option<(NodeId, usize)> {
        self.held
            .iter()
            .map(|(node, set)| (*node, set.len()))
            .min_by_key(|(node, load)| (*load, *node))
    }

    pub(super) fn replace(&mut self, old: NodeId, new: NodeId) -> Vec<ReplicaMove> {
        self.add_member(new);
        let partitions: Vec<PartitionId> = self
            .held
            .get(&old)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let moves = partitions
            .into_iter()
            .map(|partition| self.hand_over(partition, old, new))
            .collect();
        self.held.remove(&old);
        self.primaries.remove(&old);
        moves
    }

    /// Bring every member's coordinator count to the floor or ceiling of
    /// `partition_count / members` by reordering preference lists: a coordinator
    /// hands its place to another owner of the same partition, along a chain of
    /// partitions when no single swap helps. Moves no replica. Searches the
    /// partitions the operation `touched` first, and all partitions only if those
    /// cannot reach the floor and ceiling. Stops when no chain exists.
    pub(super) fn balance_primaries(&mut self, touched: BTreeSet<PartitionId>) {
        let (floor, ceil) = floor_ceil(self.partition_count as usize, self.held.len());
        for scope in [Some(&touched), None] {
            // Each shift lowers one member above the ceiling (or raises one below the
            // floor) by one and pushes no other member past a bound, so this ends.
            loop {
                let over = self
                    .primaries
                    .iter()
                    .find(|(_, count)| **count > ceil)
                    .map(|(node, _)| *node);
                if let Some(node) = over {
                    if self.shift_primary(node, true, |count| count < ceil, scope) {
                        continue;
                    }
                }
                let under = self
                    .primaries
                    .iter()
                    .find(|(_, count)| **count < floor)
                    .map(|(node, _)| *node);
                if let Some(node) = under {
                    if self.shift_primary(node, false, |count| count > floor, scope) {
                        continue;
                    }
                }
                break;
            }
        }
    }

    /// Breadth first from `start` over "`x` coordinates a partition `y` also owns"
    /// (`away`: `start` gives a coordinatorship away) or its reverse (`start` gains
    /// one), within `scope` (all partitions when `None`). At the first member whose
    /// coordinator count passes `accept`, shift along the path found and return true.
    pub(super) fn shift_primary(
        &mut self,
        start: NodeId,
        away: bool,
        accept: impl Fn(usize) -> bool,
        scope: Option<&BTreeSet<PartitionId>>,
    ) -> bool {
        // For each member reached: (partition, the member there that becomes its
        // coordinator, the member reached before).
        let mut parent: BTreeMap<NodeId, (PartitionId, NodeId, NodeId)> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut visited = BTreeSet::from([start]);
        while let Some(node) = queue.pop_front() {
            let Some(partitions) = self.held.get(&node) else {
                continue;
            };
            for &partition in partitions {
                if scope.is_some_and(|s| !s.contains(&partition)) {
                    continue;
                }
                let Some(list) = self.owners.get(partition as usize) else {
                    continue;
                };
                let Some(&first) = list.first() else {
                    continue;
                };
                // away: `node` coordinates here and hands over to another owner.
                // toward: `node` owns it and takes over from its coordinator.
                let next: Vec<(NodeId, NodeId)> = match (away, first == node) {
                    (true, true) => list[1..].iter().map(|other| (*other, *other)).collect(),
                    (false, false) => vec![(first, node)],
                    _ => continue,
                };
                for (reached, new_first) in next {
                    if !visited.insert(reached) {
                        continue;
                    }
                    parent.insert(reached, (partition, new_first, node));
                    if accept(self.primary_count(reached)) {
                        let mut at = reached;
                        while let Some(&(partition, new_first, before)) = parent.get(&at) {
                            self.promote(partition, new_first);
                            if before == start {
                                return true;
                            }
                            at = before;
                        }
                        return false;
                    }
                    queue.push_back(reached);
                }
            }
        }
        false
    }

    /// Make `node` the coordinator of `partition` by swapping it with the current
    /// one.
    pub(super) fn promote(&mut self, partition: PartitionId, node: NodeId) {
        let Some(position) = self.position(partition, node) else {
            return;
        };
        let Some(list) = self.owners.get_mut(partition as usize) else {
            return;
        };
        let previous = list[0];
        list.swap(0, position);
        if previous != node {
            if let Some(count) = self.primaries.get_mut(&previous) {
                *count -= 1;
            }
            *self.primaries.entry(node).or_default() += 1;
        }
    }
}

/// Which member receives each of a leaving node's replicas: a bipartite assignment
/// where member `i` must receive between `bounds[i].0` and `bounds[i].1` replicas and
/// replica `j` may go only to `eligible[j]` (members not holding its partition).
pub(super) struct Matching {
    pub(super) eligible: Vec<Vec<NodeId>>,
    /// Per member: (fewest, most) replicas it should receive.
    pub(super) bounds: BTreeMap<NodeId, (usize, usize)>,
    pub(super) assigned: Vec<Option<NodeId>>,
    pub(super) received: BTreeMap<NodeId, usize>,
}

impl Matching {
    pub(super) fn received(&self, node: NodeId) -> usize {
        self.received.get(&node).copied().unwrap_or(0)
    }

    pub(super) fn lower(&self, node: NodeId) -> usize {
        self.bounds.get(&node).map_or(0, |b| b.0)
    }

    pub(super) fn has_room(&self, node: NodeId) -> bool {
        self.received(node) < self.bounds.get(&node).map_or(0, |b| b.1)
    }

    pub(super) fn assign(&mut self, item: usize, node: NodeId) {
        if let Some(previous) = self.assigned[item].replace(node) {
            if let Some(count) = self.received.get_mut(&previous) {
                *count -= 1;
            }
        }
        *self.received.entry(node).or_default() += 1;
    }

    /// Place unassigned `item` by shifting assigned items along a path of full
    /// members to one with room. Breadth first, members in id order.
    pub(super) fn augment_upper(&mut self, item: usize) -> bool {
        // For each member reached: the item that would move onto it.
        let mut reached_by: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([item]);
        while let Some(current) = queue.pop_front() {
            for &node in &self.eligible[current] {
                if reached_by.contains_key(&node) {
                    continue;
                }
                reached_by.insert(node, current);
                if self.has_room(node) {
                    // Walk back: each item moves onto the member that reached it.
                    let mut target = node;
                    loop {
                        let Some(&moving) = reached_by.get(&target) else {
                            return false;
                        };
                        let previous = self.assigned[moving];
                        self.assign(moving, target);
                        match previous {
                            Some(p) => target = p,
                            None => return true,
                        }
                    }
                }
                for (other, assigned) in self.assigned.iter().enumerate() {
                    if *assigned == Some(node) {
                        queue.push_back(other);
                    }
                }
            }
        }
        false
    }

    /// Raise `short` by one received replica, taking it along a path that ends at a
    /// member receiving more than its minimum. Breadth first, items in order.
    pub(super) fn augment_lower(&mut self, short: NodeId) -> bool {
        // For each member reached: (item it would give, member that item goes to).
        let mut gives: BTreeMap<NodeId, (usize, NodeId)> = BTreeMap::new();
        let mut queue = VecDeque::from([short]);
        let mut visited = BTreeSet::from([short]);
        while let Some(taker) = queue.pop_front() {
            for item in 0..self.assigned.len() {
                let Some(holder) = self.assigned[item] else {
                    continue;
                };
                if visited.contains(&holder) || !self.eligible[item].contains(&taker) {
                    continue;
                }
                visited.insert(holder);
                gives.insert(holder, (item, taker));
                if self.received(holder) > self.lower(holder) {
                    let mut giver = holder;
                    while let Some(&(moving, to)) = gives.get(&giver) {
                        self.assign(moving, to);
                        if to == short {
                            return true;
                        }
                        giver = to;
                    }
                    return false;
                }
                queue.push_back(holder);
            }
        }
        false
    }
}
