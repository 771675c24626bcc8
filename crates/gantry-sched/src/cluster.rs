//! The nodes during one plan: what each has free, the ordered index that
//! finds the fullest (or emptiest) node that fits without looking at every
//! node, node attributes as interned columns, and the checks that say
//! whether a node may take a job's allocation and why not.

use std::collections::{BTreeSet, HashMap};

use crate::model::{Alloc, AttributeTest, Constraint, Eligibility, Node, PortAsk, Resources, Strategy};
use crate::plan::Blocked;

pub(crate) type NodeIx = u32;

/// A node's place in an index: free memory, free CPU, a tiebreak that
/// differs per node, the node. Ascending order is fullest first by memory.
pub(crate) type Key = (u64, u64, u64, NodeIx);

const NONE: u32 = u32::MAX;

pub(crate) struct Cluster<'a> {
    pub nodes: Vec<&'a Node>,
    by_id: HashMap<&'a str, NodeIx>,
    /// What allocations use on each node (not counting `reserved`).
    used: Vec<Resources>,
    /// Ports taken on each node: its own and its allocations'.
    ports: Vec<BTreeSet<u16>>,
    tiebreak: Vec<u64>,
    columns: Vec<Column<'a>>,
    column_of: HashMap<String, usize>,
    /// Indexes of the placeable nodes, each split into groups by the
    /// values of some attributes; the first splits by none.
    partitions: Vec<Partition>,
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
    pub index: BTreeSet<Key>,
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
    pub fn new(nodes: Vec<&'a Node>, allocs: &[&Alloc]) -> Cluster<'a> {
        let by_id: HashMap<&str, NodeIx> =
            nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i as NodeIx)).collect();
        let mut used = vec![Resources::ZERO; nodes.len()];
        let mut ports: Vec<BTreeSet<u16>> = nodes.iter().map(|n| n.used_ports.clone()).collect();
        for alloc in allocs {
            if let Some(&n) = by_id.get(alloc.node.as_str()) {
                used[n as usize] = used[n as usize] + alloc.resources;
                ports[n as usize].insert(alloc.port);
            }
        }
        // A fixed permutation of the nodes (a bijective mix of their
        // position), so that ties do not always go to the first ids.
        let tiebreak = (0..nodes.len() as u64).map(mix).collect();
        let mut cluster = Cluster {
            nodes,
            by_id,
            used,
            ports,
            tiebreak,
            columns: Vec::new(),
            column_of: HashMap::new(),
            partitions: Vec::new(),
        };
        cluster.partition(&[]);
        cluster
    }

    pub fn node(&self, id: &str) -> Option<NodeIx> {
        self.by_id.get(id).copied()
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

    fn key(&self, n: NodeIx) -> Key {
        let free = self.free(n);
        (free.memory_mb, free.cpu_milli, self.tiebreak[n as usize], n)
    }

    /// Takes `resources` and `port` on node `n`.
    pub fn reserve(&mut self, n: NodeIx, resources: Resources, port: u16) {
        self.update(n, |c| {
            c.used[n as usize] = c.used[n as usize] + resources;
            c.ports[n as usize].insert(port);
        });
    }

    /// Gives back what [`Cluster::reserve`] took.
    pub fn release(&mut self, n: NodeIx, resources: Resources, port: u16) {
        self.update(n, |c| {
            c.used[n as usize] = c.used[n as usize].saturating_sub(resources);
            if !c.nodes[n as usize].used_ports.contains(&port) {
                c.ports[n as usize].remove(&port);
            }
        });
    }

    fn update(&mut self, n: NodeIx, change: impl FnOnce(&mut Self)) {
        let before = self.key(n);
        change(self);
        let after = self.key(n);
        for p in &mut self.partitions {
            let g = p.group_of[n as usize];
            if g != NONE {
                let index = &mut p.groups[g as usize].index;
                index.remove(&before);
                index.insert(after);
            }
        }
    }

    /// The port an allocation of `ask` would get on node `n`, if one is free.
    pub fn port_for(&self, n: NodeIx, ask: PortAsk) -> Option<u16> {
        let taken = &self.ports[n as usize];
        match ask {
            PortAsk::Static(port) => (!taken.contains(&port)).then_some(port),
            PortAsk::Dynamic { first, last } => {
                let mut next = first;
                for &port in taken.range(first..=last) {
                    if port != next {
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
        let mut numbers: HashMap<&'a str, u32> = HashMap::new();
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
        let mut number: HashMap<Vec<u32>, u32> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of = vec![NONE; self.nodes.len()];
        for n in 0..self.nodes.len() as NodeIx {
            if !self.placeable(n) {
                continue;
            }
            let values: Vec<u32> = columns.iter().map(|&c| self.value_of(c, n)).collect();
            let g = *number.entry(values.clone()).or_insert_with(|| {
                groups.push(Group { values, index: BTreeSet::new() });
                groups.len() as u32 - 1
            });
            group_of[n as usize] = g;
            groups[g as usize].index.insert(self.key(n));
        }
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
        need: Resources,
        port: PortAsk,
        strategy: Strategy,
        limit: u32,
        avoid: Option<NodeIx>,
        allowed: impl Fn(NodeIx) -> bool,
    ) -> Option<Choice> {
        let index = &self.partitions[partition].groups[g].index;
        let from: Key = (need.memory_mb, 0, 0, 0);
        let mut best: Option<Choice> = None;
        let mut fallback = None;
        let mut scored = 0;
        let mut visit = |&(_, cpu, _, n): &Key| -> bool {
            if cpu < need.cpu_milli || !allowed(n) || self.port_for(n, port).is_none() {
                return false;
            }
            if avoid == Some(n) {
                fallback = Some(n);
                return false;
            }
            let score = self.score(n, need, strategy);
            scored += 1;
            if best.as_ref().is_none_or(|b| score > b.score) {
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

    /// Nomad's fit score of node `n` once `need` is placed on it: with
    /// `f` the free fraction of each of CPU and memory, binpack scores
    /// `(20 - 10^f_cpu - 10^f_mem) / 18` (1 for a node filled exactly, 0
    /// for an empty one; the power makes a half-empty dimension cost more
    /// than two quarter-empty ones), spread the complement.
    pub fn score(&self, n: NodeIx, need: Resources, strategy: Strategy) -> f64 {
        let node = self.nodes[n as usize];
        let after = node.reserved + self.used[n as usize] + need;
        let free_fraction = |used: u64, total: u64| {
            if total == 0 { 0.0 } else { 1.0 - (used as f64 / total as f64).min(1.0) }
        };
        let f_cpu = free_fraction(after.cpu_milli, node.allocatable.cpu_milli);
        let f_mem = free_fraction(after.memory_mb, node.allocatable.memory_mb);
        let binpack = (20.0 - 10f64.powf(f_cpu) - 10f64.powf(f_mem)) / 18.0;
        match strategy {
            Strategy::Binpack => binpack,
            Strategy::Spread => 1.0 - binpack,
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

/// A bijection of u64 with good mixing (splitmix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
