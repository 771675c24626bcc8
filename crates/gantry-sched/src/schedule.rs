//! One plan: reconcile each job's allocations with what the job wants
//! (which to keep, stop, replace, add), then place what is missing.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Choice, Cluster, FastMap, Feasible, NodeIx};
use crate::model::{Alloc, ClientState, Constraint, Desired, Eligibility, Input, Job, Node, Strategy};
use crate::plan::{Blocked, Pending, PendingReason, PlaceReason, Placement, Plan, Stop, StopReason};

/// Computes the plan for `input`. Pure: the same input gives the same plan.
pub fn plan(input: &Input) -> Plan {
    let nodes = sorted_by_id(input.nodes.iter().collect(), |n: &&Node| n.id.as_str());
    let jobs = sorted_by_id(input.jobs.iter().collect(), |j: &&Job| j.id.as_str());
    // The allocations' order never shows: they are grouped by job and
    // index, and each index's copies are ranked with the id as the last
    // key. (Sorting 50,000 ids was a fifth of a plan's time.)
    let live: Vec<&Alloc> = input.allocs.iter().filter(|a| a.desired == Desired::Run).collect();

    let (mut cluster, at) = Cluster::new(nodes, &live);
    let mut out = Plan::default();
    let mut by_job: FastMap<&str, Vec<Live>> = FastMap::default();
    for (alloc, at) in live.into_iter().zip(at) {
        by_job.entry(alloc.job.as_str()).or_default().push(Live { alloc, at });
    }

    // Allocations of jobs that are gone.
    for (job, allocs) in &by_job {
        if jobs.iter().all(|j| j.id != *job) {
            for alloc in allocs {
                stop(&mut cluster, &mut out, *alloc, StopReason::JobRemoved);
            }
        }
    }

    let mut work = Vec::new();
    for job in jobs {
        let allocs = by_job.remove(job.id.as_str()).unwrap_or_default();
        let w = reconcile(job, allocs, &cluster, input.now, &mut out);
        // Unconditional stops (count down, stale copies, lost nodes) free
        // their resources before anything is placed, so a placement never
        // waits for room that the same plan frees.
        for (alloc, reason) in &w.stops {
            stop(&mut cluster, &mut out, *alloc, *reason);
        }
        if !w.asks.is_empty() {
            work.push(w);
        }
    }

    // The asks of all jobs are interleaved by shape (see `interleave`).
    // A move frees room on its old node that an ask placed before it may
    // have lacked: another pass over what is left until nothing moves, so
    // that the plan applied and planned again changes nothing.
    let mut moved = true;
    while moved && work.iter().any(|w| !w.asks.is_empty()) {
        moved = place_all(&mut cluster, &mut work, input.sequence, &mut out);
    }
    for w in work.into_iter().filter(|w| !w.asks.is_empty()) {
        out.pending.push(Pending {
            job: w.job.id.clone(),
            count: w.asks.len() as u32,
            reason: PendingReason::NoNodeFits(w.blocked.unwrap_or_default()),
        });
    }

    out.place.sort_by(|a, b| (&a.job, a.index).cmp(&(&b.job, b.index)));
    out.stop.sort_by(|a, b| a.alloc.cmp(&b.alloc));
    out
}

/// `items` in id order without duplicate ids (the first kept); usually
/// given sorted, which is checked in one pass.
fn sorted_by_id<T>(mut items: Vec<T>, id: impl Fn(&T) -> &str) -> Vec<T> {
    if !items.is_sorted_by(|a, b| id(a) < id(b)) {
        items.sort_by(|a, b| id(a).cmp(id(b)));
        items.dedup_by(|a, b| id(a) == id(b));
    }
    items
}

/// A live allocation and its node (`None`: a node the input lacks).
#[derive(Clone, Copy)]
struct Live<'a> {
    alloc: &'a Alloc,
    at: Option<NodeIx>,
}

impl std::ops::Deref for Live<'_> {
    type Target = Alloc;

    fn deref(&self) -> &Alloc {
        self.alloc
    }
}

fn stop(cluster: &mut Cluster, out: &mut Plan, alloc: Live, reason: StopReason) {
    if let Some(n) = alloc.at {
        cluster.release(n, alloc.resources, alloc.port);
    }
    out.stop.push(Stop { alloc: alloc.id.clone(), job: alloc.job.clone(), node: alloc.node.clone(), reason });
}

