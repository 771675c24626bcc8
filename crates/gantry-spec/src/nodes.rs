//! `nodes.json`: node groups, merged over `__base__` (seed 004), checked and typed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::decode::{self, get};
use crate::diagnostic::{Diagnostic, Sink, Span};
use crate::json::{Json, JsonKind, Member};
use crate::merge::merge_group;
use crate::runlist::{RunListItem, is_role_name};

/// The key whose members every group inherits. It is not a group itself.
pub const BASE: &str = "__base__";

/// Every key a node group (or `__base__`) may have.
pub const GROUP_KEYS: &[&str] = &[
    "description",
    "autoscale",
    "type",
    "region",
    "instance_type",
    "source_ami",
    "ssh_username",
    "communicator",
    "subnet_id",
    "vpc_id",
    "associate_public_ip_address",
    "iam_instance_profile",
    "builder_options",
    "security_groups",
    "tags",
    "default_attributes",
    "override_attributes",
    "env_run_lists",
    "run_list",
    "post_run_list",
];

const AUTOSCALE_KEYS: &[&str] = &["timeout", "node_min", "node_max", "desired"];

/// One node group after the merge: what `nodes:show` prints and every
/// generator reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeGroup {
    pub name: String,
    pub description: Option<String>,
    /// `None` when the group is not autoscaled (`"autoscale": false`).
    pub autoscale: Option<Autoscale>,
    /// The packer builder type; Gantry writes `amazon-ebs` templates.
    #[serde(rename = "type")]
    pub builder_type: String,
    pub region: Option<String>,
    pub instance_type: Option<String>,
    pub source_ami: Option<String>,
    pub ssh_username: Option<String>,
    pub communicator: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub associate_public_ip_address: Option<bool>,
    pub iam_instance_profile: Option<String>,
    /// Further amazon-ebs builder options, copied into the packer template as written.
    pub builder_options: BTreeMap<String, serde_json::Value>,
    pub security_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub default_attributes: BTreeMap<String, serde_json::Value>,
    pub override_attributes: BTreeMap<String, serde_json::Value>,
    pub env_run_lists: BTreeMap<String, Vec<RunListItem>>,
    pub run_list: Vec<RunListItem>,
    pub post_run_list: Vec<RunListItem>,
    /// Where the group is defined (its key in nodes.json), for diagnostics.
    #[serde(skip)]
    pub span: Span,
}

/// Autoscaling sizes (seed 004: `timeout`, `node_min`, `node_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Autoscale {
    /// Seconds a new node gets before health checks count (the ASG's
    /// health-check grace period), and the wait before an old group is removed
    /// on `autoscale:update`.
    pub timeout: u64,
    pub node_min: u32,
    pub node_max: u32,
    pub desired: u32,
}

impl Autoscale {
    pub const DEFAULT_TIMEOUT: u64 = 300;
}

