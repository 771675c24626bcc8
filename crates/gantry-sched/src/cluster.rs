//! The nodes during one plan: what each has free, the ordered index that
//! finds the fullest (or emptiest) node that fits without looking at every
//! node, node attributes as interned columns, and the checks that say
//! whether a node may take a job's allocation and why not.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::{Alloc, AttributeTest, Constraint, Eligibility, Node, PortAsk, Resources, Strategy};
use crate::plan::Blocked;

pub(crate) type NodeIx = u32;

/// A node's place in an index: its free amount of the index's first
/// dimension, of the other, a tiebreak that differs per node, the node.
/// Ascending order is fullest first in the first dimension.
pub(crate) type Key = (u64, u64, u64, NodeIx);

/// Which resource an index orders by first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dimension {
    Memory = 0,
    Cpu = 1,
}

const NONE: u32 = u32::MAX;

pub(crate) struct Cluster<'a> {
    pub nodes: Vec<&'a Node>,
    /// What allocations use on each node (not counting `reserved`).
    used: Vec<Resources>,
    /// Ports taken on each node, its own and its allocations', sorted
    /// (a few per node: a sorted vector beats a tree for size and speed).
    ports: Vec<Vec<u16>>,
    tiebreak: Vec<u64>,
    columns: Vec<Column<'a>>,
    column_of: FastMap<String, usize>,
    /// Indexes of the placeable nodes, each split into groups by the
    /// values of some attributes; the first splits by none.
    partitions: Vec<Partition>,
    /// What the placeable nodes offer and have in use in all (reserved
    /// included), to tell the scarcer resource.
    offered: Resources,
    in_use: Resources,
}

/// One attribute's values on every node, interned.
struct Column<'a> {
    values: Vec<&'a str>,
    /// The value's number per node; `NONE` where the node lacks it.
    of_node: Vec<u32>,
}

/// The placeable nodes grouped by the values of `columns`, each group an
/// ordered index.
pub(crate) struct Partition {
    columns: Vec<usize>,
    group_of: Vec<u32>,
    pub groups: Vec<Group>,
}

pub(crate) struct Group {
    /// The value number of each of the partition's columns (`NONE`: the
    /// nodes lack the attribute).
    pub values: Vec<u32>,
    members: Vec<NodeIx>,
    /// The group's nodes ordered by free memory first, and by free CPU
    /// first (by [`Dimension`]), each built when a placement first needs
    /// it: a plan that never walks one does not pay for it.
    indexes: [Option<BTreeSet<Key>>; 2],
}

/// A node chosen for an allocation.
pub(crate) struct Choice {
    pub node: NodeIx,
    pub score: f64,
    /// How many nodes that fit were scored.
    pub scored: u32,
}

/// What a job may use, fixed for the job's turn: whether each node passes
/// the job's constraints (and is placeable), and how many do.
pub(crate) struct Feasible {
    pub pass: Vec<bool>,
    pub count: u32,
}