/// One job's turn: what to stop now and what to place.
struct Work<'a> {
    job: &'a Job,
    /// Live allocations that stay (moves' old allocations included until
    /// their replacement is placed).
    kept: Vec<Live<'a>>,
    stops: Vec<(Live<'a>, StopReason)>,
    asks: Vec<Ask<'a>>,
    /// The node of each of the job's allocations: kept, and placed.
    homes: Vec<NodeIx>,
    /// Why the asks left over could not be placed.
    blocked: Option<Blocked>,
}

/// An allocation to place.
struct Ask<'a> {
    index: u32,
    reason: PlaceReason,
    /// The allocation it replaces.
    replaces: Option<Live<'a>>,
    /// Whether `replaces` is stopped only if this one is placed (a
    /// drained, updated or failed one: better kept than lost for want of
    /// room), rather than already (a lost one).
    conditional: bool,
    reschedules: Vec<u64>,
}

/// Decides, for one job, what each of its live allocations becomes.
fn reconcile<'a>(job: &'a Job, allocs: Vec<Live<'a>>, cluster: &Cluster, now: u64, out: &mut Plan) -> Work<'a> {
    let mut w = Work { job, kept: Vec::new(), stops: Vec::new(), asks: Vec::new(), homes: Vec::new(), blocked: None };
    let node_of = |a: &Live| a.at.map(|n| cluster.nodes[n as usize]);
    let on_live_node = |a: &Live| node_of(a).is_some_and(|n| n.alive);

    let mut allocs = allocs;
    allocs.sort_unstable_by_key(|a| a.index);
    let mut moves = Vec::new();
    let mut exhausted = 0;
    for copies in allocs.chunk_by_mut(|a, b| a.index == b.index) {
        let index = copies[0].index;
        if index >= job.count {
            w.stops.extend(copies.iter().map(|a| (*a, StopReason::CountReduced)));
            continue;
        }
        // One allocation per index: the best copy stays (on a live node,
        // running, of the current version), the others were replaced
        // while their node was away.
        copies.sort_by_cached_key(|a| {
            let state = match a.client {
                ClientState::Running => 3,
                ClientState::Pending => 2,
                ClientState::Failed => 1,
                ClientState::Lost => 0,
            };
            std::cmp::Reverse((on_live_node(a), state, a.job_version == job.version, a.id.clone()))
        });
        let keeper = copies[0];
        w.stops.extend(copies[1..].iter().map(|a| (*a, StopReason::Stale)));

        if !on_live_node(&keeper) {
            w.stops.push((keeper, StopReason::NodeLost));
            w.asks.push(Ask {
                index,
                reason: PlaceReason::Lost,
                replaces: Some(keeper),
                conditional: false,
                reschedules: keeper.reschedules.clone(),
            });
            continue;
        }
        w.kept.push(keeper);
        if keeper.client == ClientState::Failed {
            let policy = job.reschedule;
            let window: Vec<u64> =
                keeper.reschedules.iter().copied().filter(|&t| t + policy.interval_s >= now).collect();
            if policy.attempts.is_some_and(|a| window.len() as u32 >= a) {
                exhausted += 1;
                continue;
            }
            let doublings = window.len().min(32) as u32;
            let delay = policy.delay_s.saturating_mul(1 << doublings).min(policy.max_delay_s);
            let due = keeper.failed_at.unwrap_or(now).saturating_add(delay);
            if due > now {
                out.next_evaluation = Some(out.next_evaluation.map_or(due, |t| t.min(due)));
                continue;
            }
            let mut reschedules = window;
            reschedules.push(now);
            w.asks.push(Ask {
                index,
                reason: PlaceReason::Rescheduled,
                replaces: Some(keeper),
                conditional: true,
                reschedules,
            });
            continue;
        }
        if node_of(&keeper).is_some_and(|n| n.eligibility == Eligibility::Draining) {
            moves.push((0, keeper, PlaceReason::Drained));
        } else if keeper.job_version != job.version {
            moves.push((1, keeper, PlaceReason::Updated));
        }
    }
    let mut taken = vec![false; job.count as usize];
    for index in w.kept.iter().map(|a| a.index).chain(w.asks.iter().map(|a| a.index)) {
        taken[index as usize] = true;
    }
    for index in 0..job.count {
        if !taken[index as usize] {
            w.asks.push(Ask {
                index,
                reason: PlaceReason::New,
                replaces: None,
                conditional: false,
                reschedules: Vec::new(),
            });
        }
    }
    // Moves (drains first, then version updates) wait while max_parallel
    // of the job's allocations are still pending: the last ones moved
    // must run and pass their checks before more go.
    let pending = w.kept.iter().filter(|a| a.client == ClientState::Pending).count() as u32;
    let budget = job.max_parallel.max(1).saturating_sub(pending) as usize;
    moves.sort_by_key(|(order, a, _)| (*order, a.index));
    for (_, alloc, reason) in moves.into_iter().take(budget) {
        w.asks.push(Ask {
            index: alloc.index,
            reason,
            replaces: Some(alloc),
            conditional: true,
            reschedules: alloc.reschedules.clone(),
        });
    }
    if exhausted > 0 {
        out.pending.push(Pending {
            job: job.id.clone(),
            count: exhausted,
            reason: PendingReason::RescheduleLimit {
                attempts: job.reschedule.attempts.unwrap_or(0),
                interval_s: job.reschedule.interval_s,
            },
        });
    }
    w.asks.sort_by_key(|a| (a.conditional, a.index));
    w.homes = w.kept.iter().filter_map(|a| a.at).collect();
    w
}

