//! One fully filled value of every wire type: every optional field set,
//! so a round trip or a golden covers all of them.

use std::collections::BTreeMap;

use gantry_api::*;

pub fn machine() -> Machine {
    Machine {
        id: "web-1".into(),
        hostname: "web-1.example".into(),
        address: "10.0.0.5".into(),
        facts: Facts {
            private_ips: vec!["10.0.0.5".into()],
            public_ips: vec!["203.0.113.7".into()],
            macs: vec!["02:00:00:00:00:01".into()],
            make: Some("QEMU".into()),
            model: Some("Standard PC".into()),
            serial: Some("S1".into()),
            cpu_count: 2,
            cpu_model: Some("EPYC".into()),
            memory_bytes: 4 << 30,
            disks: vec![Disk { name: "vda".into(), size_bytes: 50 << 30 }],
            kernel: Some("6.1.0".into()),
            os: Some("Debian 12".into()),
            boot_time: Some(1_700_000_000),
        },
        labels: BTreeMap::from([("group".into(), "web".into()), ("region".into(), "us-east-1".into())]),
        updated_at: 1_700_000_100,
        capacity: Some(NodeCapacity {
            total: Resources { cpu: 2.0, memory_mb: 4096 },
            source: CapacitySource::Measured,
            reserved: Resources { cpu: 0.5, memory_mb: 512 },
            scheduled_only: false,
        }),
    }
}

pub fn node_usage() -> NodeUsage {
    NodeUsage {
        machine: "web-1".into(),
        cpu: 0.75,
        memory_mb: 1900,
        memory_total_mb: 4096,
        cpus: 2,
        load1: 0.42,
        processes: BTreeMap::from([(
            "api".into(),
            ProcessUsage { cpu_seconds: 12.5, cpu: 0.25, rss_mb: 48.0, processes: 3 },
        )]),
        measured_at_ms: 1_700_000_000_000,
    }
}

pub fn group() -> Group {
    Group { name: "web".into(), run_list: vec!["recipe[seatgeek-service::api]".into()], services: vec!["api".into()] }
}

pub fn instance() -> Instance {
    Instance {
        service: "api".into(),
        id: "web-1".into(),
        machine: "web-1".into(),
        address: "10.0.0.5".into(),
        port: 1100,
        properties: BTreeMap::from([("mysql.master".into(), "true".into())]),
        health: Health::Passing,
        federation: "seatgeek".into(),
        public: true,
        provides: BTreeMap::from([("API_URL".into(), "http://10.0.0.5:1100".into())]),
    }
}

pub fn service_definition() -> ServiceDefinition {
    ServiceDefinition {
        id: "api".into(),
        description: Some("the events API".into()),
        command: Some(CommandSpec::Shell("exec python3 bin/api.py".into())),
        user: Some("www-data".into()),
        on_delete: Some("rm -rf /srv/api".into()),
        run_list: vec!["python::default".into()],
        environment: BTreeMap::from([
            ("ENV".into(), EnvValue::Text("production".into())),
            ("PORT".into(), EnvValue::Number(1100.into())),
            ("DEBUG".into(), EnvValue::Flag(false)),
        ]),
        requires: BTreeMap::from([("DATABASE_URL".into(), "{PRIMARY_DATABASE_URL}".into())]),
        provides: BTreeMap::from([("API_URL".into(), "http://{HOST}:{PORT}".into())]),
        local_port: Some(1100),
        public: Some(false),
        federation: Some("seatgeek".into()),
        check: Some(CheckSpec {
            kind: "http".into(),
            path: Some("/status".into()),
            status: Some(StatusSpec::Range("200-299".into())),
            command: None,
            interval: Some("500ms".into()),
            timeout: Some("400ms".into()),
            rise: Some(2),
            fall: Some(3),
            restart_after: Some(30),
        }),
        resources: Some(ResourcesSpec { cpu: Some(0.5), memory_mb: Some(256) }),
        count: None,
        constraints: vec![],
        spread: vec![],
        strategy: None,
        reschedule: None,
        artifact: Some(ArtifactSpec { path: "dist/api".into() }),
        deploy: Some(DeployHooksSpec { pre: Some("./migrate".into()), post: None }),
        shutdown_delay: Some("2s".into()),
        update: Some(UpdateSpec {
            max_parallel: Some(2),
            min_healthy_time: Some("5s".into()),
            healthy_deadline: Some("2m".into()),
            canary: Some(1),
            auto_revert: Some(true),
        }),
        metrics: Some(MetricsSpec { path: "/metrics".into() }),
        alerts: Some(AlertsSpec {
            error_ratio: Some(BoundSpec::Derived {
                derived: DerivedSpec { baseline: "1d".into(), sigma: Some(3.into()), shift: None, floor: None },
            }),
            latency: Some(BoundSpec::Fixed(serde_json::Number::from_f64(0.5).unwrap())),
            restarts: None,
            memory_growth: None,
            request_rate_drop: None,
        }),
    }
}

