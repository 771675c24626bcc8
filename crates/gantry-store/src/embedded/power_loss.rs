//! The power-loss test: the log engine over a simulated disk
//! ([`SimDisk`]) that keeps only what was synced, under concurrent writers
//! (puts, deletes, compare-and-set, two-key transactions, prefix deletes,
//! leases granted, revoked and expiring) with checkpoints every few
//! kilobytes, the power cut at a random disk operation again and again,
//! reopened after each cut and checked:
//!
//! - the store opens (never `Corrupt`: a power cut damages nothing synced);
//! - every acknowledged write is there, and every key holds a value some
//!   write gave it (the last acknowledged one or one in flight at the cut):
//!   nothing that was never written;
//! - nothing is half-applied: a transaction's two keys agree, a leased key
//!   is there only while its lease is;
//! - revisions never go back.
//!
//! `scripts/test` runs [`DEFAULT_POWER_CUTS`] cuts; set `GANTRY_POWER_CUTS`
//! for more, and `GANTRY_POWER_SEED` to replay a failing seed (printed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Embedded;
use super::sim_disk::{Rng, SimDisk};
use crate::{EmbeddedConfig, LeaseId, Store, StoreError, Txn};

/// Power cuts per `cargo test` run (a few seconds); more with
/// `GANTRY_POWER_CUTS`.
const DEFAULT_POWER_CUTS: u64 = 240;
/// Power cuts per seed: each seed is one disk that lives through this many.
const CUTS_PER_SEED: u64 = 30;
const WRITERS: usize = 4;
/// Keys each writer owns (besides its pair and its leased key).
const KEYS: usize = 6;
/// Every this many cuts, a slow round: the writers pause between requests,
/// so that 1-second leases expire before the cut.
const SLOW_EVERY: u64 = CUTS_PER_SEED;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

#[test]
fn acknowledged_writes_survive_power_cuts() {
    let cuts = env_u64("GANTRY_POWER_CUTS").unwrap_or(DEFAULT_POWER_CUTS);
    let seeds: Vec<u64> = match env_u64("GANTRY_POWER_SEED") {
        Some(seed) => vec![seed],
        None => (0..cuts.div_ceil(CUTS_PER_SEED)).map(|i| 0x5eed_0000 + i).collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut totals = Totals::default();
    for seed in seeds {
        let run = runtime.block_on(run_seed(seed));
        totals.add(&run);
    }
    eprintln!("power-loss test: {totals:?}");
    assert!(totals.cuts >= cuts.min(CUTS_PER_SEED), "too few power cuts: {totals:?}");
    assert!(totals.acknowledged > totals.cuts, "the writers got almost nothing acknowledged: {totals:?}");
    assert!(totals.checkpoints > 0, "no checkpoint was installed: {totals:?}");
    assert!(totals.torn_files > 0, "no power cut left unsynced bytes behind: {totals:?}");
    if totals.slow_rounds > 0 {
        assert!(totals.expired > 0, "no lease expired: {totals:?}");
    }
}

/// A bit flipped in a synced record followed by intact ones is damage no
/// power cut makes: the store refuses to open with `Corrupt`.
#[test]
fn damage_to_synced_bytes_is_corrupt() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let disk = SimDisk::new(7);
        let store = open(&disk).await.unwrap();
        for i in 0..10 {
            store.put(&format!("k/{i}"), format!("value {i}")).await.unwrap();
        }
        store.close().await.unwrap();
        let path = config().path;
        // Inside the first record's payload (after the file's and the
        // record's headers): nine intact records follow.
        assert!(disk.synced_len(&path).unwrap() > 200);
        disk.corrupt(&path, 16 + 12 + 5);
        let error = open(&disk).await.unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    });
}

#[derive(Debug, Default)]
struct Totals {
    cuts: u64,
    acknowledged: u64,
    checkpoints: u64,
    torn_files: u64,
    slow_rounds: u64,
    expired: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.cuts += other.cuts;
        self.acknowledged += other.acknowledged;
        self.checkpoints += other.checkpoints;
        self.torn_files += other.torn_files;
        self.slow_rounds += other.slow_rounds;
        self.expired += other.expired;
    }
}

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        // A checkpoint every few kilobytes of log, so that cuts land in
        // them too.
        checkpoint_bytes: 8 << 10,
        history_revisions: 64,
        ..EmbeddedConfig::new("data/store.log")
    }
}

async fn open(disk: &SimDisk) -> Result<Store, StoreError> {
    let backend = Embedded::open_on(config(), disk.mount()).await?;
    Ok(Store { backend: Arc::new(backend) })
}

/// What a key may hold after a cut.
#[derive(Debug, Default, Clone)]
struct Expected {
    /// After the last acknowledged write (`None`: absent).
    acknowledged: Option<Bytes>,
    /// Outcomes of writes in flight at the cut.
    in_flight: Vec<Option<Bytes>>,
    /// A lease may have taken it away.
    may_vanish: bool,
}

/// One writer's keys and what it knows of them.
#[derive(Debug, Default)]
struct Writer {
    id: usize,
    keys: HashMap<String, Expected>,
    lease: Option<LeaseId>,
    last_revision: u64,
    acknowledged: u64,
    expired: u64,
}

