//! Bounded resources (issue 15): how much one token, or one client
//! address, may hold of the server at once and how fast it may ask.
//!
//! Who holds what is a [`Held`]: one per token (by accessor) that sent a
//! request, and one per client address for what arrives without a token
//! (every request with `--acl off`; with access control on, requests
//! without a token or with an unknown one, which are refused anyway but
//! cost a lookup). Each limit is counted where the thing is made:
//!
//! - connections per client address, at accept, before a TLS handshake is
//!   spent on them ([`connections`]); one over the limit is closed at once;
//! - the request rate, in the front door, before anything else is done for
//!   the request: a token bucket per holder (GCRA on one atomic, so a
//!   holder's requests never wait for each other), 429 `too_many_requests`
//!   with `Retry-After`;
//! - watches, when one opens (429 `limit_exceeded`), released when it ends;
//! - leases and their TTL, when one is granted: the count is the access
//!   view's record of who granted each live lease (`acl/leases/<id>`, which
//!   ends with the lease), so it holds across servers and across expiry;
//! - keys and bytes, when a token writes ([`accounts`]): 413 `quota_exceeded`.
//!
//! The hot path is one lookup of the holder (a sharded map, read-locked)
//! and a compare-and-swap per request, and for a token's write a look at
//! two counters; there is no lock shared by every request.

mod accounts;
pub mod connections;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gantry_api::ErrorCode;
use gantry_store::LeaseId;

use crate::error::ApiError;

/// What one token (or one client address, for requests without a token)
/// may hold and ask at once. `gantry server --max-...` sets each; the
/// defaults are far above what a fleet of a few thousand agents does (see
/// each), so they bound a runaway or hostile client without ever getting
/// in the way of a working one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections from one client address. An agent holds one per
    /// watch (5 to 20) plus a couple for requests; 512 leaves room for a
    /// few dozen agents behind one NAT address, and keeps one address from
    /// taking every file descriptor of a default `ulimit -n` (1024).
    pub connections_per_ip: u32,
    /// Open watches of one token (of one address without a token). An
    /// agent follows 5 to 20 prefixes.
    pub watches_per_token: u32,
    /// Live leases one token granted. An agent holds one (a second for a
    /// moment when it re-registers).
    pub leases_per_token: u32,
    /// The longest TTL a lease may be granted with. Agents ask for 10 s;
    /// a day is Consul's longest session TTL. Keys under a lease whose
    /// holder died stay until it runs out, so a year (the store's own
    /// bound) is far too long for anything a server should trust.
    pub lease_ttl: Duration,
    /// Keys one token holds: those whose current value it wrote. An agent
    /// holds a few (its machine, instances, status); an operator's token
    /// holds the services, groups, datastores and control documents of
    /// the whole fleet (tens of thousands for thousands of agents).
    pub keys_per_token: u64,
    /// Bytes (key and value) one token holds. The store holds all of it in
    /// memory; a fleet's whole control plane is tens of megabytes.
    pub bytes_per_token: u64,
    /// Requests per second one token may send, on average. An agent sends
    /// one every few seconds; `gantry apply` of a large repository a few
    /// hundred at once.
    pub requests_per_second_per_token: u32,
    /// Requests one token may send at once beyond the rate (a reconnecting
    /// agent re-reads everything it follows; `apply` writes a repository).
    pub request_burst_per_token: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections_per_ip: 512,
            watches_per_token: 256,
            leases_per_token: 256,
            lease_ttl: Duration::from_secs(24 * 3600),
            keys_per_token: 100_000,
            bytes_per_token: 256 * 1024 * 1024,
            requests_per_second_per_token: 1_000,
            request_burst_per_token: 2_000,
        }
    }
}

impl Limits {
    /// Limits no client reaches: for load generators (the benchmarks),
    /// which must pay for the counting but not be throttled by it.
    pub fn out_of_reach() -> Limits {
        Limits {
            connections_per_ip: u32::MAX,
            watches_per_token: u32::MAX,
            leases_per_token: u32::MAX,
            lease_ttl: gantry_store::MAX_LEASE_TTL,
            keys_per_token: u64::MAX,
            bytes_per_token: u64::MAX,
            requests_per_second_per_token: u32::MAX,
            request_burst_per_token: u32::MAX,
        }
    }
}

