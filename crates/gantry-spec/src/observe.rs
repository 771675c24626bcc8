//! What a service says about being observed (issue 18): where it exports
//! its own metrics (`"metrics": {"path": "/metrics"}`) and which alerts it
//! wants (`"alerts"`), each against a fixed bound or a bound derived from
//! the service's own history (`{"derived": {"baseline": "1d", "sigma": 3}}`).

use std::time::Duration;

use serde::Serialize;

use crate::decode::{self, get};
use crate::diagnostic::{Diagnostic, Sink};
use crate::json::{Json, JsonKind};

const METRICS_KEYS: &[&str] = &["path"];
const DERIVED_KEYS: &[&str] = &["baseline", "sigma", "shift", "floor"];

/// The alerts a service may declare, and what each measures.
pub const ALERT_KEYS: &[&str] = &["error_ratio", "latency", "restarts", "memory_growth", "request_rate_drop"];

/// Where an instance serves Prometheus text (on its own address and port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsEndpoint {
    pub path: String,
}

/// A service's alerts; `None` where it declared none (the defaults every
/// service has still apply).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Alerts {
    /// 5xx responses over responses through its balancers (0..1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<Bound>,
    /// The balancers' average response time, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Bound>,
    /// Restarts of its processes in the last hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<Bound>,
    /// Growth of its resident memory over the last hour, in MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_growth: Option<Bound>,
    /// Requests per second through its balancers falling below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_rate_drop: Option<Bound>,
}

/// An alert's limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// A fixed value (`"error_ratio": 0.05`).
    Fixed(f64),
    /// Derived from history: the current value against the average and
    /// standard deviation over `baseline`, that window ending `shift` ago.
    Derived(Derived),
}

/// `{"derived": {"baseline": "1d", "sigma": 3}}` (`shift` and `floor` optional).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    /// The window the average and deviation are taken over.
    #[serde(with = "duration_text")]
    pub baseline: Duration,
    /// How many standard deviations from the average fire the alert.
    pub sigma: f64,
    /// How far back the window ends (default 1h), so a surge does not
    /// absorb its own baseline.
    #[serde(with = "duration_text")]
    pub shift: Duration,
    /// Below this (for a drop: a baseline below this) nothing fires, so a
    /// quiet service does not page on noise; in the alert's unit (MB for
    /// memory growth); `None`: the alert's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
}

impl Alerts {
    /// Whether it declares nothing.
    pub fn is_empty(&self) -> bool {
        *self == Alerts::default()
    }
}

/// The value of the `job` label of each kind of scrape target, as the
/// server's discovery sets it and the generated rules select it.
pub mod jobs {
    /// A node's agent (`/metrics` on its API).
    pub const AGENT: &str = "gantry-agent";
    /// A node's haproxy (its built-in exporter).
    pub const HAPROXY: &str = "gantry-haproxy";
    /// An instance of a service that declares `metrics`.
    pub const SERVICE: &str = "gantry-service";
}

/// The shift of a derived bound that names none.
pub const DEFAULT_SHIFT: Duration = Duration::from_secs(3600);

pub(crate) fn parse_metrics(value: &Json, sink: &mut Sink) -> Option<MetricsEndpoint> {
    let members = decode::object("metrics", value, sink)?;
    decode::check_keys(members, METRICS_KEYS, "\"metrics\"", sink);
    let Some(path_value) = get(members, "path") else {
        sink.push(
            Diagnostic::new("\"metrics\" has no \"path\"")
                .at(value.span)
                .help("write \"metrics\": {\"path\": \"/metrics\"}: where each instance serves Prometheus text"),
        );
        return None;
    };
    let path = decode::string("path", path_value, sink)?;
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') {
        sink.push(
            Diagnostic::new(format!("\"path\" must be an absolute URL path, found \"{path}\""))
                .at(path_value.span)
                .help("write a path such as \"/metrics\" (no query, no spaces)"),
        );
        return None;
    }
    Some(MetricsEndpoint { path })
}

pub(crate) fn parse_alerts(value: &Json, sink: &mut Sink) -> Alerts {
    let Some(members) = decode::object("alerts", value, sink) else { return Alerts::default() };
    decode::check_keys(members, ALERT_KEYS, "\"alerts\"", sink);
    let bound = |key: &str, sink: &mut Sink| get(members, key).and_then(|v| parse_bound(key, v, sink));
    Alerts {
        error_ratio: bound("error_ratio", sink),
        latency: bound("latency", sink),
        restarts: bound("restarts", sink),
        memory_growth: bound("memory_growth", sink),
        request_rate_drop: bound("request_rate_drop", sink),
    }
}

