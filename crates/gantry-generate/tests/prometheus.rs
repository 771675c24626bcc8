//! `gantry prometheus:config`'s files: golden, accepted by Prometheus' own
//! tools (`promtool check config`, `promtool check rules`, `amtool
//! check-config`), and the alerting rules unit-tested by `promtool test
//! rules` against synthetic histories: a 10x error surge fires the derived
//! alert, a diurnal sine wave of normal traffic does not, a fixed bound
//! fires at its bound, a service with no traffic stays silent.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use expect_test::expect_file;
use gantry_generate::prometheus::{self, Setup};
use gantry_spec::Service;

fn services() -> Vec<Service> {
    let api = r#"{
      "id": "api", "local_port": 1100, "metrics": {"path": "/metrics"},
      "alerts": {
        "error_ratio": {"derived": {"baseline": "1d", "sigma": 3}},
        "latency": 0.5,
        "restarts": 5,
        "memory_growth": {"derived": {"baseline": "1d", "sigma": 4, "shift": "2h", "floor": 100}},
        "request_rate_drop": {"derived": {"baseline": "1d", "sigma": 3}}
      }
    }"#;
    let quiet = r#"{
      "id": "quiet-one", "local_port": 1200,
      "alerts": {"error_ratio": {"derived": {"baseline": "1d", "sigma": 3}}, "request_rate_drop": 1}
    }"#;
    [("api", api), ("quiet-one", quiet)]
        .into_iter()
        .map(|(id, text)| gantry_spec::parse_service_json(id, text).unwrap_or_else(|e| panic!("{}", e.render())))
        .collect()
}

fn setup() -> Setup {
    Setup {
        server: "https://127.0.0.1:7400".into(),
        token_file: Some("prometheus.token".into()),
        ca_file: Some("tls/ca.pem".into()),
        cert_file: Some("tls/prometheus.pem".into()),
        key_file: Some("tls/prometheus-key.pem".into()),
        alertmanager: "127.0.0.1:9093".into(),
        scrape_interval_s: 15,
        refresh_interval_s: 15,
    }
}

/// The setup written into a fresh directory, with the files it names.
fn written() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let services = services();
    let refs: Vec<&Service> = services.iter().collect();
    for output in prometheus::files(&setup(), &refs) {
        std::fs::write(dir.path().join(&output.path), &output.bytes).unwrap();
    }
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    for file in ["prometheus.token", "tls/ca.pem", "tls/prometheus.pem", "tls/prometheus-key.pem"] {
        std::fs::write(dir.path().join(file), "x").unwrap();
    }
    dir
}

/// Runs a tool of Prometheus' in `dir`; its output when it fails.
fn run(dir: &Path, tool: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(tool).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install it with scripts/install-test-deps (Debian: apt-get install prometheus prometheus-alertmanager)")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { Ok(text) } else { Err(text) }
}

#[test]
fn the_files_are_golden() {
    let services = services();
    let refs: Vec<&Service> = services.iter().collect();
    for output in prometheus::files(&setup(), &refs) {
        let text = String::from_utf8(output.bytes).unwrap();
        match output.path.as_str() {
            prometheus::PROMETHEUS_FILE => expect_file!["golden/prometheus/prometheus.yml"].assert_eq(&text),
            prometheus::RECORDING_FILE => expect_file!["golden/prometheus/recording.rules.yml"].assert_eq(&text),
            prometheus::ALERTING_FILE => expect_file!["golden/prometheus/alerting.rules.yml"].assert_eq(&text),
            prometheus::ALERTMANAGER_FILE => expect_file!["golden/prometheus/alertmanager.yml"].assert_eq(&text),
            other => panic!("an unexpected file {other}"),
        }
    }
}

#[test]
fn promtool_and_amtool_accept_them() {
    let dir = written();
    let checked = run(dir.path(), "promtool", &["check", "config", prometheus::PROMETHEUS_FILE]);
    assert!(checked.is_ok(), "promtool check config: {checked:?}");
    let checked =
        run(dir.path(), "promtool", &["check", "rules", prometheus::RECORDING_FILE, prometheus::ALERTING_FILE]);
    assert!(checked.is_ok(), "promtool check rules: {checked:?}");
    let checked = run(dir.path(), "amtool", &["check-config", prometheus::ALERTMANAGER_FILE]);
    assert!(checked.is_ok(), "amtool check-config: {checked:?}");
}

/// Minutes of history the unit tests feed: two days and a half.
const MINUTES: usize = 3600;
const DAY: f64 = 1440.0;

/// A counter's samples, one a minute, whose rate per second at minute `m`
/// is `rate(m)`.
fn counter(rate: impl Fn(f64) -> f64) -> String {
    let mut total = 0.0;
    let mut values = String::new();
    for m in 0..MINUTES {
        let _ = write!(values, "{} ", (total * 1000.0_f64).round() / 1000.0);
        total += rate(m as f64) * 60.0;
    }
    values.trim_end().to_owned()
}

/// Normal traffic: 10 requests a second on average, swinging by half over a day.
fn diurnal(m: f64) -> f64 {
    10.0 + 5.0 * (2.0 * std::f64::consts::PI * m / DAY).sin()
}

