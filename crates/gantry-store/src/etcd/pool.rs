//! The members of an etcd cluster as the store uses them: one connection
//! per member, one member in use at a time, failover to a healthy one.
//!
//! etcd-client balances requests over all endpoints through one tonic
//! channel; a killed member stays in that balance and keeps taking a share
//! of the requests, each of which fails, and a hung one (SIGSTOP) swallows
//! its share until gRPC's keep-alive gives up. So the store keeps a client
//! per member instead and decides itself:
//!
//! - **A prober** asks every member for its status (serializable, served by
//!   the member itself) every [`PROBE_INTERVAL`]. A member that refuses the
//!   connection is down at once; one that does not answer within
//!   [`PROBE_TIMEOUT`] twice in a row is down (hung). The status names the
//!   leader each member follows, so the prober also knows whether the
//!   cluster has a live leader.
//! - **Requests go to one member** (the one in use, kept while it is up)
//!   and fail over to the next member that is up when it fails.
//! - **Each attempt is given up** when its member goes down, when the
//!   leader goes down (a proposal forwarded to a dead leader is lost
//!   silently), or after its timeout. Its outcome is then unknown.
//! - **Retry rule** (see ARCHITECTURE.md, Decisions): a request that never
//!   reached etcd (connection refused, etcd said "no leader" before doing
//!   anything) is sent again to a healthy member. One whose outcome is
//!   unknown is sent again only when that is safe: reads, lease renewals,
//!   and compare-and-set transactions (whose caller learns whether the
//!   first attempt applied, see [`Done::maybe_applied`]). A plain put or
//!   delete whose outcome is unknown fails with
//!   [`StoreError::UnknownOutcome`](crate::StoreError::UnknownOutcome):
//!   sending it again could apply it twice.
//! - **While there is no leader** (an election), requests wait for one
//!   (up to [`RETRY_BUDGET`]) instead of being sent to be lost.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client as etcd;
use tokio::sync::watch;

/// How often every member is asked for its status.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a status answer may take before the probe counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_millis(600);
/// Failed probes in a row (timeouts) before a member counts as down.
const PROBES_TO_DOWN: u32 = 2;
/// How long one attempt of a small request may take.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request keeps being retried (and waits for a leader).
pub(super) const RETRY_BUDGET: Duration = Duration::from_secs(6);

/// Why an attempt failed, as far as the retry rule is concerned.
#[derive(Debug)]
pub(super) enum Failure {
    /// It never reached etcd, or etcd refused it before doing anything:
    /// sending it again is safe.
    NotSent(etcd::Error),
    /// It was in flight when the connection, the member or the leader
    /// failed (or it timed out): it may or may not have been applied.
    Unknown(etcd::Error),
    /// etcd answered with an error (not found, permission denied, ...).
    Answered(etcd::Error),
}

impl Failure {
    /// etcd said it has no leader.
    fn is_no_leader(&self, error: &etcd::Error) -> bool {
        matches!(self, Failure::NotSent(_))
            && matches!(error, etcd::Error::GRpcStatus(s) if s.message().contains("no leader"))
    }

    pub(super) fn into_error(self) -> etcd::Error {
        match self {
            Failure::NotSent(error) | Failure::Unknown(error) | Failure::Answered(error) => error,
        }
    }

    pub(super) fn error(&self) -> &etcd::Error {
        match self {
            Failure::NotSent(error) | Failure::Unknown(error) | Failure::Answered(error) => error,
        }
    }
}

/// Which failed attempts may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads, renewals, compare-and-set: also after an unknown outcome.
    Always,
    /// Plain writes: only what never reached etcd.
    NotSent,
}

/// A successful answer, and whether an earlier attempt of the same request
/// may have been applied (its outcome was unknown).
pub(super) struct Done<T> {
    pub value: T,
    pub maybe_applied: bool,
}

