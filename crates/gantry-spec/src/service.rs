//! Service definitions (`data_bags/service/<id>.json`, seed 001): what a
//! service runs, what it requires and provides, and how it is checked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::decode::{self, get};
use crate::deploy::{Deploy, parse_deploy};
use crate::diagnostic::{Diagnostic, Sink, Span};
use crate::json::{Json, JsonKind, Member};
use crate::nodes::is_group_name;
use crate::observe::{Alerts, MetricsEndpoint, parse_alerts, parse_metrics};
use crate::runlist::RunListItem;
use crate::scheduling::{Scheduling, parse_scheduling};
use crate::template::{Template, is_env_name};

/// Every key a service definition may have.
pub const SERVICE_KEYS: &[&str] = &[
    "id",
    "description",
    "command",
    "user",
    "on_delete",
    "run_list",
    "environment",
    "requires",
    "provides",
    "local_port",
    "public",
    "federation",
    "check",
    "resources",
    "count",
    "constraints",
    "spread",
    "strategy",
    "reschedule",
    "artifact",
    "deploy",
    "shutdown_delay",
    "update",
    "metrics",
    "alerts",
];

const CHECK_KEYS: &[&str] =
    &["type", "path", "status", "command", "interval", "timeout", "rise", "fall", "restart_after"];
const RESOURCE_KEYS: &[&str] = &["cpu", "memory_mb"];

/// The federation of a service that names none.
pub const DEFAULT_FEDERATION: &str = "default";

/// Placeholders every `provides` template may use besides the service's own
/// environment keys: the instance's address and port.
pub const INSTANCE_PLACEHOLDERS: &[&str] = &["HOST", "PORT"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub id: String,
    pub description: Option<String>,
    pub command: Command,
    /// The user the command runs as; the agent's own user when absent.
    pub user: Option<String>,
    /// Shell command the agent runs when the service leaves a node (seed
    /// 004 "Service decommissioning": `delete-<service>`), after its instance
    /// was withdrawn and the drain delay passed.
    pub on_delete: Option<String>,
    /// Recipes the provision run applies for this service (informational for Gantry).
    pub run_list: Vec<RunListItem>,
    /// Fixed environment, values written out as strings (`"PORT": 8080` is `"8080"`).
    pub environment: BTreeMap<String, String>,
    /// Environment variable name to the template that fills it.
    pub requires: BTreeMap<String, Template>,
    /// Provided name to the template rendered from each instance.
    pub provides: BTreeMap<String, Template>,
    /// The port other nodes' local load balancers listen on for this service.
    pub local_port: Option<u16>,
    /// Public services go to external load balancers; others stay internal.
    pub public: bool,
    pub federation: String,
    pub check: Option<Check>,
    pub resources: Resources,
    /// `Some` for a scheduled service (one with `"count"`): the scheduler
    /// places its allocations, not run lists. Without a fixed `PORT` in
    /// its environment each allocation is given a port of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Its artifact, hooks, drain and rollout (issue 17).
    pub deploy: Deploy,
    /// Where each instance serves Prometheus text (issue 18).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsEndpoint>,
    /// Alerts it declares, besides the ones every service has.
    #[serde(skip_serializing_if = "Alerts::is_empty")]
    pub alerts: Alerts,
    #[serde(skip)]
    pub span: Span,
    /// Where values are written, for diagnostics: top-level keys
    /// (`local_port`) and template entries (`requires.DATABASE_URL`).
    #[serde(skip)]
    pub(crate) spans: BTreeMap<String, Span>,
}

/// What the agent runs for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `true` (seed 001) or absent: the provision run starts the service; the
    /// agent only registers and checks it.
    External,
    /// A shell command line, run with `sh -c`.
    Shell(String),
    /// An argv array, run directly.
    Argv(Vec<String>),
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Command::External => s.serialize_bool(true),
            Command::Shell(line) => s.serialize_str(line),
            Command::Argv(argv) => argv.serialize(s),
        }
    }
}

/// A health check with rise/fall thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    #[serde(flatten)]
    pub kind: CheckKind,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive passes before an instance counts as healthy.
    pub rise: u32,
    /// Consecutive failures before an instance counts as unhealthy.
    pub fall: u32,
    /// Consecutive failures after which the agent restarts the service's
    /// process (a supervised `command` only); 0: never.
    pub restart_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// GET `path`; healthy when the status is within `status` (inclusive).
    Http { path: String, status: (u16, u16) },
    /// A TCP connect to the instance's port.
    Tcp,
    /// A command that exits 0 when healthy.
    Command { command: String },
}

impl Check {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 2;
    /// 30 failures: half a minute at the default interval, like Kubernetes'
    /// liveness probe (3 failures 10 s apart).
    pub const DEFAULT_RESTART_AFTER: u32 = 30;
}

