//! Which token holds which key, for the keys and bytes quotas: a key is
//! held by the token that wrote its current value (the bytes counted are
//! the key's and the value's), until it is deleted, overwritten by another
//! token, or its lease ends.
//!
//! In memory, on this server: what tokens wrote through it since it
//! started. Keys written through another server sharing etcd, or before a
//! restart, are nobody's here (a write of one makes it the writer's). Each
//! account notes the revision of its write, so writes and deletes that
//! finish out of order still leave the account of the last one.
//!
//! Keys under a lease go when the lease does, without a request: the
//! access view sees the lease's owner record (`acl/leases/<id>`, attached
//! to the lease) go and calls [`Accounts::release_lease`], which finds the
//! lease's keys in a second index.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gantry_store::LeaseId;

use super::Held;

/// Keys (and leases) are spread over this many maps, each behind its own
/// lock: writes of different keys rarely meet.
const SHARDS: usize = 64;

#[derive(Debug)]
struct Account {
    holder: Arc<Held>,
    bytes: u64,
    lease: Option<LeaseId>,
    revision: u64,
}

impl Account {
    fn add(&self) {
        self.holder.keys.fetch_add(1, Ordering::Relaxed);
        self.holder.bytes.fetch_add(self.bytes, Ordering::Relaxed);
    }

    fn remove(&self) {
        self.holder.keys.fetch_sub(1, Ordering::Relaxed);
        self.holder.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Store key -> who holds it.
type KeyShard = Mutex<HashMap<Box<str>, Account>>;

/// Lease -> keys written under it (some may have moved on since: they are
/// checked against their account when the lease ends).
type LeaseShard = Mutex<HashMap<LeaseId, Vec<Box<str>>>>;

#[derive(Debug)]
pub(super) struct Accounts {
    hasher: std::collections::hash_map::RandomState,
    keys: Box<[KeyShard]>,
    leases: Box<[LeaseShard]>,
}

impl Accounts {
    pub(super) fn new() -> Accounts {
        Accounts {
            hasher: Default::default(),
            keys: (0..SHARDS).map(|_| Mutex::default()).collect(),
            leases: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn key_shard(&self, key: &str) -> &KeyShard {
        &self.keys[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn lease_shard(&self, lease: LeaseId) -> &LeaseShard {
        &self.leases[lease.0.unsigned_abs() as usize % SHARDS]
    }

    /// What writing `bytes` under `key` would add to what `holder` holds:
    /// a key (unless it holds it already), and how many bytes more.
    pub(super) fn growth(&self, holder: &Arc<Held>, key: &str, bytes: u64) -> (bool, u64) {
        match self.key_shard(key).lock().expect("accounts lock").get(key) {
            Some(account) if Arc::ptr_eq(&account.holder, holder) => (false, bytes.saturating_sub(account.bytes)),
            _ => (true, bytes),
        }
    }

    /// `holder` wrote `bytes` under `key` at `revision`: the key is its now.
    pub(super) fn charge(&self, holder: &Arc<Held>, key: &str, bytes: u64, lease: Option<LeaseId>, revision: u64) {
        let account = Account { holder: Arc::clone(holder), bytes, lease, revision };
        let moved_lease = {
            let mut keys = self.key_shard(key).lock().expect("accounts lock");
            match keys.get_mut(key) {
                // A later write or delete is accounted already.
                Some(old) if old.revision > revision => return,
                Some(old) => {
                    old.remove();
                    account.add();
                    let moved = old.lease != lease;
                    *old = account;
                    moved
                }
                None => {
                    account.add();
                    keys.insert(key.into(), account);
                    true
                }
            }
        };
        if let Some(lease) = lease.filter(|_| moved_lease) {
            self.lease_shard(lease).lock().expect("accounts lock").entry(lease).or_default().push(key.into());
        }
    }

    /// `key` was deleted at `revision`.
    pub(super) fn release(&self, key: &str, revision: u64) {
        let mut keys = self.key_shard(key).lock().expect("accounts lock");
        if keys.get(key).is_some_and(|account| account.revision < revision)
            && let Some(account) = keys.remove(key)
        {
            account.remove();
        }
    }

    /// Every key under `prefix` was deleted at `revision` (rare: a walk
    /// over every account).
    pub(super) fn release_prefix(&self, prefix: &str, revision: u64) {
        for shard in &self.keys {
            shard.lock().expect("accounts lock").retain(|key, account| {
                let gone = key.starts_with(prefix) && account.revision < revision;
                if gone {
                    account.remove();
                }
                !gone
            });
        }
    }

    /// `lease` ended: the keys still written under it are gone.
    pub(super) fn release_lease(&self, lease: LeaseId) {
        let Some(keys) = self.lease_shard(lease).lock().expect("accounts lock").remove(&lease) else { return };
        for key in keys {
            let mut accounts = self.key_shard(&key).lock().expect("accounts lock");
            if accounts.get(&*key).is_some_and(|account| account.lease == Some(lease))
                && let Some(account) = accounts.remove(&*key)
            {
                account.remove();
            }
        }
    }
}