impl NodeGroup {
    /// The Chef role's run list: the group's run list (base first, as merged)
    /// then the post run list, duplicates dropped as Chef drops them.
    pub fn role_run_list(&self) -> Vec<RunListItem> {
        let mut out: Vec<RunListItem> = Vec::new();
        for item in self.run_list.iter().chain(&self.post_run_list) {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        out
    }

    /// The Chef role name for this group.
    pub fn role_name(&self) -> String {
        format!("role-{}", self.name)
    }
}

/// Reads the whole of nodes.json: checks `__base__` and every group, merges, types.
pub(crate) fn parse_nodes(root: &Json, sink: &mut Sink) -> BTreeMap<String, NodeGroup> {
    let Some(top) = root.as_object() else {
        sink.push(
            Diagnostic::new(format!("nodes.json must be an object of node groups, found {}", root.type_name()))
                .at(root.span)
                .help("write {\"__base__\": {...}, \"my-group\": {...}}"),
        );
        return BTreeMap::new();
    };
    let mut base: &[Member] = &[];
    let mut groups: Vec<(&Member, &[Member])> = Vec::new();
    for m in top {
        let Some(members) = m.value.as_object() else {
            sink.push(
                Diagnostic::new(format!("node group \"{}\" must be an object, found {}", m.key, m.value.type_name()))
                    .at(m.value.span)
                    .help("a group is an object of settings: {\"instance_type\": \"m1.large\", ...}"),
            );
            continue;
        };
        let what = if m.key == BASE { BASE.to_string() } else { format!("group \"{}\"", m.key) };
        decode::check_keys(members, GROUP_KEYS, &what, sink);
        if m.key == BASE {
            base = members;
        } else if !is_group_name(&m.key) {
            sink.push(Diagnostic::new(format!("invalid group name \"{}\"", m.key)).at(m.key_span).help(
                "group names become Chef role names (role-<group>) and file names: \
                     use letters, digits, `_` and `-`, up to 64 characters, not starting with `_` or `-`",
            ));
        } else {
            groups.push((m, members));
        }
    }
    let mut out = BTreeMap::new();
    for (m, members) in groups {
        let merged = merge_group(base, members);
        if let Some(group) = decode_group(&m.key, m.key_span, &merged, sink) {
            out.insert(m.key.clone(), group);
        }
    }
    out
}

/// Group names: Chef role-name characters, at most 64, starting with a letter or digit.
pub fn is_group_name(name: &str) -> bool {
    is_role_name(name) && name.len() <= 64 && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn decode_group(name: &str, span: Span, members: &[Member], sink: &mut Sink) -> Option<NodeGroup> {
    let before = sink.len();
    let string = |key: &str, sink: &mut Sink| get(members, key).and_then(|v| decode::string(key, v, sink));
    let attributes = |key: &str, sink: &mut Sink| {
        get(members, key)
            .and_then(|v| decode::object(key, v, sink))
            .map(|ms| ms.iter().map(|m| (m.key.clone(), m.value.to_value())).collect())
            .unwrap_or_default()
    };
    let run_list =
        |key: &str, sink: &mut Sink| get(members, key).map(|v| parse_run_list(key, v, sink)).unwrap_or_default();
    let group = NodeGroup {
        name: name.to_string(),
        description: string("description", sink),
        autoscale: get(members, "autoscale").and_then(|v| parse_autoscale(v, sink)),
        builder_type: string("type", sink).unwrap_or_else(|| "amazon-ebs".to_string()),
        region: string("region", sink),
        instance_type: string("instance_type", sink),
        source_ami: string("source_ami", sink),
        ssh_username: string("ssh_username", sink),
        communicator: string("communicator", sink),
        subnet_id: string("subnet_id", sink),
        vpc_id: string("vpc_id", sink),
        associate_public_ip_address: get(members, "associate_public_ip_address")
            .and_then(|v| decode::boolean("associate_public_ip_address", v, sink)),
        iam_instance_profile: string("iam_instance_profile", sink),
        builder_options: attributes("builder_options", sink),
        security_groups: get(members, "security_groups")
            .and_then(|v| decode::string_list("security_groups", v, sink))
            .map(|items| items.into_iter().map(|(s, _)| s.to_string()).collect())
            .unwrap_or_default(),
        tags: get(members, "tags").and_then(|v| decode::scalar_map("tags", v, sink)).unwrap_or_default(),
        default_attributes: attributes("default_attributes", sink),
        override_attributes: attributes("override_attributes", sink),
        env_run_lists: get(members, "env_run_lists")
            .and_then(|v| decode::object("env_run_lists", v, sink))
            .map(|ms| ms.iter().map(|m| (m.key.clone(), parse_run_list(&m.key, &m.value, sink))).collect())
            .unwrap_or_default(),
        run_list: run_list("run_list", sink),
        post_run_list: run_list("post_run_list", sink),
        span,
    };
    if let Some(ty) = get(members, "type")
        && group.builder_type != "amazon-ebs"
    {
        sink.push(
            Diagnostic::new(format!("unsupported builder type \"{}\"", group.builder_type))
                .at(ty.span)
                .help("Gantry writes amazon-ebs packer templates: use \"type\": \"amazon-ebs\""),
        );
    }
    (sink.len() == before).then_some(group)
}

fn parse_run_list(key: &str, value: &Json, sink: &mut Sink) -> Vec<RunListItem> {
    let Some(items) = decode::string_list(key, value, sink) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (text, json) in items {
        match RunListItem::parse(text) {
            Ok(item) => out.push(item),
            Err(e) => sink.push(
                Diagnostic::new(format!("invalid run-list item \"{text}\" in \"{key}\""))
                    .at(json.span)
                    .help(e.to_string()),
            ),
        }
    }
    out
}

fn parse_autoscale(value: &Json, sink: &mut Sink) -> Option<Autoscale> {
    let defaults = Autoscale { timeout: Autoscale::DEFAULT_TIMEOUT, node_min: 1, node_max: 1, desired: 1 };
    let members = match &value.kind {
        JsonKind::Bool(false) => return None,
        JsonKind::Bool(true) => return Some(defaults),
        JsonKind::Object(members) => members,
        _ => {
            sink.push(decode::type_error("autoscale", "false, true or an object", value));
            return None;
        }
    };
    decode::check_keys(members, AUTOSCALE_KEYS, "\"autoscale\"", sink);
    let int =
        |key: &str, sink: &mut Sink| get(members, key).and_then(|v| decode::integer(key, v, u64::from(u32::MAX), sink));
    let timeout = int("timeout", sink).unwrap_or(defaults.timeout);
    let node_min = int("node_min", sink).map(|v| v as u32).unwrap_or(defaults.node_min);
    let node_max = int("node_max", sink).map(|v| v as u32).unwrap_or(node_min.max(1));
    let desired = int("desired", sink).map(|v| v as u32).unwrap_or(node_min);
    if node_min > node_max {
        sink.push(
            Diagnostic::new(format!("\"node_min\" ({node_min}) is larger than \"node_max\" ({node_max})"))
                .at(value.span)
                .help("an autoscaling group needs node_min <= desired <= node_max"),
        );
        return None;
    }
    if !(node_min..=node_max).contains(&desired) {
        sink.push(
            Diagnostic::new(format!("\"desired\" ({desired}) is outside node_min..node_max ({node_min}..{node_max})"))
                .at(value.span)
                .help("an autoscaling group needs node_min <= desired <= node_max"),
        );
        return None;
    }
    Some(Autoscale { timeout, node_min, node_max, desired })
}