impl Writer {
    fn new(id: usize) -> Writer {
        let mut writer = Writer { id, ..Writer::default() };
        for key in writer.key_names() {
            writer.keys.insert(key, Expected::default());
        }
        writer
    }

    fn key(&self, i: usize) -> String {
        format!("w{}/k/{i}", self.id)
    }

    fn pair(&self) -> [String; 2] {
        [format!("w{}/pair/a", self.id), format!("w{}/pair/b", self.id)]
    }

    fn leased(&self) -> String {
        format!("w{}/leased", self.id)
    }

    fn key_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..KEYS).map(|i| self.key(i)).collect();
        names.extend(self.pair());
        names.push(self.leased());
        names
    }

    /// Notes that a write of `outcomes` is in flight.
    fn sending(&mut self, outcomes: &[(String, Option<Bytes>)], leased: bool) {
        for (key, outcome) in outcomes {
            let expected = self.keys.get_mut(key).expect("a key of this writer");
            expected.in_flight.push(outcome.clone());
            expected.may_vanish |= leased;
        }
    }

    /// Notes that the write of `outcomes` was acknowledged at `revision`.
    fn acknowledged(&mut self, outcomes: Vec<(String, Option<Bytes>)>, leased: bool, revision: u64) {
        assert!(
            revision >= self.last_revision,
            "writer {}: revision {revision} acknowledged after {}",
            self.id,
            self.last_revision
        );
        self.last_revision = revision;
        self.acknowledged += 1;
        for (key, outcome) in outcomes {
            let expected = self.keys.get_mut(&key).expect("a key of this writer");
            *expected = Expected { acknowledged: outcome, in_flight: Vec::new(), may_vanish: leased };
        }
    }

    /// One random request; `Err` once the store is gone (the power cut).
    async fn step(&mut self, store: &Store, rng: &mut Rng, tag: &str, slow: bool) -> Result<(), StoreError> {
        // 0 to 1.5 KB of padding: records of one to several sectors.
        let padding = "x".repeat(rng.below(1500) as usize);
        let value = Bytes::from(format!("{tag}:{padding}"));
        let key = self.key(rng.below(KEYS as u64) as usize);
        match rng.below(100) {
            0..30 => {
                let outcomes = vec![(key.clone(), Some(value.clone()))];
                self.sending(&outcomes, false);
                let revision = store.put(&key, value).await?;
                self.acknowledged(outcomes, false, revision);
            }
            30..40 => {
                let outcomes = vec![(key.clone(), None)];
                self.sending(&outcomes, false);
                let revision = store.delete(&key).await?.revision;
                self.acknowledged(outcomes, false, revision);
            }
            40..55 => {
                let current = store.get(&key).await?.kv.map_or(0, |kv| kv.mod_revision);
                let outcomes = vec![(key.clone(), Some(value.clone()))];
                self.sending(&outcomes, false);
                let answer = store.compare_and_put(&key, value, current).await?;
                assert!(answer.succeeded, "writer {}: compare-and-set of its own key {key} failed", self.id);
                self.acknowledged(outcomes, false, answer.revision);
            }
            55..70 => {
                let [a, b] = self.pair();
                let outcomes = vec![(a.clone(), Some(value.clone())), (b.clone(), Some(value.clone()))];
                self.sending(&outcomes, false);
                let answer = store.txn(Txn::new().put(a, value.clone()).put(b, value)).await?;
                self.acknowledged(outcomes, false, answer.revision);
            }
            70..75 => {
                let outcomes: Vec<_> = (0..KEYS).map(|i| (self.key(i), None)).collect();
                self.sending(&outcomes, false);
                let revision = store.delete_prefix(&format!("w{}/k/", self.id)).await?.revision;
                self.acknowledged(outcomes, false, revision);
            }
            // In a slow round a lease is granted once and left to expire.
            75..85 if !(slow && self.lease.is_some()) => {
                let ttl = if slow || rng.one_in(2) { 1 } else { 60 };
                let lease = store.grant_lease(Duration::from_secs(ttl)).await?;
                self.lease = Some(lease.id);
                let outcomes = vec![(self.leased(), Some(value.clone()))];
                self.sending(&outcomes, true);
                match store.put_with_lease(&self.leased(), value, lease.id).await {
                    Ok(revision) => self.acknowledged(outcomes, true, revision),
                    // A 1-second lease on a loaded machine can end first.
                    Err(StoreError::LeaseNotFound { .. }) => {
                        self.keys.get_mut(&self.leased()).expect("its key").in_flight.clear();
                    }
                    Err(other) => return Err(other),
                }
            }
            75..90 if !slow => {
                if let Some(lease) = self.lease.take() {
                    let outcomes = vec![(self.leased(), None)];
                    self.sending(&outcomes, true);
                    match store.revoke_lease(lease).await {
                        Ok(()) => self.acknowledged(outcomes, false, self.last_revision),
                        Err(StoreError::LeaseNotFound { .. }) => {
                            self.keys.get_mut(&self.leased()).expect("its key").in_flight.clear();
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
            _ => {
                // Reads the leased key: a lease that ran out took it.
                let leased = self.leased();
                let now = store.get(&leased).await?.kv.map(|kv| kv.value);
                let expected = self.keys.get_mut(&leased).expect("its key");
                if now.is_none() && expected.acknowledged.is_some() && expected.in_flight.is_empty() {
                    assert!(expected.may_vanish, "writer {}: {leased} vanished without a lease", self.id);
                    self.expired += 1;
                    expected.acknowledged = None;
                    self.lease = None;
                }
            }
        }
        Ok(())
    }

    /// Checks the reopened store against what this writer knows, then takes
    /// what it holds as known.
    async fn check(&mut self, store: &Store, seed: u64, cut: u64) {
        let context = format!("seed {seed} (GANTRY_POWER_SEED={seed}), cut {cut}, writer {}", self.id);
        let mut now = HashMap::new();
        for key in self.key_names() {
            let mut kv = store.get(&key).await.unwrap().kv;
            if let Some(lease) = kv.as_ref().and_then(|kv| kv.lease)
                && store.keep_alive(lease).await.is_err()
            {
                // Its lease is gone: so must the key be (a lease of 1 s may
                // have run out since the read).
                kv = store.get(&key).await.unwrap().kv;
                assert!(kv.is_none(), "{context}: {key} outlived its lease {lease}");
            }
            let expected = &self.keys[&key];
            let value = kv.as_ref().map(|kv| kv.value.clone());
            let allowed = value == expected.acknowledged
                || expected.in_flight.contains(&value)
                || (value.is_none() && expected.may_vanish);
            assert!(allowed, "{context}: {key} holds {value:?}, expected {expected:?}");
            now.insert(key, kv);
        }
        let [a, b] = self.pair();
        let values = |key: &str| now[key].as_ref().map(|kv| kv.value.clone());
        assert_eq!(values(&a), values(&b), "{context}: a transaction was half applied");
        let leased = &now[&self.leased()];
        self.lease = leased.as_ref().and_then(|kv| kv.lease);
        for (key, kv) in now {
            let may_vanish = kv.as_ref().is_some_and(|kv| kv.lease.is_some());
            self.keys.insert(key, Expected { acknowledged: kv.map(|kv| kv.value), in_flight: Vec::new(), may_vanish });
        }
    }
}

/// One disk through [`CUTS_PER_SEED`] power cuts.
async fn run_seed(seed: u64) -> Totals {
    let disk = SimDisk::new(seed);
    let mut rng = Rng::new(seed ^ 0xa5a5_a5a5);
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let mut totals = Totals::default();
    let mut max_acknowledged = 0;
    for cut in 0..CUTS_PER_SEED {
        if rng.one_in(10) {
            // Cut the power while the store opens (replay, torn-tail cut).
            disk.cut_power_after(1 + rng.below(6));
        }
        let store = loop {
            match open(&disk).await {
                Ok(store) => break store,
                // The cut armed above happened during the open: open again.
                Err(_) if disk.counts().power_cuts > totals.cuts => {
                    totals.cuts = disk.counts().power_cuts;
                }
                Err(error) => {
                    panic!("seed {seed} (GANTRY_POWER_SEED={seed}), cut {cut}: the store does not open: {error}")
                }
            }
        };
        let revision = store.revision().await.unwrap();
        assert!(revision >= max_acknowledged, "seed {seed}, cut {cut}: revision {revision} < {max_acknowledged}");
        let keys: Vec<String> = store.range("", None).await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
        for key in keys {
            assert!(
                writers.iter().any(|writer| writer.keys.contains_key(&key)),
                "seed {seed}, cut {cut}: {key} was never written"
            );
        }
        for writer in &mut writers {
            writer.check(&store, seed, cut).await;
            writer.last_revision = revision;
        }

        let slow = cut % SLOW_EVERY == SLOW_EVERY - 1;
        totals.slow_rounds += u64::from(slow);
        disk.cut_power_after(if slow { 1500 + rng.below(500) } else { 1 + rng.below(300) });
        let mut tasks = Vec::new();
        for mut writer in writers.drain(..) {
            let store = store.clone();
            let mut rng = Rng::new(rng.next());
            tasks.push(tokio::spawn(async move {
                for step in 0.. {
                    let tag = format!("{seed}/{cut}/{}/{step}", writer.id);
                    if writer.step(&store, &mut rng, &tag, slow).await.is_err() {
                        break;
                    }
                    if slow {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if step > 5_000 {
                        break;
                    }
                }
                writer
            }));
        }
        for task in tasks {
            let writer = task.await.unwrap();
            max_acknowledged = max_acknowledged.max(writer.last_revision);
            writers.push(writer);
        }
        if disk.armed() {
            disk.cut_power();
        }
        drop(store);
        totals.cuts = disk.counts().power_cuts;
    }
    let counts = disk.counts();
    totals.checkpoints = counts.renames;
    totals.torn_files = counts.torn_files;
    for writer in &writers {
        totals.acknowledged += writer.acknowledged;
        totals.expired += writer.expired;
    }
    totals
}