/// One of the limits, as `/metrics` labels it and as a refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ConnectionsPerIp,
    WatchesPerToken,
    LeasesPerToken,
    LeaseTtl,
    KeysPerToken,
    BytesPerToken,
    RequestRate,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::ConnectionsPerIp,
        Limit::WatchesPerToken,
        Limit::LeasesPerToken,
        Limit::LeaseTtl,
        Limit::KeysPerToken,
        Limit::BytesPerToken,
        Limit::RequestRate,
    ];

    /// The `/metrics` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::WatchesPerToken => "watches_per_token",
            Limit::LeasesPerToken => "leases_per_token",
            Limit::LeaseTtl => "lease_ttl_seconds",
            Limit::KeysPerToken => "keys_per_token",
            Limit::BytesPerToken => "bytes_per_token",
            Limit::RequestRate => "requests_per_second_per_token",
        }
    }

    /// The `gantry server` flag that raises it.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "--max-connections-per-ip",
            Limit::WatchesPerToken => "--max-watches-per-token",
            Limit::LeasesPerToken => "--max-leases-per-token",
            Limit::LeaseTtl => "--max-lease-ttl",
            Limit::KeysPerToken => "--max-keys-per-token",
            Limit::BytesPerToken => "--max-bytes-per-token",
            Limit::RequestRate => "--max-requests-per-second-per-token",
        }
    }
}

/// What one token, or one client address, holds now.
#[derive(Debug)]
pub struct Held {
    /// `token ACCESSOR (NAME)` or `client ADDRESS`, for refusals.
    label: Box<str>,
    /// A token's: its keys and bytes are accounted (an address's never:
    /// without access control anyone may delete anything anyway).
    token: bool,
    connections: AtomicU32,
    watches: AtomicU32,
    keys: AtomicU64,
    bytes: AtomicU64,
    /// The rate limit's theoretical arrival time (GCRA), in nanoseconds
    /// since [`Usage::epoch`]: a request is let through while it is at
    /// most the burst's worth of intervals ahead of now.
    arrival: AtomicU64,
}

impl Held {
    fn new(label: String, token: bool) -> Held {
        Held {
            label: label.into(),
            token,
            connections: AtomicU32::new(0),
            watches: AtomicU32::new(0),
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            arrival: AtomicU64::new(0),
        }
    }

    /// Whether its keys and bytes are accounted (it is a token's).
    pub fn is_token(&self) -> bool {
        self.token
    }

    /// Takes one request from the bucket at `now`; or how long until one
    /// is there.
    fn take(&self, now: u64, rate: Rate) -> Result<(), u64> {
        let mut arrival = self.arrival.load(Ordering::Relaxed);
        loop {
            let start = arrival.max(now);
            if start - now > rate.tolerance {
                return Err(start - now - rate.tolerance);
            }
            match self.arrival.compare_exchange_weak(
                arrival,
                start + rate.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => arrival = current,
            }
        }
    }
}

/// The request rate as GCRA uses it, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Between two requests at the steady rate.
    interval: u64,
    /// How far ahead of now a holder may run: the burst beyond the first.
    tolerance: u64,
}

impl Rate {
    fn of(limits: &Limits) -> Rate {
        let interval = 1_000_000_000 / u64::from(limits.requests_per_second_per_token.max(1));
        // Above a billion a second the interval is 0 ns: no limit at all.
        // (A tolerance of 0 would refuse a request whose arrival time is a
        // little before one already admitted: concurrent requests.)
        if interval == 0 {
            return Rate { interval, tolerance: u64::MAX };
        }
        let tolerance = interval.saturating_mul(u64::from(limits.request_burst_per_token.max(1)) - 1);
        Rate { interval, tolerance }
    }
}

/// Holders are spread over this many maps, each behind its own lock.
const SHARDS: usize = 16;

/// A map is swept of idle holders when it has grown to twice its size
/// after the last sweep, and never below this.
const SWEEP_FLOOR: usize = 256;

#[derive(Debug, Default)]
struct Shard {
    tokens: HashMap<Box<str>, Arc<Held>>,
    addresses: HashMap<IpAddr, Arc<Held>>,
    sweep_at: usize,
}