/// 4% of requests fail, swinging between 2% and 6% over a day (above the
/// floor: the derived bound, not the floor, keeps it silent).
fn normal_errors(m: f64) -> f64 {
    diurnal(m) * (0.04 + 0.02 * (2.0 * std::f64::consts::PI * m / DAY + 1.0).sin())
}

/// The haproxy series of `service`: requests and 5xx responses.
fn haproxy_series(service: &str, requests: &str, errors: &str) -> String {
    format!(
        "      - series: 'haproxy_backend_http_requests_total{{job=\"gantry-haproxy\",proxy=\"{service}\"}}'\n        values: '{requests}'\n      - series: 'haproxy_backend_http_responses_total{{job=\"gantry-haproxy\",proxy=\"{service}\",code=\"5xx\"}}'\n        values: '{errors}'\n"
    )
}

/// Minute at which the surge starts: two days in.
const SURGE_AT: f64 = 2.0 * DAY;

fn rules_test() -> String {
    let with_surge =
        counter(|m| if (SURGE_AT..SURGE_AT + 60.0).contains(&m) { diurnal(m) * 0.4 } else { normal_errors(m) });
    let eval = |minutes: f64| format!("{}m", minutes as u64);
    let no_alerts = |names: &[&str], at: &str| {
        names
            .iter()
            .map(|name| format!("      - eval_time: {at}\n        alertname: {name}\n        exp_alerts: []\n"))
            .collect::<String>()
    };
    let mut out =
        String::from("rule_files:\n  - recording.rules.yml\n  - alerting.rules.yml\nevaluation_interval: 1m\ntests:\n");
    // 1. A 10x error surge fires the derived alerts (the service's own and the default).
    let _ = write!(
        out,
        "  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n      - eval_time: {at}\n        alertname: ApiErrorRatio\n        exp_alerts:\n          - exp_labels: {{severity: page, service: api}}\n            exp_annotations: {{summary: \"api: 5xx ratio through its balancers above 3 sigma of its 1d baseline\"}}\n      - eval_time: {at}\n        alertname: GantryBalancer5xxAboveBaseline\n        exp_alerts:\n          - exp_labels: {{severity: page, service: api}}\n            exp_annotations: {{summary: \"api answers more 5xx through its balancers than its baseline\"}}\n{quiet_before}",
        haproxy_series("api", &counter(diurnal), &with_surge),
        at = eval(SURGE_AT + 20.0),
        quiet_before = no_alerts(
            &["ApiErrorRatio", "GantryBalancer5xxAboveBaseline", "ApiRequestRateDrop"],
            &eval(SURGE_AT - 10.0)
        ),
    );
    // 2. The same diurnal traffic without a surge: silent at its peak, its
    //    trough and in between.
    let _ = write!(
        out,
        "  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n",
        haproxy_series("api", &counter(diurnal), &counter(normal_errors))
    );
    for at in [SURGE_AT - 360.0, SURGE_AT, SURGE_AT + 360.0, SURGE_AT + 600.0] {
        out.push_str(&no_alerts(&["ApiErrorRatio", "GantryBalancer5xxAboveBaseline", "ApiRequestRateDrop"], &eval(at)));
    }
    // 3. A fixed bound fires at its bound (0.5 s), not below it.
    let _ = write!(
        out,
        "  - interval: 1m\n    input_series:\n      - series: 'haproxy_backend_response_time_average_seconds{{job=\"gantry-haproxy\",proxy=\"api\"}}'\n        values: '0.4x59 0.5x60'\n    alert_rule_test:\n{}      - eval_time: 70m\n        alertname: ApiLatency\n        exp_alerts:\n          - exp_labels: {{severity: page, service: api}}\n            exp_annotations: {{summary: \"api: average response time above its fixed bound\"}}\n",
        no_alerts(&["ApiLatency"], "62m"),
    );
    // 4. No traffic at all (haproxy's counters stay at 0): silent.
    let _ = write!(
        out,
        "  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n",
        haproxy_series("quiet-one", "0x3599", "0x3599")
    );
    for at in [DAY, SURGE_AT, SURGE_AT + 600.0] {
        out.push_str(&no_alerts(
            &["QuietOneErrorRatio", "QuietOneRequestRateDrop", "GantryBalancer5xxAboveBaseline"],
            &eval(at),
        ));
    }
    out
}

#[test]
fn promtool_test_rules_surge_sine_bound_and_silence() {
    let dir = written();
    std::fs::write(dir.path().join("rules_test.yml"), rules_test()).unwrap();
    let tested = run(dir.path(), "promtool", &["test", "rules", "rules_test.yml"]);
    assert!(tested.is_ok(), "promtool test rules:\n{}", tested.unwrap_err());
}

/// A baseline or shift that PromQL cannot say in whole minutes is bad
/// input, with where and how to fix it.
#[test]
fn a_shift_shorter_than_a_minute_is_refused() {
    let text = r#"{"id": "api", "alerts": {"error_ratio": {"derived": {"baseline": "1d", "shift": "10s"}}}}"#;
    let error = gantry_spec::parse_service_json("api", text).unwrap_err().render();
    assert!(error.contains("\"shift\" must be a whole number of minutes"), "{error}");
}