/// What one instance of the service needs, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Resources {
    /// CPU cores (fractions allowed).
    pub cpu: Option<f64>,
    pub memory_mb: Option<u64>,
}

impl Service {
    /// Where `key` (a top-level key, or `requires.NAME` / `provides.NAME`) is
    /// written; the whole definition when it is not.
    pub fn span_of(&self, key: &str) -> Span {
        self.spans.get(key).copied().unwrap_or(self.span)
    }

    /// The service's port: `PORT` from its environment, if it sets one.
    pub fn port(&self) -> Option<u16> {
        self.environment.get("PORT").and_then(|p| p.parse().ok())
    }
}

/// Reads one service file; `stem` is its file name without `.json`.
pub(crate) fn parse_service(stem: &str, root: &Json, sink: &mut Sink) -> Option<Service> {
    let before = sink.len();
    let Some(members) = root.as_object() else {
        sink.push(
            Diagnostic::new(format!("a service definition must be an object, found {}", root.type_name()))
                .at(root.span)
                .help(format!("write {{\"id\": \"{stem}\", \"command\": \"...\"}}")),
        );
        return None;
    };
    decode::check_keys(members, SERVICE_KEYS, &format!("service \"{stem}\""), sink);
    let string = |key: &str, sink: &mut Sink| get(members, key).and_then(|v| decode::string(key, v, sink));

    let id = match get(members, "id") {
        None => {
            sink.push(
                Diagnostic::new("the service has no \"id\"")
                    .at(root.span)
                    .help(format!("add \"id\": \"{stem}\" (it must match the file name)")),
            );
            None
        }
        Some(v) => decode::string("id", v, sink).and_then(|id| {
            if !is_group_name(&id) {
                sink.push(Diagnostic::new(format!("invalid service id \"{id}\"")).at(v.span).help(
                    "service ids name recipes and files: use letters, digits, `_` and `-`, \
                         up to 64 characters, starting with a letter or digit",
                ));
                None
            } else if id != stem {
                sink.push(
                    Diagnostic::new(format!("service id \"{id}\" does not match its file name \"{stem}.json\""))
                        .at(v.span)
                        .help(format!("rename the file to \"{id}.json\", or set \"id\": \"{stem}\"")),
                );
                None
            } else {
                Some(id)
            }
        }),
    };

    let environment = get(members, "environment")
        .and_then(|v| decode::scalar_map("environment", v, sink).map(|env| (v, env)))
        .map(|(v, env)| {
            check_env_names("environment", v, sink);
            if let Some(port) = env.get("PORT")
                && port.parse::<u16>().map_or(true, |p| p == 0)
            {
                sink.push(
                    Diagnostic::new(format!("\"PORT\" must be a port number from 1 to 65535, found \"{port}\""))
                        .at(get(v.as_object().unwrap_or_default(), "PORT").map_or(v.span, |p| p.span))
                        .help("write \"PORT\": 8080, or leave it out to have the agent assign one"),
                );
            }
            env
        })
        .unwrap_or_default();

    let mut spans: BTreeMap<String, Span> = members.iter().map(|m| (m.key.clone(), m.value.span)).collect();
    let requires = templates("requires", members, &mut spans, sink);
    let provides = templates("provides", members, &mut spans, sink);
    check_provides(members, &provides, &environment, sink);

    let federation = string("federation", sink).unwrap_or_else(|| DEFAULT_FEDERATION.to_string());
    if !is_group_name(&federation)
        && let Some(v) = get(members, "federation")
    {
        sink.push(
            Diagnostic::new(format!("invalid federation name \"{federation}\""))
                .at(v.span)
                .help("use letters, digits, `_` and `-`, starting with a letter or digit"),
        );
    }

    let resources = get(members, "resources").map(|v| parse_resources(v, sink)).unwrap_or_default();
    let scheduling = parse_scheduling(members, &resources, root, sink);

    let service = Service {
        id: id.unwrap_or_default(),
        description: string("description", sink),
        command: get(members, "command").and_then(|v| parse_command(v, sink)).unwrap_or(Command::External),
        user: string("user", sink),
        on_delete: string("on_delete", sink),
        run_list: get(members, "run_list").map(|v| parse_run_list(v, sink)).unwrap_or_default(),
        environment,
        requires,
        provides,
        local_port: get(members, "local_port").and_then(|v| parse_port("local_port", v, sink)),
        public: get(members, "public").and_then(|v| decode::boolean("public", v, sink)).unwrap_or(false),
        federation,
        check: get(members, "check").and_then(|v| parse_check(v, sink)),
        resources,
        scheduling,
        deploy: parse_deploy(members, sink),
        metrics: get(members, "metrics").and_then(|v| parse_metrics(v, sink)),
        alerts: get(members, "alerts").map(|v| parse_alerts(v, sink)).unwrap_or_default(),
        span: root.span,
        spans,
    };
    (sink.len() == before).then_some(service)
}