/// A scheduled service: `count` and what decides where its allocations go.
pub fn scheduled_definition() -> ServiceDefinition {
    ServiceDefinition {
        id: "worker".into(),
        command: Some(CommandSpec::Shell("exec python3 bin/worker.py".into())),
        environment: BTreeMap::new(),
        local_port: None,
        run_list: vec![],
        count: Some(3),
        constraints: vec![
            ConstraintSpec {
                attribute: Some("region".into()),
                operator: "=".into(),
                value: Some(ConstraintValue::One("us-east-1".into())),
            },
            ConstraintSpec {
                attribute: Some("label.rack".into()),
                operator: "in".into(),
                value: Some(ConstraintValue::Many(vec!["r1".into(), "r2".into()])),
            },
            ConstraintSpec { attribute: None, operator: "distinct_hosts".into(), value: None },
        ],
        spread: vec![SpreadSpec {
            attribute: "label.rack".into(),
            targets: BTreeMap::from([("r1".into(), 50), ("r2".into(), 50)]),
        }],
        strategy: Some("binpack".into()),
        reschedule: Some(RescheduleSpec {
            attempts: Some(3),
            interval_s: Some(600),
            delay_s: Some(5),
            max_delay_s: None,
        }),
        ..service_definition()
    }
}

pub fn run_record() -> RunRecord {
    RunRecord {
        reasons: vec!["DATABASE_URL changed".into(), "deploy 18c".into()],
        triggers: 3,
        last_trigger: 7,
        started_at_ms: 1_700_000_000_000,
        duration_ms: 1234,
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        error: None,
        output_tail: "converged\n".into(),
    }
}

pub fn agent_status() -> AgentStatus {
    AgentStatus {
        machine: "web-1".into(),
        group: Some("web".into()),
        services: vec!["api".into()],
        listener: Some(ListenerStatus {
            enabled: true,
            state: RunState::Idle,
            running_since_ms: None,
            last_run: Some(run_record()),
            runs_total: 4,
            next_allowed_at_ms: 1_700_000_001_234,
            queued_triggers: 0,
            problem: None,
        }),
        problems: vec!["app-www: API_URL: no passing instance of api".into()],
        last_deploy: Some(DeployOutcome { id: "18c".into(), ok: true, detail: String::new(), duration_ms: 1234 }),
        api: Some("http://10.0.0.5:41234".into()),
        processes: BTreeMap::from([(
            "api".into(),
            ServiceState {
                port: 1100,
                health: Health::Passing,
                process: Some(ProcessStatus {
                    state: ProcState::Running,
                    pid: Some(4242),
                    restarts: 1,
                    last_exit: Some("exit code 3".into()),
                    started_at_ms: Some(1_700_000_000_500),
                    next_start_in_ms: None,
                    problem: None,
                }),
                check: Some(CheckStatus {
                    healthy: true,
                    consecutive_failures: 0,
                    consecutive_passes: 12,
                    last_output: Some("HTTP 200".into()),
                    last_checked_ms: Some(1_700_000_010_000),
                    checks: 20,
                    last_duration_ms: Some(3),
                }),
            },
        )]),
        lb: Some(LbStatus {
            kind: LbKind::Haproxy,
            frontends: vec![Frontend {
                service: "api".into(),
                bind: "10.0.0.5:1100".parse().unwrap(),
                mode: LbMode::Http,
                public: false,
                backends: vec![Backend { id: "web-2".into(), address: "10.0.0.6:1100".parse().unwrap() }],
            }],
            notes: vec!["api: kept 1 backend for 10s after reconnecting".into()],
            last_apply: Some(LbApply { at_ms: 1_700_000_002_000, check_us: 80_000, reload_us: 100_000 }),
            error: None,
            exporter: Some("10.0.0.5:8405".parse().unwrap()),
        }),
        allocations: BTreeMap::from([(
            "worker.0.7".into(),
            AllocReport {
                state: AllocState::Running,
                restarts: 0,
                healthy: true,
                since_ms: 1_700_000_009_000,
                message: None,
            },
        )]),
        releases: BTreeMap::from([(
            "api".into(),
            UnitRelease { version: 7, phase: NodePhase::Healthy, message: None },
        )]),
        server: Some("http://10.0.0.2:7400".into()),
        updated_at_ms: 1_700_000_010_000,
    }
}

