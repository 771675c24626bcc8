//! The agent's `/metrics`: the /proc parsers, the exposition byte for byte,
//! and Prometheus' own parser (`promtool check metrics`) on it.

use super::*;

const STATUS: &str = r#"{
  "machine": "web-1", "group": "web", "services": ["api"], "problems": [],
  "processes": {
    "api": {
      "port": 1100, "health": "passing",
      "process": {"state": "running", "pid": 4242, "restarts": 2, "last_exit": "exit code 3",
                  "started_at_ms": 1700000000000, "next_start_in_ms": null, "problem": null},
      "check": {"healthy": true, "consecutive_failures": 0, "consecutive_passes": 5,
                "last_output": "HTTP 200", "last_checked_ms": 1700000009000, "checks": 9}
    },
    "worker.0.7": {
      "port": 20001, "health": "failing",
      "process": {"state": "backoff", "pid": null, "restarts": 4, "last_exit": "exit code 1",
                  "started_at_ms": 1700000005000, "next_start_in_ms": 800, "problem": null},
      "check": null
    }
  },
  "listener": {"enabled": true, "state": "idle", "running_since_ms": null,
    "last_run": {"reasons": ["env api.conf"], "triggers": 1, "last_trigger": 1, "started_at_ms": 1700000001000,
                 "duration_ms": 1500, "exit_code": 1, "signal": null, "timed_out": false, "error": null,
                 "output_tail": "a \"quoted\" line"},
    "runs_total": 3, "next_allowed_at_ms": 0, "queued_triggers": 0, "problem": null},
  "lb": {"kind": "haproxy", "frontends": [{"service": "db", "bind": "127.0.0.1:1200", "mode": "tcp", "public": false,
          "backends": [{"id": "db-1", "address": "10.0.0.7:5432"}]}], "notes": [], "last_apply": null, "error": null},
  "allocations": {"worker.0.7": {"state": "failed", "restarts": 4, "healthy": false, "since_ms": 1700000006000}},
  "updated_at_ms": 0
}"#;

fn view() -> View {
    let status: AgentStatus = serde_json::from_str(STATUS).unwrap();
    let usage = NodeUsage {
        machine: "web-1".into(),
        cpu: 0.5,
        memory_mb: 100,
        memory_total_mb: 1000,
        cpus: 2,
        load1: 0.1,
        processes: BTreeMap::from([(
            "api".to_owned(),
            gantry_api::ProcessUsage { cpu_seconds: 12.5, cpu: 0.2, rss_mb: 30.0, processes: 2 },
        )]),
        measured_at_ms: 1_700_000_009_500,
    };
    let mut check = status.processes["api"].check.clone().unwrap();
    check.last_duration_ms = Some(12);
    View {
        status: Some(status),
        usage: Some(usage),
        checks: BTreeMap::from([("api".to_owned(), check)]),
        services: BTreeMap::from([
            ("api".to_owned(), "api".to_owned()),
            ("worker.0.7".to_owned(), "worker".to_owned()),
        ]),
        ..View::default()
    }
}

fn node() -> NodeSample {
    NodeSample {
        cpu_seconds: parse_cpu_modes("cpu  100 0 50 1000 5 0 1 0 0 0\n", 100.0),
        cpus: 2,
        memory_total_bytes: 1 << 30,
        memory_available_bytes: 1 << 29,
        load: parse_loadavg("0.50 0.25 0.10 1/100 4242\n"),
        network: parse_net_dev(
            "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0\n",
        ),
        disks: parse_diskstats(
            "   8       0 sda 10 0 200 0 20 0 400 0 0 0 0\n   8       1 sda1 5 0 100 0 10 0 200 0 0 0 0\n   7       0 loop0 1 0 8 0 0 0 0 0 0 0 0\n 259 0 nvme0n1 1 0 2 0 3 0 4 0 0 0 0\n 259 1 nvme0n1p1 1 0 2 0 3 0 4 0 0 0 0\n",
        ),
        filesystem: Some((10 << 30, 4 << 30)),
    }
}

#[test]
fn parsers_read_proc_text() {
    assert_eq!(parse_cpu_modes("cpu  100 0 50 1000 5 0 1 0 0 0\n", 100.0)[3], ("idle", 10.0));
    assert_eq!(parse_loadavg("0.50 0.25 0.10 1/100 4242"), [0.5, 0.25, 0.1]);
    let node = node();
    assert_eq!(node.network["eth0"], (5000, 7000));
    // Whole disks only (sectors of 512 bytes); partitions and loop devices left out.
    assert_eq!(node.disks.keys().collect::<Vec<_>>(), ["nvme0n1", "sda"]);
    assert_eq!(node.disks["sda"], (200 * 512, 400 * 512));
}

#[test]
fn the_exposition_byte_for_byte() {
    let text = render(&view(), &node(), 1_700_000_010_000);
    expect_test::expect_file!["golden.prom"].assert_eq(&text);
}

/// Prometheus' own parser and linter accept both a full view and the real
/// node with nothing running (`promtool check metrics` reads stdin).
#[test]
fn promtool_accepts_it() {
    let real = NodeSample::read(Path::new("/proc"), Path::new("/"));
    assert!(real.memory_total_bytes > 0 && !real.cpu_seconds.is_empty(), "{real:?}");
    for text in [render(&view(), &node(), 1_700_000_010_000), render(&View::default(), &real, 0)] {
        let problems = promtool_check_metrics(&text);
        assert!(problems.is_empty(), "promtool check metrics:\n{problems}\n--- input:\n{text}");
    }
}

/// What `promtool check metrics` says of `text` (empty when it accepts it).
pub(crate) fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run scripts/install-test-deps (Debian: apt-get install prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        String::new()
    } else {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}
