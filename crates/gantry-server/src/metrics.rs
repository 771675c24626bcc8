//! Prometheus text exposition of the server's own counters: requests by
//! route and status, request latency, access decisions, open watchers,
//! store revision (and the limits', from `limits::Usage`).
//!
//! Every label value comes from a fixed set, so no request can grow the
//! text: methods are the standard nine or `other`, routes the route
//! table's patterns or `unmatched`, statuses the ones the server answers.
//! (20,000 requests with made-up methods grew it from 625 B to 1.6 MB
//! when methods were labelled as sent.)

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;

use crate::access::Action;

/// The `method` label of a request: its method if it is one of HTTP's
/// standard ones, else `other` (a method is any token a client makes up).
pub fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    STANDARD.into_iter().find(|m| *m == method.as_str()).unwrap_or("other")
}

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Route pattern -> its counters. One lock per request, and no
    /// allocation once a route has been seen: this is on every request's path.
    routes: Mutex<BTreeMap<String, RouteStats>>,
    pub watchers: AtomicI64,
    /// `access::authorize`'s decisions: [action][refused].
    decisions: [[AtomicU64; 2]; Action::ALL.len()],
}

#[derive(Debug, Default)]
struct RouteStats {
    /// (method, status) -> count; a handful per route, so a list.
    counts: Vec<(&'static str, u16, u64)>,
    latency: Histogram,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts one answered request; `method` is a [`method_label`].
    pub fn record(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut routes = self.routes.lock().expect("metrics lock");
        let stats = match routes.get_mut(route) {
            Some(stats) => stats,
            None => routes.entry(route.to_string()).or_default(),
        };
        match stats.counts.iter_mut().find(|(m, s, _)| *m == method && *s == status) {
            Some((_, _, n)) => *n += 1,
            None => stats.counts.push((method, status, 1)),
        }
        let h = &mut stats.latency;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Counts one of `access::authorize`'s decisions.
    pub fn decided(&self, action: Action, allowed: bool) {
        self.decisions[action as usize][usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `revision` is the store's current revision,
    /// `store_watches` how many watches the server holds on the store.
    pub fn render(&self, revision: u64, store_watches: i64) -> String {
        let mut out = String::new();
        out.push_str("# HELP gantry_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE gantry_http_requests_total counter\n");
        let routes = self.routes.lock().expect("metrics lock");
        for (route, stats) in routes.iter() {
            let mut counts = stats.counts.clone();
            counts.sort_unstable();
            for (method, status, n) in counts {
                let _ = writeln!(
                    out,
                    "gantry_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP gantry_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE gantry_http_request_duration_seconds histogram\n");
        for (route, h) in routes.iter().map(|(r, s)| (r, &s.latency)) {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gantry_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gantry_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "gantry_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "gantry_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        out.push_str("# HELP gantry_authorizations_total Access decisions on what requests asked to do, by action.\n");
        out.push_str("# TYPE gantry_authorizations_total counter\n");
        for action in Action::ALL {
            for (i, decision) in ["allow", "deny"].into_iter().enumerate() {
                let n = self.decisions[action as usize][i].load(Ordering::Relaxed);
                let action = action.as_str();
                let _ = writeln!(out, "gantry_authorizations_total{{action=\"{action}\",decision=\"{decision}\"}} {n}");
            }
        }
        out.push_str("# HELP gantry_watchers Open watch streams.\n# TYPE gantry_watchers gauge\n");
        let _ = writeln!(out, "gantry_watchers {}", self.watchers.load(Ordering::Relaxed));
        out.push_str("# HELP gantry_store_watches Watches the server holds on the store: one per watched prefix, shared by its watchers.\n# TYPE gantry_store_watches gauge\n");
        let _ = writeln!(out, "gantry_store_watches {store_watches}");
        out.push_str(
            "# HELP gantry_store_revision The store's current revision.\n# TYPE gantry_store_revision gauge\n",
        );
        let _ = writeln!(out, "gantry_store_revision {revision}");
        out
    }
}

/// The etcd engine's member pool: the endpoint in use (one series, its
/// label one of the configured endpoints), members answering, whether a
/// leader is usable, failovers, retries and unknown outcomes.
pub fn render_etcd(out: &mut String, stats: &gantry_store::EtcdStats) {
    let endpoint = stats.endpoint.replace(['\\', '"', '\n'], "_");
    let lines: [(&str, &str, &str, String); 7] = [
        (
            "gantry_etcd_endpoint_in_use",
            "gauge",
            "The etcd member this server sends requests to.",
            format!("{{endpoint=\"{endpoint}\"}} 1"),
        ),
        (
            "gantry_etcd_members",
            "gauge",
            "etcd members configured (--store etcd://...).",
            format!(" {}", stats.members),
        ),
        (
            "gantry_etcd_members_up",
            "gauge",
            "etcd members that answered the last probe.",
            format!(" {}", stats.members_up),
        ),
        (
            "gantry_etcd_leader",
            "gauge",
            "1 when a member that answers follows a live leader.",
            format!(" {}", u8::from(stats.leader)),
        ),
        (
            "gantry_etcd_failovers_total",
            "counter",
            "Times requests moved to another etcd member.",
            format!(" {}", stats.failovers),
        ),
        (
            "gantry_etcd_retries_total",
            "counter",
            "Requests (and watches) sent again after a failed attempt.",
            format!(" {}", stats.retries),
        ),
        (
            "gantry_etcd_unknown_outcomes_total",
            "counter",
            "Plain writes answered unknown_outcome (in flight when a member failed; never sent twice).",
            format!(" {}", stats.unknown_outcomes),
        ),
    ];
    for (name, kind, help, sample) in lines {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{sample}");
    }
}