impl<'a> Cluster<'a> {
    /// `nodes` sorted by id without duplicates; `allocs` the live ones.
    /// Also returns each allocation's node (`None`: not a known node).
    pub fn new(nodes: Vec<&'a Node>, allocs: &[&Alloc]) -> (Cluster<'a>, Vec<Option<NodeIx>>) {
        let by_id: FastMap<&str, NodeIx> =
            nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i as NodeIx)).collect();
        let mut used = vec![Resources::ZERO; nodes.len()];
        let mut ports: Vec<Vec<u16>> = nodes.iter().map(|n| n.used_ports.iter().copied().collect()).collect();
        let homes = allocs
            .iter()
            .map(|alloc| {
                let n = by_id.get(alloc.node.as_str()).copied()?;
                used[n as usize] = used[n as usize] + alloc.resources;
                take_port(&mut ports[n as usize], alloc.port);
                Some(n)
            })
            .collect();
        // A fixed permutation of the nodes (a bijective mix of their
        // position), so that ties do not always go to the first ids.
        let tiebreak = (0..nodes.len() as u64).map(mix).collect();
        let mut cluster = Cluster {
            nodes,
            used,
            ports,
            tiebreak,
            columns: Vec::new(),
            column_of: FastMap::default(),
            partitions: Vec::new(),
            offered: Resources::ZERO,
            in_use: Resources::ZERO,
        };
        for n in 0..cluster.nodes.len() as NodeIx {
            if !cluster.placeable(n) {
                continue;
            }
            let node = cluster.nodes[n as usize];
            cluster.offered = cluster.offered + node.allocatable;
            cluster.in_use = cluster.in_use + node.reserved + cluster.used[n as usize];
        }
        cluster.partition(&[]);
        (cluster, homes)
    }

    /// Alive and eligible: may take new allocations.
    pub fn placeable(&self, n: NodeIx) -> bool {
        let node = self.nodes[n as usize];
        node.alive && node.eligibility == Eligibility::Eligible
    }

    pub fn free(&self, n: NodeIx) -> Resources {
        let node = self.nodes[n as usize];
        node.allocatable.saturating_sub(node.reserved + self.used[n as usize])
    }

    fn key(&self, n: NodeIx, first: Dimension) -> Key {
        let free = self.free(n);
        let tiebreak = self.tiebreak[n as usize];
        match first {
            Dimension::Memory => (free.memory_mb, free.cpu_milli, tiebreak, n),
            Dimension::Cpu => (free.cpu_milli, free.memory_mb, tiebreak, n),
        }
    }

    /// Takes `resources` and `port` on node `n`.
    pub fn reserve(&mut self, n: NodeIx, resources: Resources, port: u16) {
        self.update(n, |c| {
            c.used[n as usize] = c.used[n as usize] + resources;
            take_port(&mut c.ports[n as usize], port);
        });
    }

    /// Gives back what [`Cluster::reserve`] took.
    pub fn release(&mut self, n: NodeIx, resources: Resources, port: u16) {
        self.update(n, |c| {
            c.used[n as usize] = c.used[n as usize].saturating_sub(resources);
            let taken = &mut c.ports[n as usize];
            if !c.nodes[n as usize].used_ports.contains(&port)
                && let Ok(at) = taken.binary_search(&port)
            {
                taken.remove(at);
            }
        });
    }

    fn update(&mut self, n: NodeIx, change: impl FnOnce(&mut Self)) {
        let before = (self.key(n, Dimension::Memory), self.key(n, Dimension::Cpu), self.used[n as usize]);
        change(self);
        let after = (self.key(n, Dimension::Memory), self.key(n, Dimension::Cpu), self.used[n as usize]);
        if self.placeable(n) {
            self.in_use = (self.in_use + after.2).saturating_sub(before.2);
        }
        for p in &mut self.partitions {
            let g = p.group_of[n as usize];
            if g != NONE {
                let [by_memory, by_cpu] = &mut p.groups[g as usize].indexes;
                for (index, before, after) in [(by_memory, before.0, after.0), (by_cpu, before.1, after.1)] {
                    if let Some(index) = index {
                        index.remove(&before);
                        index.insert(after);
                    }
                }
            }
        }
    }

    /// The resource the placeable nodes have the least of left, in
    /// proportion: the one to fit tightly first. Walking the index of the
    /// other one skips every node that is full in this one (measured:
    /// 25 µs a placement instead of 3 on a cluster whose CPU filled first).
    fn scarcer(&self) -> Dimension {
        let fraction = |used: u64, offered: u64| if offered == 0 { 1.0 } else { used as f64 / offered as f64 };
        if fraction(self.in_use.cpu_milli, self.offered.cpu_milli)
            > fraction(self.in_use.memory_mb, self.offered.memory_mb)
        {
            Dimension::Cpu
        } else {
            Dimension::Memory
        }
    }

    /// `need`'s share of what the placeable nodes offer in all: of CPU,
    /// of memory (0 where none is offered).
    pub fn shares(&self, need: Resources) -> (f64, f64) {
        let share = |need: u64, offered: u64| if offered == 0 { 0.0 } else { need as f64 / offered as f64 };
        (share(need.cpu_milli, self.offered.cpu_milli), share(need.memory_mb, self.offered.memory_mb))
    }

    /// The port an allocation of `ask` would get on node `n`, if one is free.
    pub fn port_for(&self, n: NodeIx, ask: PortAsk) -> Option<u16> {
        let taken = &self.ports[n as usize];
        match ask {
            PortAsk::Static(port) => taken.binary_search(&port).is_err().then_some(port),
            PortAsk::Dynamic { first, last } => {
                let mut next = first;
                for &port in &taken[taken.partition_point(|&p| p < first)..] {
                    if port != next || port > last {
                        break;
                    }
                    next = next.checked_add(1)?;
                }
                (next <= last).then_some(next)
            }
        }
    }

    /// The column of `attribute`, interned on first use.
    fn column(&mut self, attribute: &str) -> usize {
        if let Some(&c) = self.column_of.get(attribute) {
            return c;
        }
        let mut numbers: FastMap<&'a str, u32> = FastMap::default();
        let mut values = Vec::new();
        let of_node = self
            .nodes
            .iter()
            .map(|node| {
                let value = if attribute == "machine" {
                    Some(node.id.as_str())
                } else {
                    node.attributes.get(attribute).map(String::as_str)
                };
                value.map_or(NONE, |v| {
                    *numbers.entry(v).or_insert_with(|| {
                        values.push(v);
                        values.len() as u32 - 1
                    })
                })
            })
            .collect();
        self.columns.push(Column { values, of_node });
        self.column_of.insert(attribute.to_string(), self.columns.len() - 1);
        self.columns.len() - 1
    }

    /// The value of `attribute`'s column `c` on node `n` (`NONE` if it has none).
    fn value_of(&self, c: usize, n: NodeIx) -> u32 {
        self.columns[c].of_node[n as usize]
    }

    fn value_text(&self, c: usize, value: u32) -> &str {
        if value == NONE { "(none)" } else { self.columns[c].values[value as usize] }
    }

    /// Which nodes pass `test` on `attribute`: evaluated once per distinct
    /// value, not per node (a regex runs once per rack, not per machine).
    fn passing(&mut self, attribute: &str, test: &AttributeTest) -> Result<Vec<bool>, regex::Error> {
        let c = self.column(attribute);
        let column = &self.columns[c];
        let regex = match test {
            AttributeTest::Regex(pattern) => Some(regex::Regex::new(pattern)?),
            _ => None,
        };
        let by_value: Vec<bool> = column
            .values
            .iter()
            .map(|v| match test {
                AttributeTest::Equals(want) => v == want,
                AttributeTest::NotEquals(want) => v != want,
                AttributeTest::In(set) => set.iter().any(|s| s == v),
                AttributeTest::Regex(_) => regex.as_ref().is_some_and(|r| r.is_match(v)),
            })
            .collect();
        let missing = matches!(test, AttributeTest::NotEquals(_));
        Ok(column.of_node.iter().map(|&v| if v == NONE { missing } else { by_value[v as usize] }).collect())
    }

    /// The placeable nodes that pass every attribute constraint. A
    /// regular expression that does not compile (the spec checks them
    /// first) passes no node.
    pub fn feasible(&mut self, constraints: &[Constraint]) -> Feasible {
        let mut pass: Vec<bool> = (0..self.nodes.len() as NodeIx).map(|n| self.placeable(n)).collect();
        for constraint in constraints {
            if let Constraint::Attribute { attribute, test } = constraint {
                let ok = self.passing(attribute, test).unwrap_or_else(|_| vec![false; pass.len()]);
                pass.iter_mut().zip(ok).for_each(|(p, ok)| *p &= ok);
            }
        }
        let count = pass.iter().filter(|p| **p).count() as u32;
        Feasible { pass, count }
    }

    /// The partition of the placeable nodes by `attributes`' values (built
    /// on first use, then kept up to date with every change): its number.
    pub fn partition(&mut self, attributes: &[String]) -> usize {
        let columns: Vec<usize> = attributes.iter().map(|a| self.column(a)).collect();
        if let Some(p) = self.partitions.iter().position(|p| p.columns == columns) {
            return p;
        }
        let mut number: FastMap<Vec<u32>, u32> = FastMap::default();
        let mut dense: Vec<u32> = Vec::new();
        let mut groups: Vec<(Vec<u32>, Vec<NodeIx>)> = Vec::new();
        let mut group_of = vec![NONE; self.nodes.len()];
        let mut values = Vec::with_capacity(columns.len());
        for n in 0..self.nodes.len() as NodeIx {
            if !self.placeable(n) {
                continue;
            }
            values.clear();
            values.extend(columns.iter().map(|&c| self.value_of(c, n)));
            // One attribute or none (the usual cases): its value numbers
            // the group directly, without hashing.
            let found = match values.as_slice() {
                [] => dense.first().copied(),
                [v] => dense.get(v.wrapping_add(1) as usize).copied().filter(|&g| g != NONE),
                _ => number.get(&values).copied(),
            };
            let g = match found {
                Some(g) => g,
                None => {
                    let g = groups.len() as u32;
                    match values.as_slice() {
                        [] => dense.push(g),
                        [v] => {
                            let slot = v.wrapping_add(1) as usize;
                            if dense.len() <= slot {
                                dense.resize(slot + 1, NONE);
                            }
                            dense[slot] = g;
                        }
                        _ => {
                            number.insert(values.clone(), g);
                        }
                    }
                    groups.push((values.clone(), Vec::new()));
                    g
                }
            };
            group_of[n as usize] = g;
            groups[g as usize].1.push(n);
        }
        let groups =
            groups.into_iter().map(|(values, members)| Group { values, members, indexes: [None, None] }).collect();
        self.partitions.push(Partition { columns, group_of, groups });
        self.partitions.len() - 1
    }

    /// The value node `n` has for the `b`-th attribute of `partition`.
    pub fn partition_value(&self, partition: usize, b: usize, n: NodeIx) -> u32 {
        self.value_of(self.partitions[partition].columns[b], n)
    }

    pub fn partition_value_text(&self, partition: usize, b: usize, value: u32) -> &str {
        self.value_text(self.partitions[partition].columns[b], value)
    }

    /// Readies `partition`'s indexes for the next placements: those of
    /// the scarcer resource, which [`Cluster::select`] walks.
    pub fn prepare(&mut self, partition: usize) -> Dimension {
        let first = self.scarcer();
        let mut groups = std::mem::take(&mut self.partitions[partition].groups);
        for group in &mut groups {
            if group.indexes[first as usize].is_none() {
                // Built from sorted keys in bulk: a third of the time of
                // inserting 10,000 keys in node order.
                let mut keys: Vec<Key> = group.members.iter().map(|&n| self.key(n, first)).collect();
                keys.sort_unstable();
                group.indexes[first as usize] = Some(keys.into_iter().collect());
            }
        }
        self.partitions[partition].groups = groups;
        first
    }

    pub fn groups(&self, partition: usize) -> &[Group] {
        &self.partitions[partition].groups
    }

    /// The best node of group `g` of `partition` for an allocation needing
    /// `need`: among the nodes that fit, in the strategy's order (fullest
    /// first for binpack, emptiest first for spread), the first `limit`
    /// that `allowed` admits are scored and the best is chosen. `avoid` is
    /// taken only when no other node fits (a failed allocation's node).
    #[allow(clippy::too_many_arguments)]
    pub fn select(
        &self,
        partition: usize,
        g: usize,
        first: Dimension,
        need: Resources,
        port: PortAsk,
        strategy: Strategy,
        limit: u32,
        avoid: Option<NodeIx>,
        allowed: impl Fn(NodeIx) -> bool,
    ) -> Option<Choice> {
        let group = &self.partitions[partition].groups[g];
        let index = group.indexes[first as usize].as_ref().expect("Cluster::prepare built the index");
        let (from, other) = match first {
            Dimension::Memory => (need.memory_mb, need.cpu_milli),
            Dimension::Cpu => (need.cpu_milli, need.memory_mb),
        };
        let from: Key = (from, 0, 0, 0);
        let mut best: Option<Choice> = None;
        let mut best_rank = None;
        let mut fallback = None;
        let mut scored = 0;
        let mut visit = |&(_, free_other, _, n): &Key| -> bool {
            if free_other < other || !allowed(n) || self.port_for(n, port).is_none() {
                return false;
            }
            if avoid == Some(n) {
                fallback = Some(n);
                return false;
            }
            let score = self.score(n, need, strategy);
            // Binpack opens an empty node only when no node in use fits:
            // the balance in the score must not buy a new node.
            let rank = (strategy == Strategy::Spread || self.in_use_on(n), score);
            scored += 1;
            if best_rank
                .is_none_or(|(in_use, best): (bool, f64)| (rank.0 && !in_use) || (rank.0 == in_use && rank.1 > best))
            {
                best_rank = Some(rank);
                best = Some(Choice { node: n, score, scored: 0 });
            }
            scored >= limit
        };
        match strategy {
            Strategy::Binpack => {
                for key in index.range(from..) {
                    if visit(key) {
                        break;
                    }
                }
            }
            Strategy::Spread => {
                for key in index.range(from..).rev() {
                    if visit(key) {
                        break;
                    }
                }
            }
        }
        match (best, fallback) {
            (Some(b), _) => Some(Choice { scored, ..b }),
            (None, Some(n)) => Some(Choice { node: n, score: self.score(n, need, strategy), scored: 1 }),
            (None, None) => None,
        }
    }

    /// Whether anything runs on node `n` (allocations or static services).
    fn in_use_on(&self, n: NodeIx) -> bool {
        self.nodes[n as usize].reserved != Resources::ZERO || self.used[n as usize] != Resources::ZERO
    }

    /// The score of node `n` once `need` is placed on it, 0 to 1. With
    /// `f` the free fraction of each of CPU and memory, Nomad's fit is
    /// `(20 - 10^f_cpu - 10^f_mem) / 18` (1 for a node filled exactly, 0
    /// for an empty one). Spread scores its complement. Binpack weighs it
    /// equally with the node's balance, `1 - |f_cpu - f_mem|`
    /// (Kubernetes' BalancedAllocation): among the tightest fits in the
    /// scarcer resource, the one left balanced strands less memory behind
    /// full CPU or the other way round. Measured on `bench-scheduler`'s
    /// random workloads with whole jobs placed in id order (nodes used
    /// over the lower bound, mean and worst of 10): 10.6% and 16.9% with
    /// the fit alone, 10.2% and 16.1% with balance. Letting balance open empty nodes reached 4.2% and 9.0%
    /// on those mixed workloads, but it put one allocation per node for a
    /// single job of identical ones, so [`Cluster::select`] does not.
    pub fn score(&self, n: NodeIx, need: Resources, strategy: Strategy) -> f64 {
        let node = self.nodes[n as usize];
        let after = node.reserved + self.used[n as usize] + need;
        let free_fraction = |used: u64, total: u64| {
            if total == 0 { 0.0 } else { 1.0 - (used as f64 / total as f64).min(1.0) }
        };
        let f_cpu = free_fraction(after.cpu_milli, node.allocatable.cpu_milli);
        let f_mem = free_fraction(after.memory_mb, node.allocatable.memory_mb);
        let fit = (20.0 - 10f64.powf(f_cpu) - 10f64.powf(f_mem)) / 18.0;
        match strategy {
            Strategy::Binpack => {
                let balance = 1.0 - (f_cpu - f_mem).abs();
                (fit + BALANCE_WEIGHT * balance) / (1.0 + BALANCE_WEIGHT)
            }
            Strategy::Spread => 1.0 - fit,
        }
    }

    /// Why no node takes an allocation of a job: each node under the first
    /// check it fails.
    pub fn blocked(
        &mut self,
        constraints: &[Constraint],
        need: Resources,
        port: PortAsk,
        hosting: impl Fn(NodeIx) -> bool,
    ) -> Blocked {
        let mut checks: Vec<(String, Vec<bool>)> = Vec::new();
        for constraint in constraints {
            if let Constraint::Attribute { attribute, test } = constraint {
                let pass = self.passing(attribute, test).unwrap_or_else(|_| vec![false; self.nodes.len()]);
                checks.push((constraint.to_string(), pass));
            }
        }
        let distinct = constraints.contains(&Constraint::DistinctHosts);
        let mut blocked = Blocked { nodes: self.nodes.len() as u32, need, ..Blocked::default() };
        for n in 0..self.nodes.len() as NodeIx {
            let node = self.nodes[n as usize];
            let free = self.free(n);
            if !node.alive {
                blocked.down += 1;
            } else if node.eligibility == Eligibility::Ineligible {
                blocked.ineligible += 1;
            } else if node.eligibility == Eligibility::Draining {
                blocked.draining += 1;
            } else if let Some((name, _)) = checks.iter().find(|(_, pass)| !pass[n as usize]) {
                *blocked.filtered.entry(name.clone()).or_default() += 1;
            } else if distinct && hosting(n) {
                blocked.distinct_hosts += 1;
            } else if self.port_for(n, port).is_none() {
                blocked.port_in_use += 1;
            } else if free.memory_mb < need.memory_mb {
                blocked.lack_memory += 1;
                blocked.largest_free.memory_mb = blocked.largest_free.memory_mb.max(free.memory_mb);
            } else if free.cpu_milli < need.cpu_milli {
                blocked.lack_cpu += 1;
                blocked.largest_free.cpu_milli = blocked.largest_free.cpu_milli.max(free.cpu_milli);
            }
        }
        blocked
    }
}

/// Marks `port` taken in the sorted `taken`.
fn take_port(taken: &mut Vec<u16>, port: u16) {
    if let Err(at) = taken.binary_search(&port) {
        taken.insert(at, port);
    }
}

/// How much more a binpack score weighs a node's balance than its fit.
const BALANCE_WEIGHT: f64 = 1.0;

/// A bijection of u64 with good mixing (splitmix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash map with FNV-1a: ids and attribute values hash several times
/// faster than with SipHash, and the map is only looked up, never iterated
/// in an order that shows (no flooding concern: the keys are the
/// operator's own node and job ids).
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