/// One job's placement state during a pass: fixed for the pass (which
/// nodes pass its constraints, how many to score) or kept up to date with
/// each of its placements (its allocations per node, its spread, the
/// groups found full).
struct Turn {
    feasible: Feasible,
    distinct: bool,
    hosting: Vec<u32>,
    spread: Spreads,
    limit: u32,
    dead: Vec<bool>,
}

impl Turn {
    fn new(cluster: &mut Cluster, w: &Work) -> Turn {
        let job = w.job;
        let feasible = cluster.feasible(&job.constraints);
        let distinct = job.constraints.contains(&Constraint::DistinctHosts);
        let mut hosting = vec![0u32; cluster.nodes.len()];
        for &n in &w.homes {
            hosting[n as usize] += 1;
        }
        let spread = Spreads::new(cluster, job, &feasible.pass, &w.homes);
        // Nomad scores a bounded sample of the nodes that fit; here the
        // sample is the log2(n) best-ordered ones of an ordered index, so a
        // placement costs O(log n) and not a look at every node.
        let limit = (u32::BITS - feasible.count.leading_zeros()).max(2);
        let dead = vec![false; cluster.groups(spread.partition).len()];
        Turn { feasible, distinct, hosting, spread, limit, dead }
    }
}

/// One pass over every job's asks, interleaved by shape; leaves the asks
/// that found no node in their job's `asks` with the reason in its
/// `blocked`. Returns whether it moved an allocation (which frees room
/// that an ask placed earlier may have lacked).
fn place_all<'a>(cluster: &mut Cluster, work: &mut [Work<'a>], sequence: u64, out: &mut Plan) -> bool {
    let mut turns: Vec<Option<Turn>> = Vec::with_capacity(work.len());
    let mut asks: Vec<std::vec::IntoIter<Ask<'a>>> = Vec::with_capacity(work.len());
    for w in work.iter_mut() {
        w.blocked = None;
        turns.push(None);
        asks.push(std::mem::take(&mut w.asks).into_iter());
    }
    let counts: Vec<usize> = asks.iter().map(ExactSizeIterator::len).collect();
    let mut moved = false;
    for j in interleave(cluster, work, &counts) {
        let ask = asks[j].next().expect("interleave gives each job its count of asks");
        let turn = turns[j].get_or_insert_with(|| Turn::new(cluster, &work[j]));
        moved |= place_ask(cluster, &mut work[j], turn, ask, sequence, out);
    }
    moved
}
/// Places one ask of a job on the best node by its strategy and spread,
/// or leaves it in `w.asks` with the reason in `w.blocked`. Returns
/// whether it moved an allocation.
fn place_ask<'a>(
    cluster: &mut Cluster,
    w: &mut Work<'a>,
    turn: &mut Turn,
    ask: Ask<'a>,
    sequence: u64,
    out: &mut Plan,
) -> bool {
    let job = w.job;
    let Turn { feasible, distinct, hosting, spread, limit, dead } = turn;
    let (distinct, limit) = (*distinct, *limit);
    if w.blocked.is_some() && !ask.conditional {
        w.asks.push(ask);
        return false;
    }
    let old = ask.replaces.filter(|_| ask.conditional).and_then(|a| a.at.map(|n| (a, n)));
    if let Some((a, n)) = old {
        cluster.release(n, a.resources, a.port);
        hosting[n as usize] -= 1;
        spread.count(cluster, n, -1);
    }
    let avoid = match ask.reason {
        PlaceReason::Rescheduled => old.map(|(_, n)| n),
        _ => None,
    };
    let first = cluster.prepare(spread.partition);
    let allowed = |n: NodeIx| feasible.pass[n as usize] && !(distinct && hosting[n as usize] > 0);
    let mut choice = None;
    for g in spread.order(cluster) {
        // A move's own release may have made room in a dead group.
        if dead[g] && old.is_none() {
            continue;
        }
        match cluster.select(spread.partition, g, first, job.resources, job.port, job.strategy, limit, avoid, allowed) {
            Some(c) => {
                choice = Some((g, c));
                break;
            }
            // Resources only shrink while a pass places nothing that
            // moves, so a group with no room stays so (unless a move
            // frees some, which starts another pass).
            None if old.is_none() => dead[g] = true,
            None => {}
        }
    }
    let Some((g, c)) = choice else {
        if let Some((a, n)) = old {
            cluster.reserve(n, a.resources, a.port);
            hosting[n as usize] += 1;
            spread.count(cluster, n, 1);
        }
        if w.blocked.is_none() {
            let hosting = &*hosting;
            w.blocked = Some(cluster.blocked(&job.constraints, job.resources, job.port, |n| hosting[n as usize] > 0));
        }
        w.asks.push(ask);
        return false;
    };
    let port = cluster.port_for(c.node, job.port).expect("select checked the port");
    let explanation = explain(cluster, job, spread, g, &c, feasible.count);
    cluster.reserve(c.node, job.resources, port);
    hosting[c.node as usize] += 1;
    spread.count(cluster, c.node, 1);
    w.homes.push(c.node);
    let mut moved = false;
    if let Some((a, n)) = old {
        moved = true;
        let at = w.homes.iter().position(|&h| h == n).expect("a moved allocation's node is a home");
        w.homes.swap_remove(at);
        let reason = match ask.reason {
            PlaceReason::Drained => StopReason::Drained,
            PlaceReason::Updated => StopReason::Updated,
            _ => StopReason::Rescheduled,
        };
        out.stop.push(Stop { alloc: a.id.clone(), job: a.job.clone(), node: a.node.clone(), reason });
    }
    out.place.push(Placement {
        alloc: format!("{}.{}.{sequence}", job.id, ask.index),
        job: job.id.clone(),
        job_version: job.version,
        index: ask.index,
        node: cluster.nodes[c.node as usize].id.clone(),
        port,
        resources: job.resources,
        reason: ask.reason,
        replaces: ask.replaces.map(|a| a.id.clone()),
        reschedules: ask.reschedules,
        score: c.score,
        explanation,
    });
    moved
}

