//! Scheduled services (issue 16): a service with `"count": N` is placed by
//! the scheduler on nodes with room for it, instead of by run lists. This
//! module reads what decides where: `count`, `constraints`, `spread`,
//! `strategy` and `reschedule`.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::decode::{self, get};
use crate::diagnostic::{Diagnostic, Sink, nearest};
use crate::json::{Json, JsonKind, Member};
use crate::service::Resources;

/// The service keys that only a scheduled service (one with `count`) may have.
pub const SCHEDULING_KEYS: &[&str] = &["count", "constraints", "spread", "strategy", "reschedule"];

const CONSTRAINT_KEYS: &[&str] = &["attribute", "operator", "value"];
const SPREAD_KEYS: &[&str] = &["attribute", "targets"];
const RESCHEDULE_KEYS: &[&str] = &["attempts", "interval_s", "delay_s", "max_delay_s"];
const OPERATORS: &[&str] = &["=", "!=", "in", "regex", "distinct_hosts"];
const STRATEGIES: &[&str] = &["binpack", "spread"];

/// Node attributes a constraint or a spread may name, besides `label.NAME`
/// (a machine label) and `fact.NAME` (a fact the agent reports).
pub const NODE_ATTRIBUTES: &[&str] = &["group", "region", "federation", "machine"];
const ATTRIBUTE_PREFIXES: &[&str] = &["label.", "fact."];

/// The most allocations one service may ask for: a guard against a typo
/// (`"count": 10000000`), far above what a fleet of Gantry's size runs.
pub const MAX_COUNT: u64 = 100_000;

/// How the scheduler places and keeps a service's allocations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scheduling {
    /// How many allocations run; 0 stops them all and keeps the definition.
    pub count: u32,
    /// Every constraint must hold on a node for an allocation to go there.
    pub constraints: Vec<Constraint>,
    /// Spread the allocations over a node attribute's values, evenly or by
    /// target percentages.
    pub spread: Vec<Spread>,
    pub strategy: Strategy,
    pub reschedule: Reschedule,
}

/// One placement constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// `{"attribute": "region", "operator": "=", "value": "us-east-1"}`.
    Attribute { attribute: String, test: AttributeTest },
    /// `{"operator": "distinct_hosts"}`: at most one allocation per node.
    DistinctHosts,
}

/// What a constraint requires of an attribute's value. A node without the
/// attribute passes only `!=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeTest {
    Equals(String),
    NotEquals(String),
    /// The value is one of these.
    In(Vec<String>),
    /// The value matches this regular expression somewhere (unanchored:
    /// write `^...$` to match the whole value). Checked to compile.
    Regex(String),
}

/// Spread over the values of a node attribute. With no targets, every value
/// seen among the feasible nodes gets an equal share; with targets, each
/// named value gets its percentage and the values not named share the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub attribute: String,
    /// Value to percent of the allocations; they add up to 100 or less.
    pub targets: BTreeMap<String, u8>,
}

/// Which of the nodes that fit is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The fullest node that fits: fewer nodes in use, big holes kept free.
    #[default]
    Binpack,
    /// The emptiest node: allocations spread out, less interference.
    Spread,
}

/// What happens to an allocation that keeps failing after the agent's
/// restarts in place: it is replaced on another node, after a delay that
/// doubles with each replacement, Nomad's `reschedule` for services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reschedule {
    /// At most this many replacements within `interval_s`; `None`
    /// (the default): no limit.
    pub attempts: Option<u32>,
    /// The window the attempts are counted in, and the one the delay's
    /// doubling looks back over.
    pub interval_s: u64,
    /// The delay before the first replacement.
    pub delay_s: u64,
    /// The delay never grows beyond this.
    pub max_delay_s: u64,
}

impl Default for Reschedule {
    /// Nomad's defaults for services: unlimited, 30 s doubling up to an hour.
    fn default() -> Self {
        Reschedule { attempts: None, interval_s: 3600, delay_s: 30, max_delay_s: 3600 }
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Written<'a, V: Serialize> {
            #[serde(skip_serializing_if = "Option::is_none")]
            attribute: Option<&'a str>,
            operator: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<V>,
        }
        match self {
            Constraint::DistinctHosts => {
                Written::<&str> { attribute: None, operator: "distinct_hosts", value: None }.serialize(s)
            }
            Constraint::Attribute { attribute, test } => {
                let attribute = Some(attribute.as_str());
                match test {
                    AttributeTest::In(values) => {
                        Written { attribute, operator: "in", value: Some(values) }.serialize(s)
                    }
                    AttributeTest::Equals(v) | AttributeTest::NotEquals(v) | AttributeTest::Regex(v) => {
                        Written { attribute, operator: test.operator(), value: Some(v) }.serialize(s)
                    }
                }
            }
        }
    }
}