/// What the prober last saw of one member.
#[derive(Clone, Debug, Default)]
struct MemberHealth {
    up: bool,
    /// Probes failed in a row.
    failed: u32,
    /// etcd's id of the member (from its status), 0 before the first answer.
    id: u64,
    /// The leader it follows (0: none).
    leader: u64,
    /// Why it is down.
    reason: String,
}

struct Member {
    endpoint: String,
    client: Mutex<Option<etcd::Client>>,
    health: Mutex<MemberHealth>,
    /// Bumped when the requests in flight on this member are to be given up.
    faults: watch::Sender<u64>,
}

/// What the whole cluster looks like to the prober.
#[derive(Clone, Debug)]
pub(super) struct ClusterView {
    /// Some member that is up follows a leader that is up.
    pub leader_ok: bool,
    /// Members up, of all.
    pub up: usize,
    pub members: usize,
    /// Why there is no usable leader (for `/v1/health`).
    pub problem: Option<String>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub failovers: AtomicU64,
    pub retries: AtomicU64,
    pub unknown_outcomes: AtomicU64,
}

pub(super) struct Pool {
    members: Vec<Member>,
    options: etcd::ConnectOptions,
    connect_timeout: Duration,
    current: AtomicUsize,
    view: watch::Sender<ClusterView>,
    pub counters: Counters,
}

impl Pool {
    /// A pool over `endpoints`; nothing is connected yet. The prober runs
    /// until the last `Arc` is dropped.
    pub(super) fn start(endpoints: &[String], options: etcd::ConnectOptions, connect_timeout: Duration) -> Arc<Pool> {
        let members = endpoints
            .iter()
            .map(|endpoint| Member {
                endpoint: endpoint.clone(),
                client: Mutex::new(None),
                health: Mutex::new(MemberHealth { up: true, ..MemberHealth::default() }),
                faults: watch::Sender::new(0),
            })
            .collect::<Vec<_>>();
        let view = ClusterView { leader_ok: true, up: members.len(), members: members.len(), problem: None };
        let pool = Arc::new(Pool {
            members,
            options,
            connect_timeout,
            current: AtomicUsize::new(0),
            view: watch::Sender::new(view),
            counters: Counters::default(),
        });
        tokio::spawn(probe_forever(Arc::downgrade(&pool)));
        pool
    }

    /// The endpoint requests go to now.
    pub(super) fn endpoint_in_use(&self) -> &str {
        &self.members[self.current.load(Ordering::Relaxed) % self.members.len()].endpoint
    }

    pub(super) fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// The member to use: the current one while it is up, else the next
    /// one that is up (a failover), else the current one.
    fn pick(&self) -> usize {
        let n = self.members.len();
        let current = self.current.load(Ordering::Acquire) % n;
        if self.is_up(current) {
            return current;
        }
        for step in 1..n {
            let candidate = (current + step) % n;
            if self.is_up(candidate) {
                if self.current.compare_exchange(current, candidate, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    self.counters.failovers.fetch_add(1, Ordering::Relaxed);
                }
                return candidate;
            }
        }
        current
    }

    fn is_up(&self, index: usize) -> bool {
        self.members[index].health.lock().map(|health| health.up).unwrap_or(false)
    }

    /// Marks a member down after a request found its connection broken.
    fn mark_down(&self, index: usize, reason: String) {
        let member = &self.members[index];
        if let Ok(mut health) = member.health.lock()
            && health.up
        {
            health.up = false;
            health.reason = reason;
        }
    }