/// The order in which a pass places asks: the job of each, every job
/// `counts[j]` times. One job keeps its own order. Several are
/// interleaved by shape: with jobs ranked by the memory share of their
/// ask (each resource over what the placeable nodes offer in all), asks
/// are taken alternately from the most memory-heavy job and the most
/// CPU-heavy one, so that each node is offered complementary shapes while
/// it fills. Placing whole jobs in id order left nodes full in memory
/// with CPU stranded (or the other way round); sorting largest first was
/// worse still, as it keeps like shapes together (numbers in
/// ARCHITECTURE.md).
fn interleave(cluster: &Cluster, work: &[Work], counts: &[usize]) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..work.len()).filter(|&j| counts[j] > 0).collect();
    let share = |j: usize| {
        let (cpu, memory) = cluster.shares(work[j].job.resources);
        if cpu + memory == 0.0 { 0.5 } else { memory / (cpu + memory) }
    };
    // Stable: equal shapes stay in id order.
    ranked.sort_by(|&a, &b| share(a).total_cmp(&share(b)));
    let mut left: Vec<usize> = counts.to_vec();
    let mut order = Vec::with_capacity(counts.iter().sum());
    let (mut low, mut high) = (0, ranked.len());
    let mut from_high = true;
    while low < high {
        let j = if from_high { ranked[high - 1] } else { ranked[low] };
        order.push(j);
        left[j] -= 1;
        if left[j] == 0 {
            if from_high { high -= 1 } else { low += 1 }
        }
        from_high = !from_high;
    }
    order
}