pub fn allocation() -> Allocation {
    Allocation {
        id: "worker.0.7".into(),
        service: "worker".into(),
        federation: "default".into(),
        index: 0,
        version: 31,
        machine: "web-1".into(),
        resources: Resources { cpu: 0.25, memory_mb: 256 },
        port: 20417,
        desired: DesiredState::Run,
        stop_reason: None,
        placement: Placement {
            reason: "lost".into(),
            score: 0.82,
            explanation: "binpack score 0.82; 2 of 3 nodes feasible".into(),
        },
        replaces: Some("worker.0.3".into()),
        reschedules: vec![],
        created_at_ms: 1_700_000_008_000,
    }
}

pub fn job_status() -> JobStatus {
    JobStatus {
        service: "worker".into(),
        version: 31,
        desired: 3,
        placed: 2,
        pending: 1,
        reason: Some("3 nodes lack memory (need 256 MB, largest free 128 MB)".into()),
        evaluated_at_ms: 1_700_000_008_000,
    }
}

pub fn agent_control() -> AgentControl {
    AgentControl {
        revision: 42,
        listener: Some(ListenerSwitch { enabled: false }),
        deploy: Some(DeployRequest { id: "18c".into(), requested_at_ms: 1_700_000_000_000 }),
        services: BTreeMap::from([("api".into(), ServiceControl { running: true, restart: Some("18d".into()) })]),
        releases: BTreeMap::from([("api".into(), release_target())]),
    }
}

pub fn release_target() -> ReleaseTarget {
    ReleaseTarget {
        service: "api".into(),
        version: 7,
        sha256: "ab".repeat(32),
        size: 1024,
        shutdown_delay_ms: 2000,
        min_healthy_ms: 5000,
        healthy_deadline_ms: 120_000,
    }
}

pub fn release() -> Release {
    Release {
        service: "api".into(),
        version: 7,
        sha256: "ab".repeat(32),
        size: 1024,
        git: Some(GitInfo {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: Some("main".into()),
            dirty: false,
            subjects: vec!["Faster /events".into()],
            tags: vec!["v1.2".into()],
        }),
        message: Some("faster events".into()),
        who: "alice".into(),
        created_ms: 1_700_000_000_000,
        finished_ms: Some(1_700_000_030_000),
        status: ReleaseStatus::Succeeded,
        reason: None,
        rollback_of: None,
        definition: service_definition(),
        nodes: vec![NodeProgress {
            machine: "m1".into(),
            phase: NodePhase::Healthy,
            message: None,
            told_ms: 1_700_000_000_100,
            since_ms: 1_700_000_020_000,
            reverting: false,
        }],
    }
}

pub fn rollout() -> Rollout {
    Rollout {
        service: "api".into(),
        version: 8,
        sha256: "cd".repeat(32),
        size: 2048,
        who: "alice".into(),
        started_ms: 1_700_000_100_000,
        phase: RolloutPhase::Canary,
        stable: Some(release_target()),
        promoted: false,
        reason: None,
        aborted: false,
        nodes: vec![NodeProgress {
            machine: "m1".into(),
            phase: NodePhase::Starting,
            message: None,
            told_ms: 1_700_000_100_100,
            since_ms: 1_700_000_101_000,
            reverting: true,
        }],
    }
}