fn parse_bound(key: &str, value: &Json, sink: &mut Sink) -> Option<Bound> {
    let how = format!(
        "write a fixed bound (\"{key}\": {}) or a derived one (\"{key}\": {{\"derived\": {{\"baseline\": \"1d\", \"sigma\": 3}}}})",
        if key == "error_ratio" { "0.05" } else { "3" }
    );
    match &value.kind {
        JsonKind::Number(_) => {
            let n = decode::number(key, value, sink)?;
            if !n.is_finite() || n < 0.0 || (key == "error_ratio" && n > 1.0) {
                let range = if key == "error_ratio" { "from 0 to 1" } else { "0 or more" };
                sink.push(Diagnostic::new(format!("\"{key}\" must be {range}, found {n}")).at(value.span).help(how));
                return None;
            }
            Some(Bound::Fixed(n))
        }
        JsonKind::Object(_) => {
            let members = decode::object(key, value, sink)?;
            decode::check_keys(members, &["derived"], &format!("\"{key}\""), sink);
            let Some(derived) = get(members, "derived") else {
                sink.push(
                    Diagnostic::new(format!("\"{key}\" is neither a number nor a derived bound"))
                        .at(value.span)
                        .help(how),
                );
                return None;
            };
            parse_derived(derived, sink).map(Bound::Derived)
        }
        _ => {
            sink.push(decode::type_error(key, "a number or {\"derived\": ...}", value).help(how));
            None
        }
    }
}

fn parse_derived(value: &Json, sink: &mut Sink) -> Option<Derived> {
    let members = decode::object("derived", value, sink)?;
    decode::check_keys(members, DERIVED_KEYS, "\"derived\"", sink);
    let before = sink.len();
    let duration = |key: &str, sink: &mut Sink| -> Option<Duration> {
        let v = get(members, key)?;
        let text = decode::string(key, v, sink)?;
        match humantime::parse_duration(&text) {
            Ok(d) if d >= Duration::from_secs(60) && d.as_secs().is_multiple_of(60) => Some(d),
            _ => {
                sink.push(
                    Diagnostic::new(format!("\"{key}\" must be a whole number of minutes, found \"{text}\""))
                        .at(v.span)
                        .help("write a duration such as \"1h\", \"1d\" or \"7d\""),
                );
                None
            }
        }
    };
    let baseline = match get(members, "baseline") {
        Some(_) => duration("baseline", sink),
        None => {
            sink.push(
                Diagnostic::new("\"derived\" has no \"baseline\"")
                    .at(value.span)
                    .help("add \"baseline\": \"1d\": the window of history the bound is derived from"),
            );
            None
        }
    };
    let shift = duration("shift", sink).unwrap_or(DEFAULT_SHIFT);
    let sigma = match get(members, "sigma") {
        Some(v) => match decode::number("sigma", v, sink) {
            Some(s) if s > 0.0 && s.is_finite() => Some(s),
            Some(s) => {
                sink.push(
                    Diagnostic::new(format!("\"sigma\" must be more than 0, found {s}"))
                        .at(v.span)
                        .help("write \"sigma\": 3 (standard deviations from the baseline's average)"),
                );
                None
            }
            None => None,
        },
        None => Some(3.0),
    };
    let floor = get(members, "floor").and_then(|v| decode::number("floor", v, sink));
    (sink.len() == before).then_some(Derived { baseline: baseline?, sigma: sigma?, shift, floor })
}

/// Durations in Prometheus' own syntax (`1d`, `90m`), both for people and
/// for the PromQL they are written into.
pub fn prometheus_duration(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    match minutes {
        m if m % (24 * 60) == 0 => format!("{}d", m / (24 * 60)),
        m if m % 60 == 0 => format!("{}h", m / 60),
        m => format!("{m}m"),
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::prometheus_duration(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_prometheus_syntax() {
        assert_eq!(prometheus_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(prometheus_duration(Duration::from_secs(7_200)), "2h");
        assert_eq!(prometheus_duration(Duration::from_secs(5_400)), "90m");
    }
}