fn parse_run_list(value: &Json, sink: &mut Sink) -> Vec<RunListItem> {
    let Some(items) = decode::string_list("run_list", value, sink) else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|(text, json)| match RunListItem::parse(text) {
            Ok(item) => Some(item),
            Err(e) => {
                sink.push(
                    Diagnostic::new(format!("invalid run-list item \"{text}\" in \"run_list\""))
                        .at(json.span)
                        .help(e.to_string()),
                );
                None
            }
        })
        .collect()
}

fn parse_command(value: &Json, sink: &mut Sink) -> Option<Command> {
    match &value.kind {
        JsonKind::Bool(true) => Some(Command::External),
        JsonKind::String(s) if !s.trim().is_empty() => Some(Command::Shell(s.clone())),
        JsonKind::Array(_) => {
            let argv: Vec<String> =
                decode::string_list("command", value, sink)?.into_iter().map(|(s, _)| s.to_string()).collect();
            if argv.is_empty() || argv[0].is_empty() {
                sink.push(
                    Diagnostic::new("\"command\" is an empty list")
                        .at(value.span)
                        .help("write the program and its arguments: [\"python3\", \"app.py\"]"),
                );
                return None;
            }
            Some(Command::Argv(argv))
        }
        _ => {
            sink.push(
                Diagnostic::new(format!(
                    "\"command\" must be a command line, an argv list or true, found {}",
                    match &value.kind {
                        JsonKind::String(_) => "an empty string",
                        _ => value.type_name(),
                    }
                ))
                .at(value.span)
                .help(
                    "write \"command\": \"exec python3 app.py\", [\"python3\", \"app.py\"], \
                     or true when the provision run starts the service itself",
                ),
            );
            None
        }
    }
}

fn parse_port(key: &str, value: &Json, sink: &mut Sink) -> Option<u16> {
    let port = decode::integer(key, value, u64::from(u16::MAX), sink)?;
    if port == 0 {
        sink.push(Diagnostic::new(format!("\"{key}\" must be a port number from 1 to 65535, found 0")).at(value.span));
        return None;
    }
    Some(port as u16)
}

fn check_env_names(key: &str, value: &Json, sink: &mut Sink) {
    for m in value.as_object().unwrap_or_default() {
        if !is_env_name(&m.key) {
            sink.push(
                Diagnostic::new(format!("\"{}\" in \"{key}\" is not an environment variable name", m.key))
                    .at(m.key_span)
                    .help("use letters, digits and `_`, not starting with a digit (DATABASE_URL)"),
            );
        }
    }
}

/// Parses `requires` or `provides`: name to template. Records each entry's
/// span in `spans` as `key.NAME`.
fn templates(
    key: &str,
    members: &[Member],
    spans: &mut BTreeMap<String, Span>,
    sink: &mut Sink,
) -> BTreeMap<String, Template> {
    let mut out = BTreeMap::new();
    let Some(value) = get(members, key) else {
        return out;
    };
    let Some(entries) = decode::object(key, value, sink) else {
        return out;
    };
    check_env_names(key, value, sink);
    for m in entries {
        let Some(text) = decode::string(&m.key, &m.value, sink) else { continue };
        match Template::parse(&text) {
            Ok(t) => {
                out.insert(m.key.clone(), t);
                spans.insert(format!("{key}.{}", m.key), m.value.span);
            }
            Err(e) => sink.push(
                Diagnostic::new(format!("invalid template for \"{}\" in \"{key}\": {}", m.key, e.message))
                    .at(m.value.span)
                    .help("placeholders look like {NAME}; write {{ and }} for literal braces"),
            ),
        }
    }
    out
}

/// `provides` templates may use the instance's HOST and PORT and the
/// service's own environment keys.
fn check_provides(
    members: &[Member],
    provides: &BTreeMap<String, Template>,
    environment: &BTreeMap<String, String>,
    sink: &mut Sink,
) {
    let Some(entries) = get(members, "provides").and_then(Json::as_object) else { return };
    let known: Vec<&str> =
        INSTANCE_PLACEHOLDERS.iter().copied().chain(environment.keys().map(String::as_str)).collect();
    for m in entries {
        let Some(template) = provides.get(&m.key) else { continue };
        for name in template.placeholders() {
            if known.contains(&name) {
                continue;
            }
            let help = match crate::diagnostic::nearest(name, known.iter().copied()) {
                Some(near) => format!("did you mean {{{near}}}? placeholders are case-sensitive"),
                None => format!(
                    "a provides template may use {}, or a key of this service's \"environment\"",
                    INSTANCE_PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(" and ")
                ),
            };
            sink.push(
                Diagnostic::new(format!("unknown placeholder {{{name}}} in provides \"{}\"", m.key))
                    .at(m.value.span)
                    .help(help),
            );
        }
    }
}