impl AttributeTest {
    /// The operator as written in a service file.
    pub fn operator(&self) -> &'static str {
        match self {
            AttributeTest::Equals(_) => "=",
            AttributeTest::NotEquals(_) => "!=",
            AttributeTest::In(_) => "in",
            AttributeTest::Regex(_) => "regex",
        }
    }
}

impl std::fmt::Display for Constraint {
    /// `region=us-east-1`, `label.rack in r1,r2`, `distinct_hosts`: how
    /// the scheduler's explanations name a constraint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::DistinctHosts => f.write_str("distinct_hosts"),
            Constraint::Attribute { attribute, test } => match test {
                AttributeTest::Equals(v) => write!(f, "{attribute}={v}"),
                AttributeTest::NotEquals(v) => write!(f, "{attribute}!={v}"),
                AttributeTest::In(vs) => write!(f, "{attribute} in {}", vs.join(",")),
                AttributeTest::Regex(r) => write!(f, "{attribute}~/{r}/"),
            },
        }
    }
}

/// Whether `name` is an attribute constraints and spreads may name.
pub fn is_node_attribute(name: &str) -> bool {
    NODE_ATTRIBUTES.contains(&name)
        || ATTRIBUTE_PREFIXES.iter().any(|p| name.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// Reads the scheduling keys of a service definition: `Some` when it has a
/// `count`. The other keys without a `count` are an error, as is a `count`
/// without the resources to place it by.
pub(crate) fn parse_scheduling(
    members: &[Member],
    resources: &Resources,
    root: &Json,
    sink: &mut Sink,
) -> Option<Scheduling> {
    let Some(count_json) = get(members, "count") else {
        for key in &SCHEDULING_KEYS[1..] {
            if let Some(m) = members.iter().find(|m| m.key == *key) {
                sink.push(
                    Diagnostic::new(format!(
                        "\"{key}\" applies to scheduled services only, and this one has no \"count\""
                    ))
                    .at(m.key_span)
                    .help(format!(
                        "add \"count\": N to have the scheduler place N allocations, or remove \"{key}\" \
                             (run lists place this service)"
                    )),
                );
            }
        }
        return None;
    };
    let count = decode::integer("count", count_json, MAX_COUNT, sink);
    let resources_at = get(members, "resources").map_or(root.span, |r| r.span);
    if resources.cpu.is_none() || resources.memory_mb.is_none() {
        let missing = match (resources.cpu, resources.memory_mb) {
            (None, None) => "\"resources\"",
            (None, Some(_)) => "\"resources\".\"cpu\"",
            _ => "\"resources\".\"memory_mb\"",
        };
        sink.push(
            Diagnostic::new(format!(
                "a scheduled service needs {missing}: the scheduler places it where they are free"
            ))
            .at(if get(members, "resources").is_some() { resources_at } else { count_json.span })
            .help("say what one allocation needs: \"resources\": {\"cpu\": 0.5, \"memory_mb\": 256}"),
        );
    }
    let constraints = get(members, "constraints").map(|v| parse_constraints(v, sink)).unwrap_or_default();
    let spread = get(members, "spread").map(|v| parse_spreads(v, sink)).unwrap_or_default();
    let strategy = get(members, "strategy").and_then(|v| parse_strategy(v, sink)).unwrap_or_default();
    let reschedule = get(members, "reschedule").map(|v| parse_reschedule(v, sink)).unwrap_or_default();
    Some(Scheduling { count: count? as u32, constraints, spread, strategy, reschedule })
}

fn parse_constraints(value: &Json, sink: &mut Sink) -> Vec<Constraint> {
    let JsonKind::Array(items) = &value.kind else {
        sink.push(decode::type_error("constraints", "a list of constraints", value).help(
            "write \"constraints\": [{\"attribute\": \"region\", \"operator\": \"=\", \"value\": \"us-east-1\"}]",
        ));
        return Vec::new();
    };
    items.iter().filter_map(|item| parse_constraint(item, sink)).collect()
}

fn parse_constraint(value: &Json, sink: &mut Sink) -> Option<Constraint> {
    let members = decode::object("constraints[]", value, sink)?;
    decode::check_keys(members, CONSTRAINT_KEYS, "a constraint", sink);
    let Some(op_json) = get(members, "operator") else {
        sink.push(
            Diagnostic::new("the constraint has no \"operator\"")
                .at(value.span)
                .help("add \"operator\": one of \"=\", \"!=\", \"in\", \"regex\", \"distinct_hosts\""),
        );
        return None;
    };
    let operator = decode::string("operator", op_json, sink)?;
    if operator == "distinct_hosts" {
        for key in ["attribute", "value"] {
            if let Some(m) = members.iter().find(|m| m.key == key) {
                sink.push(
                    Diagnostic::new(format!("\"distinct_hosts\" takes no \"{key}\""))
                        .at(m.key_span)
                        .help("write {\"operator\": \"distinct_hosts\"}: at most one allocation per node"),
                );
            }
        }
        return Some(Constraint::DistinctHosts);
    }
    let attribute = match get(members, "attribute") {
        Some(a) => parse_attribute(a, sink),
        None => {
            sink.push(
                Diagnostic::new(format!("the \"{operator}\" constraint has no \"attribute\""))
                    .at(value.span)
                    .help(format!("add \"attribute\": one of {}, label.NAME or fact.NAME", quoted(NODE_ATTRIBUTES))),
            );
            None
        }
    };
    if !OPERATORS.contains(&operator.as_str()) {
        let help = match nearest(&operator, OPERATORS.iter().copied()) {
            Some(near) => format!("did you mean \"{near}\"? operators: {}", quoted(OPERATORS)),
            None => format!("operators: {}", quoted(OPERATORS)),
        };
        sink.push(Diagnostic::new(format!("unknown constraint operator \"{operator}\"")).at(op_json.span).help(help));
        return None;
    }
    let Some(value_json) = get(members, "value") else {
        let example = if operator == "in" { "[\"us-east-1\", \"us-west-2\"]" } else { "\"us-east-1\"" };
        sink.push(
            Diagnostic::new(format!("the \"{operator}\" constraint has no \"value\""))
                .at(value.span)
                .help(format!("add \"value\": {example}")),
        );
        return None;
    };
    let test = match operator.as_str() {
        "=" => AttributeTest::Equals(decode::string("value", value_json, sink)?),
        "!=" => AttributeTest::NotEquals(decode::string("value", value_json, sink)?),
        "in" => AttributeTest::In(
            decode::string_list("value", value_json, sink)?.into_iter().map(|(s, _)| s.to_string()).collect(),
        ),
        _ => {
            let pattern = decode::string("value", value_json, sink)?;
            if let Err(e) = regex::Regex::new(&pattern) {
                sink.push(
                    Diagnostic::new(format!("invalid regular expression \"{pattern}\": {}", regex_problem(&e)))
                        .at(value_json.span)
                        .help("write a regular expression such as \"^us-(east|west)-[0-9]+$\" (Rust regex syntax)"),
                );
                return None;
            }
            AttributeTest::Regex(pattern)
        }
    };
    Some(Constraint::Attribute { attribute: attribute?, test })
}

/// The last line of the regex crate's message: the problem itself, without
/// its own rendering of the pattern and carets.
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_string()
}

fn parse_attribute(value: &Json, sink: &mut Sink) -> Option<String> {
    let name = decode::string("attribute", value, sink)?;
    if is_node_attribute(&name) {
        return Some(name);
    }
    let help = match nearest(&name, NODE_ATTRIBUTES.iter().copied()) {
        Some(near) => format!("did you mean \"{near}\"?"),
        None if !name.contains('.') && !name.is_empty() => {
            format!("a machine label is \"label.{name}\", a fact \"fact.{name}\"")
        }
        None => format!("attributes: {}, label.NAME and fact.NAME", quoted(NODE_ATTRIBUTES)),
    };
    sink.push(Diagnostic::new(format!("unknown node attribute \"{name}\"")).at(value.span).help(help));
    None
}

/// `"spread"` is one object or a list of them.
fn parse_spreads(value: &Json, sink: &mut Sink) -> Vec<Spread> {
    match &value.kind {
        JsonKind::Array(items) => items.iter().filter_map(|item| parse_spread(item, sink)).collect(),
        _ => parse_spread(value, sink).into_iter().collect(),
    }
}

fn parse_spread(value: &Json, sink: &mut Sink) -> Option<Spread> {
    let Some(members) = value.as_object() else {
        sink.push(
            decode::type_error("spread", "an object or a list of them", value).help(
                "write \"spread\": {\"attribute\": \"label.rack\"}, or with \"targets\": {\"r1\": 50, \"r2\": 50}",
            ),
        );
        return None;
    };
    decode::check_keys(members, SPREAD_KEYS, "\"spread\"", sink);
    let attribute = match get(members, "attribute") {
        Some(a) => parse_attribute(a, sink),
        None => {
            sink.push(
                Diagnostic::new("the spread has no \"attribute\"")
                    .at(value.span)
                    .help("add \"attribute\": \"label.rack\" (or region, group, federation, machine, fact.NAME)"),
            );
            None
        }
    };
    let mut targets = BTreeMap::new();
    if let Some(t) = get(members, "targets")
        && let Some(entries) = decode::object("targets", t, sink)
    {
        let mut sum = 0;
        for m in entries {
            if let Some(pct) = decode::integer(&m.key, &m.value, 100, sink) {
                sum += pct;
                targets.insert(m.key.clone(), pct as u8);
            }
        }
        if sum > 100 {
            sink.push(
                Diagnostic::new(format!("the spread's targets add up to {sum}%, more than 100%"))
                    .at(t.span)
                    .help("make the percentages add up to 100 or less (values not named share what is left)"),
            );
        }
    }
    Some(Spread { attribute: attribute?, targets })
}

fn parse_strategy(value: &Json, sink: &mut Sink) -> Option<Strategy> {
    match decode::string("strategy", value, sink)?.as_str() {
        "binpack" => Some(Strategy::Binpack),
        "spread" => Some(Strategy::Spread),
        other => {
            let help = match nearest(other, STRATEGIES.iter().copied()) {
                Some(near) => format!("did you mean \"{near}\"?"),
                None => "use \"binpack\" (the fullest node that fits, the default) or \"spread\" (the emptiest)".into(),
            };
            sink.push(Diagnostic::new(format!("unknown strategy \"{other}\"")).at(value.span).help(help));
            None
        }
    }
}

fn parse_reschedule(value: &Json, sink: &mut Sink) -> Reschedule {
    let defaults = Reschedule::default();
    let Some(members) = decode::object("reschedule", value, sink) else { return defaults };
    decode::check_keys(members, RESCHEDULE_KEYS, "\"reschedule\"", sink);
    // A day bounds every duration: longer waits are a stopped service.
    let seconds = |key: &str, default: u64, sink: &mut Sink| {
        get(members, key).and_then(|v| decode::integer(key, v, 86_400, sink)).unwrap_or(default)
    };
    let attempts = get(members, "attempts").and_then(|v| decode::integer("attempts", v, 1000, sink)).map(|n| n as u32);
    let interval_s = seconds("interval_s", defaults.interval_s, sink);
    let delay_s = seconds("delay_s", defaults.delay_s, sink);
    // A delay longer than the default cap raises the cap with it.
    let max_delay_s = seconds("max_delay_s", defaults.max_delay_s.max(delay_s), sink);
    let policy = Reschedule { attempts, interval_s, delay_s, max_delay_s };
    if policy.delay_s > policy.max_delay_s {
        sink.push(
            Diagnostic::new(format!(
                "\"delay_s\" ({}) is longer than \"max_delay_s\" ({})",
                policy.delay_s, policy.max_delay_s
            ))
            .at(value.span)
            .help("the delay doubles up to max_delay_s: make delay_s <= max_delay_s"),
        );
    }
    if policy.attempts.is_some()
        && policy.interval_s == 0
        && let Some(v) = get(members, "interval_s")
    {
        sink.push(
            Diagnostic::new("\"interval_s\" is 0, so no attempt is ever counted")
                .at(v.span)
                .help("give the window the attempts are counted in, such as \"interval_s\": 3600"),
        );
    }
    policy
}

fn quoted(items: &[&str]) -> String {
    items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ")
}