/// The server's limits and what every holder uses of them.
#[derive(Debug)]
pub struct Usage {
    limits: Limits,
    rate: Rate,
    /// The zero of the rate limit's clock.
    epoch: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[RwLock<Shard>]>,
    accounts: accounts::Accounts,
    /// Refusals, by limit (indexed as [`Limit::ALL`]).
    refused: [AtomicU64; Limit::ALL.len()],
    /// Open connections, from every address.
    connections: AtomicI64,
}

impl Usage {
    pub fn new(limits: Limits) -> Usage {
        Usage {
            rate: Rate::of(&limits),
            limits,
            epoch: Instant::now(),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            accounts: accounts::Accounts::new(),
            refused: Default::default(),
            connections: AtomicI64::new(0),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[hash as usize % SHARDS]
    }

    /// What the token `accessor` (named `name`) holds.
    pub fn token(&self, accessor: &str, name: &str) -> Arc<Held> {
        let shard = self.shard(self.hasher.hash_one(accessor));
        if let Some(held) = shard.read().expect("limits lock").tokens.get(accessor) {
            return Arc::clone(held);
        }
        let label = if name.is_empty() { format!("token {accessor}") } else { format!("token {accessor} ({name})") };
        self.insert(shard, |s| &mut s.tokens, accessor.into(), || Held::new(label, true))
    }

    /// What the client address `ip` holds (its requests without a token).
    pub fn address(&self, ip: IpAddr) -> Arc<Held> {
        let shard = self.shard(self.hasher.hash_one(ip));
        if let Some(held) = shard.read().expect("limits lock").addresses.get(&ip) {
            return Arc::clone(held);
        }
        self.insert(shard, |s| &mut s.addresses, ip, || Held::new(format!("client {ip}"), false))
    }

    /// Adds a holder (unless another request just did), first sweeping the
    /// map of idle ones when it has grown: holders nothing refers to any
    /// more (no connection, watch or key) whose bucket is full again are
    /// the same as new ones, so a stream of addresses cannot grow it
    /// without bound.
    fn insert<K: std::hash::Hash + Eq>(
        &self,
        shard: &RwLock<Shard>,
        map: impl Fn(&mut Shard) -> &mut HashMap<K, Arc<Held>>,
        key: K,
        new: impl FnOnce() -> Held,
    ) -> Arc<Held> {
        let now = self.now();
        let mut shard = shard.write().expect("limits lock");
        let sweep_at = shard.sweep_at.max(SWEEP_FLOOR);
        let held = map(&mut shard);
        if held.len() >= sweep_at {
            held.retain(|_, h| Arc::strong_count(h) > 1 || h.arrival.load(Ordering::Relaxed) > now);
            let left = held.len();
            shard.sweep_at = left * 2;
        }
        Arc::clone(map(&mut shard).entry(key).or_insert_with(|| Arc::new(new())))
    }

    /// Nanoseconds since the epoch at `at`.
    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn now(&self) -> u64 {
        self.since_epoch(Instant::now())
    }

    fn refuse(&self, limit: Limit) {
        let index = Limit::ALL.iter().position(|l| *l == limit).expect("every limit is in ALL");
        self.refused[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Lets one request of `held`, which arrived at `at`, through the rate
    /// limit; or the 429 that says when to come back.
    pub fn admit_request(&self, held: &Held, at: Instant) -> Result<(), ApiError> {
        let Err(wait) = held.take(self.since_epoch(at), self.rate) else { return Ok(()) };
        self.refuse(Limit::RequestRate);
        let seconds = wait.div_ceil(1_000_000_000).max(1);
        let limits = &self.limits;
        Err(ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "{} sent more than {} requests per second (bursts of {}): retry after {seconds} s, \
                 or raise the limit (gantry server {} N, --max-request-burst-per-token N)",
                held.label,
                limits.requests_per_second_per_token,
                limits.request_burst_per_token,
                Limit::RequestRate.flag(),
            ),
        )
        .retry_after(seconds))
    }

    /// A connection from `ip`, counted until the slot drops; `None` when
    /// the address has as many open as it may.
    pub fn admit_connection(self: &Arc<Usage>, ip: IpAddr) -> Option<ConnectionSlot> {
        let held = self.address(ip);
        if held.connections.fetch_add(1, Ordering::Relaxed) >= self.limits.connections_per_ip {
            held.connections.fetch_sub(1, Ordering::Relaxed);
            self.refuse(Limit::ConnectionsPerIp);
            return None;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionSlot { held, usage: Arc::clone(self) })
    }

    /// A watch of `held`, counted until the slot drops; or the 429.
    pub fn open_watch(&self, held: &Arc<Held>) -> Result<WatchSlot, ApiError> {
        let limit = self.limits.watches_per_token;
        if held.watches.fetch_add(1, Ordering::Relaxed) >= limit {
            held.watches.fetch_sub(1, Ordering::Relaxed);
            self.refuse(Limit::WatchesPerToken);
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{} has {limit} watches open, as many as this server allows: end some (a watch of a \
                     common prefix serves many keys), or raise the limit (gantry server {} N)",
                    held.label,
                    Limit::WatchesPerToken.flag()
                ),
            ));
        }
        Ok(WatchSlot(Arc::clone(held)))
    }

    /// Whether `held`, which holds `live` leases, may be granted one more
    /// with `ttl`.
    pub fn admit_lease(&self, held: &Held, live: u32, ttl: Duration) -> Result<(), ApiError> {
        let max = self.limits.lease_ttl;
        if ttl > max {
            self.refuse(Limit::LeaseTtl);
            return Err(ApiError::new(
                ErrorCode::InvalidTtl,
                format!(
                    "a lease TTL of {} s is over this server's longest, {} s: ask for less and renew it \
                     (PUT /v1/leases/ID/keepalive), or raise the limit (gantry server {} DURATION)",
                    ttl.as_secs(),
                    max.as_secs(),
                    Limit::LeaseTtl.flag()
                ),
            ));
        }
        let limit = self.limits.leases_per_token;
        if live >= limit {
            self.refuse(Limit::LeasesPerToken);
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{} holds {live} live leases, as many as this server allows ({limit}): revoke the ones \
                     it no longer renews (or let them run out), or raise the limit (gantry server {} N)",
                    held.label,
                    Limit::LeasesPerToken.flag()
                ),
            ));
        }
        Ok(())
    }

    /// Whether `held` may write `bytes` (key and value) under `key`: a
    /// write that does not add to what it holds always may.
    pub fn admit_write(&self, held: &Arc<Held>, key: &str, bytes: u64) -> Result<(), ApiError> {
        let (keys, holding) = (held.keys.load(Ordering::Relaxed), held.bytes.load(Ordering::Relaxed));
        let limits = &self.limits;
        // Far from both quotas (every write but near one): no lookup.
        if keys < limits.keys_per_token && holding.saturating_add(bytes) <= limits.bytes_per_token {
            return Ok(());
        }
        let (more_keys, more_bytes) = self.accounts.growth(held, key, bytes);
        if more_keys && keys >= limits.keys_per_token {
            self.refuse(Limit::KeysPerToken);
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "{} holds {keys} keys, its quota: writing {key:?} would add one. Delete keys it no \
                     longer needs, or raise the quota (gantry server {} N)",
                    held.label,
                    Limit::KeysPerToken.flag()
                ),
            ));
        }
        if more_bytes > 0 && holding.saturating_add(more_bytes) > limits.bytes_per_token {
            self.refuse(Limit::BytesPerToken);
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "{} holds {holding} bytes of keys and values; writing {key:?} would add {more_bytes}, \
                     over its quota of {} bytes. Delete what it no longer needs, or raise the quota \
                     (gantry server {} BYTES)",
                    held.label,
                    limits.bytes_per_token,
                    Limit::BytesPerToken.flag()
                ),
            ));
        }
        Ok(())
    }

    /// `held` wrote `bytes` under `key` at `revision`, under `lease`.
    pub fn wrote(&self, held: &Arc<Held>, key: &str, bytes: u64, lease: Option<LeaseId>, revision: u64) {
        self.accounts.charge(held, key, bytes, lease, revision);
    }

    /// `key` was deleted at `revision`.
    pub fn deleted(&self, key: &str, revision: u64) {
        self.accounts.release(key, revision);
    }

    /// Every key under `prefix` was deleted at `revision`.
    pub fn deleted_prefix(&self, prefix: &str, revision: u64) {
        self.accounts.release_prefix(prefix, revision);
    }

    /// `lease` ended (revoked, or not renewed in time): its keys are gone.
    pub fn lease_ended(&self, lease: LeaseId) {
        self.accounts.release_lease(lease);
    }

    /// The limits' part of `/metrics`; `most_leases` is the most live
    /// leases any one token holds (from the access view).
    pub fn render(&self, out: &mut String, most_leases: u32) {
        let l = &self.limits;
        out.push_str("# HELP gantry_limit The server's limits (gantry server --max-...).\n# TYPE gantry_limit gauge\n");
        let values = [
            ("connections_per_ip", u64::from(l.connections_per_ip)),
            ("watches_per_token", u64::from(l.watches_per_token)),
            ("leases_per_token", u64::from(l.leases_per_token)),
            ("lease_ttl_seconds", l.lease_ttl.as_secs()),
            ("keys_per_token", l.keys_per_token),
            ("bytes_per_token", l.bytes_per_token),
            ("requests_per_second_per_token", u64::from(l.requests_per_second_per_token)),
            ("request_burst_per_token", u64::from(l.request_burst_per_token)),
        ];
        for (name, value) in values {
            let _ = writeln!(out, "gantry_limit{{limit=\"{name}\"}} {value}");
        }
        let mut most = [0u64; 4];
        let mut totals = [0u64; 4];
        let mut holders = 0;
        for shard in &self.shards {
            let shard = shard.read().expect("limits lock");
            for held in shard.tokens.values().chain(shard.addresses.values()) {
                holders += 1;
                let used = [
                    u64::from(held.connections.load(Ordering::Relaxed)),
                    u64::from(held.watches.load(Ordering::Relaxed)),
                    held.keys.load(Ordering::Relaxed),
                    held.bytes.load(Ordering::Relaxed),
                ];
                for (i, n) in used.into_iter().enumerate() {
                    most[i] = most[i].max(n);
                    totals[i] += n;
                }
            }
        }
        out.push_str(
            "# HELP gantry_limit_highest_use The most that any one client address (connections) or token \
             (the others; an address without a token) uses of a limit now.\n# TYPE gantry_limit_highest_use gauge\n",
        );
        let highest = [
            ("connections_per_ip", most[0]),
            ("watches_per_token", most[1]),
            ("leases_per_token", u64::from(most_leases)),
            ("keys_per_token", most[2]),
            ("bytes_per_token", most[3]),
        ];
        for (name, value) in highest {
            let _ = writeln!(out, "gantry_limit_highest_use{{limit=\"{name}\"}} {value}");
        }
        out.push_str(
            "# HELP gantry_limit_refusals_total Connections and requests refused by a limit.\n\
             # TYPE gantry_limit_refusals_total counter\n",
        );
        for (limit, refused) in Limit::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "gantry_limit_refusals_total{{limit=\"{}\"}} {}",
                limit.as_str(),
                refused.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP gantry_connections Open client connections.\n# TYPE gantry_connections gauge\n");
        let _ = writeln!(out, "gantry_connections {}", self.connections.load(Ordering::Relaxed));
        out.push_str(
            "# HELP gantry_accounted_keys Keys the tokens' quotas hold (written through this server).\n\
             # TYPE gantry_accounted_keys gauge\n",
        );
        let _ = writeln!(out, "gantry_accounted_keys {}", totals[2]);
        out.push_str(
            "# HELP gantry_accounted_bytes Bytes (keys and values) the tokens' quotas hold.\n\
             # TYPE gantry_accounted_bytes gauge\n",
        );
        let _ = writeln!(out, "gantry_accounted_bytes {}", totals[3]);
        out.push_str(
            "# HELP gantry_limit_holders Tokens and client addresses the limits follow now.\n\
             # TYPE gantry_limit_holders gauge\n",
        );
        let _ = writeln!(out, "gantry_limit_holders {holders}");
    }
}

/// One open connection of an address; it stops counting when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    held: Arc<Held>,
    usage: Arc<Usage>,
}

impl ConnectionSlot {
    /// What the connection's address holds (its requests without a token).
    pub fn held(&self) -> &Arc<Held> {
        &self.held
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.held.connections.fetch_sub(1, Ordering::Relaxed);
        self.usage.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open watch of a holder; it stops counting when dropped.
#[derive(Debug)]
pub struct WatchSlot(Arc<Held>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::Relaxed);
    }
}