fn parse_check(value: &Json, sink: &mut Sink) -> Option<Check> {
    let members = decode::object("check", value, sink)?;
    decode::check_keys(members, CHECK_KEYS, "\"check\"", sink);
    let before = sink.len();
    let string = |key: &str, sink: &mut Sink| get(members, key).and_then(|v| decode::string(key, v, sink));
    let duration = |key: &str, default: Duration, sink: &mut Sink| -> Duration {
        get(members, key).and_then(|v| crate::deploy::duration(key, v, false, sink)).unwrap_or(default)
    };
    let threshold = |key: &str, default: u32, sink: &mut Sink| -> u32 {
        match get(members, key).and_then(|v| decode::integer(key, v, 100, sink)) {
            Some(0) => {
                sink.push(Diagnostic::new(format!("\"{key}\" must be at least 1")).at(value.span));
                default
            }
            Some(n) => n as u32,
            None => default,
        }
    };
    let kind_name = string("type", sink).unwrap_or_else(|| "http".to_string());
    let kind = match kind_name.as_str() {
        "http" => CheckKind::Http {
            path: string("path", sink).unwrap_or_else(|| "/status".to_string()),
            status: get(members, "status").map_or((200, 399), |v| parse_status(v, sink)),
        },
        "tcp" => CheckKind::Tcp,
        "command" => match string("command", sink) {
            Some(command) if !command.trim().is_empty() => CheckKind::Command { command },
            _ => {
                sink.push(
                    Diagnostic::new("a command check needs a \"command\"")
                        .at(value.span)
                        .help("add \"command\": \"curl -fs localhost:8080/status\""),
                );
                return None;
            }
        },
        other => {
            let at = get(members, "type").map_or(value.span, |v| v.span);
            sink.push(
                Diagnostic::new(format!("unknown check type \"{other}\""))
                    .at(at)
                    .help("use \"http\", \"tcp\" or \"command\""),
            );
            return None;
        }
    };
    let check = Check {
        kind,
        interval: duration("interval", Check::DEFAULT_INTERVAL, sink),
        timeout: duration("timeout", Check::DEFAULT_TIMEOUT, sink),
        rise: threshold("rise", Check::DEFAULT_RISE, sink),
        fall: threshold("fall", Check::DEFAULT_FALL, sink),
        restart_after: get(members, "restart_after")
            .and_then(|v| decode::integer("restart_after", v, 100_000, sink))
            .map_or(Check::DEFAULT_RESTART_AFTER, |n| n as u32),
    };
    if check.timeout > check.interval {
        sink.push(
            Diagnostic::new(format!(
                "check \"timeout\" ({}) is longer than its \"interval\" ({})",
                humantime::format_duration(check.timeout),
                humantime::format_duration(check.interval)
            ))
            .at(value.span)
            .help("a check must finish before the next one starts: make timeout <= interval"),
        );
    }
    (sink.len() == before).then_some(check)
}

/// `"status": 200` or `"status": "200-399"`.
fn parse_status(value: &Json, sink: &mut Sink) -> (u16, u16) {
    let text = match &value.kind {
        JsonKind::Number(n) => n.to_string(),
        JsonKind::String(s) => s.clone(),
        _ => String::new(),
    };
    let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    let range = match text.split_once('-') {
        Some((lo, hi)) => parse(lo).zip(parse(hi)).filter(|(lo, hi)| lo <= hi),
        None => parse(&text).map(|c| (c, c)),
    };
    range.unwrap_or_else(|| {
        sink.push(
            Diagnostic::new("\"status\" must be an HTTP status or a range of them")
                .at(value.span)
                .help("write \"status\": 200 or \"status\": \"200-399\""),
        );
        (200, 399)
    })
}

fn parse_resources(value: &Json, sink: &mut Sink) -> Resources {
    let Some(members) = decode::object("resources", value, sink) else { return Resources::default() };
    decode::check_keys(members, RESOURCE_KEYS, "\"resources\"", sink);
    Resources {
        cpu: get(members, "cpu").and_then(|v| decode::number("cpu", v, sink)),
        memory_mb: get(members, "memory_mb").and_then(|v| decode::integer("memory_mb", v, 1 << 30, sink)),
    }
}

/// Durations as humans write them ("500ms"), both ways.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}