    /// The member's client, connected on first use.
    async fn client(&self, index: usize) -> Result<etcd::Client, etcd::Error> {
        let member = &self.members[index];
        if let Some(client) = member.client.lock().ok().and_then(|client| client.clone()) {
            return Ok(client);
        }
        let connect = etcd::Client::connect([member.endpoint.as_str()], Some(self.options.clone()));
        let client = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| etcd::Error::Internal(format!("no connection within {:?}", self.connect_timeout)))??;
        if let Ok(mut slot) = member.client.lock() {
            *slot = Some(client.clone());
        }
        Ok(client)
    }

    /// A client of the member in use, and the signal that gives up on it
    /// (for watches, which live longer than one attempt).
    pub(super) async fn client_for_stream(&self) -> Result<(etcd::Client, Fault), Failure> {
        self.wait_for_leader(Instant::now() + RETRY_BUDGET).await;
        let index = self.pick();
        let member = &self.members[index];
        let fault = Fault { index, generation: *member.faults.borrow(), faults: member.faults.subscribe() };
        match self.client(index).await {
            Ok(client) => Ok((client, fault)),
            Err(error) => Err(self.connect_failed(index, error)),
        }
    }

    /// A failed connect: the member is down when the connection failed;
    /// an answer (wrong password) is final.
    fn connect_failed(&self, index: usize, error: etcd::Error) -> Failure {
        match classify(&error) {
            Failure::Answered(_) => Failure::Answered(error),
            _ => {
                self.mark_down(index, short(&error));
                Failure::NotSent(error)
            }
        }
    }

    /// Reports that a stream on `fault`'s member broke at the transport.
    pub(super) fn stream_failed(&self, fault: &Fault, error: &etcd::Error) {
        if matches!(classify(error), Failure::NotSent(_) | Failure::Unknown(_)) && is_transport(error) {
            self.mark_down(fault.index, short(error));
        }
    }

    /// Waits (until `deadline`) for a leader when the prober sees none.
    async fn wait_for_leader(&self, deadline: Instant) {
        let mut view = self.view.subscribe();
        let _ = tokio::time::timeout_at(deadline.into(), view.wait_for(|view| view.leader_ok)).await;
    }

    /// Runs `op` on a healthy member, retrying as `retry` allows. `op` gets
    /// a client and whether an earlier attempt may have been applied.
    pub(super) async fn call<T, F, Fut>(&self, retry: Retry, timeout: Duration, mut op: F) -> Result<Done<T>, Failure>
    where
        F: FnMut(etcd::Client, bool) -> Fut,
        Fut: Future<Output = Result<T, etcd::Error>>,
    {
        let started = Instant::now();
        let mut maybe_applied = false;
        let mut tries: u32 = 0;
        loop {
            if tries > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            tries += 1;
            self.wait_for_leader(started + RETRY_BUDGET).await;
            let index = self.pick();
            let member = &self.members[index];
            let mut fault = Fault { index, generation: *member.faults.borrow(), faults: member.faults.subscribe() };
            let failure = match self.client(index).await {
                Err(error) => self.connect_failed(index, error),
                Ok(client) => {
                    let attempt = op(client, maybe_applied);
                    tokio::select! {
                        result = attempt => match result {
                            Ok(value) => return Ok(Done { value, maybe_applied }),
                            Err(error) => {
                                let failure = classify(&error);
                                if is_transport(&error) {
                                    self.mark_down(index, short(&error));
                                }
                                rebuild(failure, error)
                            }
                        },
                        () = fault.fired() => Failure::Unknown(etcd::Error::Internal(format!(
                            "etcd member {} stopped answering, or the leader changed, while the request was in flight",
                            member.endpoint
                        ))),
                        () = tokio::time::sleep(timeout) => Failure::Unknown(etcd::Error::Internal(format!(
                            "etcd member {} gave no answer within {timeout:?}",
                            member.endpoint
                        ))),
                    }
                }
            };
            match failure {
                Failure::Answered(_) => return Err(failure),
                Failure::Unknown(_) if retry == Retry::NotSent => {
                    self.counters.unknown_outcomes.fetch_add(1, Ordering::Relaxed);
                    return Err(failure);
                }
                Failure::Unknown(_) => maybe_applied = true,
                Failure::NotSent(_) => {}
            }
            if started.elapsed() >= RETRY_BUDGET {
                return Err(failure);
            }
            // Straight to another member if one is up; else a short pause.
            if self.pick() == index {
                let pause = Duration::from_millis(25 << tries.min(4));
                tokio::time::sleep(pause).await;
            }
        }
    }

    async fn probe(&self, index: usize) {
        let member = &self.members[index];
        let result = match self.client(index).await {
            Ok(mut client) => match tokio::time::timeout(PROBE_TIMEOUT, client.status()).await {
                Ok(Ok(status)) => Ok((status.header().map_or(0, |h| h.member_id()), status.leader())),
                // It answers, and follows no leader (the clients ask etcd
                // to refuse requests when there is none).
                Ok(Err(error)) if classify(&error).is_no_leader(&error) => {
                    let id = member.health.lock().map_or(0, |health| health.id);
                    Ok((id, 0))
                }
                Ok(Err(error)) => Err((is_transport(&error), short(&error))),
                Err(_) => Err((false, format!("no status answer within {PROBE_TIMEOUT:?}"))),
            },
            Err(error) => Err((true, short(&error))),
        };
        let Ok(mut health) = member.health.lock() else { return };
        match result {
            Ok((id, leader)) => {
                health.up = true;
                health.failed = 0;
                health.id = id;
                health.leader = leader;
                health.reason.clear();
            }
            Err((refused, reason)) => {
                health.failed += 1;
                if refused || health.failed >= PROBES_TO_DOWN {
                    health.up = false;
                    health.reason = reason;
                }
            }
        }
    }

    /// One round of probes, then the view and the faults it implies.
    async fn probe_all(&self, before: &mut Vec<MemberHealth>) {
        futures::future::join_all((0..self.members.len()).map(|index| self.probe(index))).await;
        let now: Vec<MemberHealth> =
            self.members.iter().map(|m| m.health.lock().map(|h| h.clone()).unwrap_or_default()).collect();
        let leader_of = |healths: &[MemberHealth]| -> Option<u64> {
            healths.iter().filter(|h| h.up).map(|h| h.leader).find(|leader| *leader != 0)
        };
        let old_leader = leader_of(before);
        let leader_member_up = |healths: &[MemberHealth], leader: u64| healths.iter().any(|h| h.up && h.id == leader);
        let mut give_up_all = false;
        for (index, (was, is)) in before.iter().zip(&now).enumerate() {
            if was.up && !is.up {
                // Whatever was in flight on it is lost or stuck.
                self.members[index].faults.send_modify(|generation| *generation += 1);
                if was.id != 0 && Some(was.id) == old_leader {
                    give_up_all = true;
                }
            } else if is.up && was.leader != 0 && is.leader != was.leader {
                // Its leader changed: proposals it forwarded may be lost.
                self.members[index].faults.send_modify(|generation| *generation += 1);
            }
        }
        if give_up_all {
            for member in &self.members {
                member.faults.send_modify(|generation| *generation += 1);
            }
        }
        let up = now.iter().filter(|h| h.up).count();
        let leader = leader_of(&now);
        let leader_ok = leader.is_some_and(|leader| leader_member_up(&now, leader));
        let problem = (!leader_ok).then(|| {
            let down: Vec<String> = self
                .members
                .iter()
                .zip(&now)
                .filter(|(_, h)| !h.up)
                .map(|(m, h)| format!("{} ({})", m.endpoint, h.reason))
                .collect();
            format!(
                "etcd has no usable leader: {up} of {} members answer (quorum needs {}){}",
                self.members.len(),
                self.members.len() / 2 + 1,
                if down.is_empty() { String::new() } else { format!("; down: {}", down.join(", ")) }
            )
        });
        self.view.send_if_modified(|view| {
            let changed = view.leader_ok != leader_ok || view.up != up || view.problem != problem;
            *view = ClusterView { leader_ok, up, members: self.members.len(), problem };
            changed
        });
        *before = now;
    }
}