/// A job's spread blocks during its turn: how many of its allocations
/// each attribute value has, and how many it should have.
struct Spreads {
    /// The partition of the nodes by the spread attributes (by none
    /// without spread: one group).
    partition: usize,
    blocks: Vec<Block>,
}

struct Block {
    column: usize,
    /// Value number to allocations there and allocations wanted there.
    have: BTreeMap<u32, f64>,
    want: BTreeMap<u32, f64>,
}

impl Spreads {
    fn new(cluster: &mut Cluster, job: &Job, feasible: &[bool], homes: &[NodeIx]) -> Spreads {
        let attributes: Vec<String> = job.spread.iter().map(|s| s.attribute.clone()).collect();
        let partition = cluster.partition(&attributes);
        let count = f64::from(job.count);
        let mut blocks = Vec::new();
        for (b, spread) in job.spread.iter().enumerate() {
            // Values present among the nodes the job may use.
            let present: BTreeSet<u32> = (0..feasible.len() as NodeIx)
                .filter(|&n| feasible[n as usize])
                .map(|n| cluster.partition_value(partition, b, n))
                .collect();
            let mut want = BTreeMap::new();
            let mut named = 0.0;
            for &v in &present {
                if let Some(pct) = spread.targets.get(cluster.partition_value_text(partition, b, v)) {
                    want.insert(v, count * f64::from(*pct) / 100.0);
                    named += f64::from(*pct);
                }
            }
            let others: Vec<u32> = present.iter().copied().filter(|v| !want.contains_key(v)).collect();
            let share =
                if others.is_empty() { 0.0 } else { count * (100.0 - named).max(0.0) / 100.0 / others.len() as f64 };
            for v in others {
                want.insert(v, share);
            }
            blocks.push(Block { column: b, have: BTreeMap::new(), want });
        }
        let mut spreads = Spreads { partition, blocks };
        for &n in homes {
            spreads.count(cluster, n, 1);
        }
        spreads
    }

    fn count(&mut self, cluster: &Cluster, n: NodeIx, delta: i32) {
        for block in &mut self.blocks {
            let v = cluster.partition_value(self.partition, block.column, n);
            *block.have.entry(v).or_default() += f64::from(delta);
        }
    }

    /// How much group `g` is wanted: the mean over the blocks of how far
    /// its value is below its share (1: none there yet; 0: at its share;
    /// negative: above it, or not wanted at all).
    fn boost(&self, cluster: &Cluster, g: usize) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        let values = &cluster.groups(self.partition)[g].values;
        let total: f64 = self
            .blocks
            .iter()
            .map(|block| {
                let v = values[block.column];
                let want = block.want.get(&v).copied().unwrap_or(0.0);
                let have = block.have.get(&v).copied().unwrap_or(0.0);
                if want <= 0.0 { -1.0 } else { ((want - have) / want).clamp(-1.0, 1.0) }
            })
            .sum();
        total / self.blocks.len() as f64
    }

    /// The groups to try, most wanted first (ties in group order).
    fn order(&self, cluster: &Cluster) -> Vec<usize> {
        let groups = cluster.groups(self.partition).len();
        if self.blocks.is_empty() {
            return (0..groups).collect();
        }
        let mut order: Vec<(f64, usize)> = (0..groups).map(|g| (self.boost(cluster, g), g)).collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        order.into_iter().map(|(_, g)| g).collect()
    }
}

fn explain(cluster: &Cluster, job: &Job, spread: &Spreads, g: usize, c: &Choice, feasible: u32) -> String {
    let strategy = match job.strategy {
        Strategy::Binpack => "binpack",
        Strategy::Spread => "spread",
    };
    let mut text = format!("{strategy} score {:.3}, best of {} scored of {feasible} feasible nodes", c.score, c.scored);
    for (spread_rule, block) in job.spread.iter().zip(&spread.blocks) {
        let v = cluster.groups(spread.partition)[g].values[block.column];
        text.push_str(&format!(
            "; spread {}={}: {} of {:.1} wanted",
            spread_rule.attribute,
            cluster.partition_value_text(spread.partition, block.column, v),
            block.have.get(&v).copied().unwrap_or(0.0),
            block.want.get(&v).copied().unwrap_or(0.0)
        ));
    }
    if !job.constraints.is_empty() {
        let shown: Vec<String> = job.constraints.iter().map(ToString::to_string).collect();
        text.push_str(&format!("; constraints {}", shown.join(", ")));
    }
    text
}