async fn probe_forever(pool: std::sync::Weak<Pool>) {
    let mut before: Vec<MemberHealth> = Vec::new();
    loop {
        let Some(pool) = pool.upgrade() else { return };
        if before.is_empty() {
            before = pool.members.iter().map(|_| MemberHealth { up: true, ..MemberHealth::default() }).collect();
        }
        pool.probe_all(&mut before).await;
        drop(pool);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Fires when the requests in flight on one member are to be given up.
pub(super) struct Fault {
    index: usize,
    generation: u64,
    faults: watch::Receiver<u64>,
}

impl Fault {
    pub(super) async fn fired(&mut self) {
        let generation = self.generation;
        if self.faults.wait_for(|now| *now != generation).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The failure kind with the error put back (classify looks by reference).
fn rebuild(kind: Failure, error: etcd::Error) -> Failure {
    match kind {
        Failure::NotSent(_) => Failure::NotSent(error),
        Failure::Unknown(_) => Failure::Unknown(error),
        Failure::Answered(_) => Failure::Answered(error),
    }
}

/// An error in a few words, for `/v1/health`: gRPC's message alone.
fn short(error: &etcd::Error) -> String {
    match error {
        etcd::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    }
}

/// Whether the error is the connection's, not an answer from etcd.
fn is_transport(error: &etcd::Error) -> bool {
    match error {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => true,
        etcd::Error::GRpcStatus(status) => {
            !status.message().starts_with("etcdserver:")
                && matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
                )
        }
        _ => false,
    }
}

/// The retry rule's view of an error (see the module docs).
pub(super) fn classify(error: &etcd::Error) -> Failure {
    let placeholder = || etcd::Error::Internal(String::new());
    match error {
        etcd::Error::TransportError(_) | etcd::Error::IoError(_) => Failure::NotSent(placeholder()),
        etcd::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.starts_with("etcdserver:") || message.starts_with("raft ") {
                if message.contains("no leader")
                    || message.contains("too many requests")
                    || message.contains("proposal dropped")
                    || message.contains("not capable")
                {
                    Failure::NotSent(placeholder())
                } else if message.contains("timed out")
                    || message.contains("leader changed")
                    || message.contains("server stopped")
                {
                    Failure::Unknown(placeholder())
                } else {
                    Failure::Answered(placeholder())
                }
            } else if is_transport(error) {
                if refused_connection(message) {
                    Failure::NotSent(placeholder())
                } else {
                    Failure::Unknown(placeholder())
                }
            } else if status.code() == tonic::Code::DeadlineExceeded {
                Failure::Unknown(placeholder())
            } else {
                Failure::Answered(placeholder())
            }
        }
        _ => Failure::Answered(placeholder()),
    }
}

/// tonic's words for a request that failed before a connection existed.
fn refused_connection(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("connect error")
        || message.contains("connection refused")
        || message.contains("error trying to connect")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, message: &str) -> etcd::Error {
        etcd::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn errors_are_classified_by_whether_the_request_may_have_applied() {
        let not_sent = [
            status(tonic::Code::Unavailable, "etcdserver: no leader"),
            status(tonic::Code::ResourceExhausted, "etcdserver: too many requests"),
            status(tonic::Code::Unavailable, "tcp connect error: Connection refused (os error 111)"),
        ];
        for error in &not_sent {
            assert!(matches!(classify(error), Failure::NotSent(_)), "{error}");
        }
        let unknown = [
            status(tonic::Code::Unavailable, "etcdserver: request timed out"),
            status(tonic::Code::Unavailable, "etcdserver: leader changed"),
            status(tonic::Code::Unknown, "transport error"),
            status(tonic::Code::Unavailable, "error reading a body from connection: connection reset"),
        ];
        for error in &unknown {
            assert!(matches!(classify(error), Failure::Unknown(_)), "{error}");
        }
        let answered = [
            status(tonic::Code::NotFound, "etcdserver: requested lease not found"),
            status(tonic::Code::PermissionDenied, "etcdserver: permission denied"),
            status(tonic::Code::InvalidArgument, "etcdserver: duplicate key given in txn request"),
        ];
        for error in &answered {
            assert!(matches!(classify(error), Failure::Answered(_)), "{error}");
        }
    }
}
