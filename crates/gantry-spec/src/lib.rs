//! The user's repository as a checked model: `nodes.json` node groups merged
//! over `__base__`, service definitions, and datastores.
//!
//! Architecture invariant: this crate does no IO. Callers read the files and
//! hand their text to [`load`]; every problem comes back as a
//! [`diagnostic::Diagnostic`] pointing at `file:line:column`, all problems of
//! a repository at once.
#![forbid(unsafe_code)]

pub mod deploy;
pub mod diagnostic;
pub mod json;
pub mod merge;
pub mod nodes;
pub mod observe;
pub mod runlist;
pub mod scheduling;
pub mod service;
pub mod template;

mod decode;

use std::collections::{BTreeMap, BTreeSet};

pub use deploy::{Deploy, Update};
pub use diagnostic::{Diagnostic, Diagnostics, SourceMap, Span};
pub use nodes::{Autoscale, NodeGroup};
pub use observe::{Alerts, Bound, Derived, MetricsEndpoint};
pub use runlist::RunListItem;
pub use scheduling::{AttributeTest, Constraint, Reschedule, Scheduling, Spread, Strategy};
pub use service::{Check, CheckKind, Command, Resources, Service};
pub use template::Template;

use diagnostic::{Sink, nearest};

/// Where each input lives, relative to the repository root.
pub const NODES_FILE: &str = "nodes.json";
pub const SERVICES_DIR: &str = "data_bags/service";
pub const DATASTORES_FILE: &str = "configuration/datastores.json";

/// The text of a repository's input files, as read by the caller.
#[derive(Debug, Clone, Default)]
pub struct RepoFiles {
    /// How diagnostics name the repository's root: `""` when it is the
    /// current directory, `"examples/seatgeek/"` otherwise (with the slash).
    pub root: String,
    /// `nodes.json`; `None` when the file does not exist.
    pub nodes: Option<String>,
    /// `data_bags/service/*.json`: file name (with `.json`) and text.
    pub services: Vec<(String, String)>,
    /// `configuration/datastores.json`; `None` when the file does not exist.
    pub datastores: Option<String>,
}

/// A loaded, checked repository.
#[derive(Debug, Clone)]
pub struct Repo {
    pub groups: BTreeMap<String, NodeGroup>,
    pub services: BTreeMap<String, Service>,
    /// Values for requirements no live service provides.
    pub datastores: BTreeMap<String, String>,
    /// The files the repository was loaded from, for rendering diagnostics.
    pub sources: SourceMap,
}

/// A repository that did not load: its problems and the files to quote them from.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub sources: SourceMap,
    pub diagnostics: Diagnostics,
}

impl LoadError {
    /// The problems with file:line:column and the offending lines, for a terminal.
    pub fn render(&self) -> String {
        self.sources.render(&self.diagnostics)
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for LoadError {}

/// Parses one service definition as `gantry apply` stored it (the text of
/// `data_bags/service/<id>.json`), with the checks that need only the file
/// itself: requirements are resolved at run time, not checked here.
pub fn parse_service_json(id: &str, text: &str) -> Result<Service, LoadError> {
    let mut sources = SourceMap::default();
    let mut sink = Sink::default();
    let file = sources.add(format!("{SERVICES_DIR}/{id}.json"), text.to_owned());
    let service = match json::parse(file, text) {
        Ok(root) => service::parse_service(id, &root, &mut sink),
        Err(problems) => {
            problems.into_iter().for_each(|d| sink.push(d));
            None
        }
    };
    match (sink.finish(), service) {
        (Ok(()), Some(service)) => Ok(service),
        (Err(diagnostics), _) => Err(LoadError { sources, diagnostics }),
        (Ok(()), None) => unreachable!("parse_service reports why it returns nothing"),
    }
}

/// Parses and checks a whole repository, reporting every problem found.
pub fn load(files: &RepoFiles) -> Result<Repo, LoadError> {
    let mut sources = SourceMap::default();
    let mut sink = Sink::default();

    let groups = match &files.nodes {
        None => {
            sink.push(
                Diagnostic::new(format!(
                    "no {NODES_FILE} in {}",
                    if files.root.is_empty() { "this directory or its parents" } else { files.root.as_str() }
                ))
                .help(
                    "run gantry inside a repository (or pass --repo DIR) that has a nodes.json \
                 of node groups; see examples/seatgeek",
                ),
            );
            BTreeMap::new()
        }
        Some(text) => {
            let file = sources.add(format!("{}{NODES_FILE}", files.root), text.clone());
            match json::parse(file, text) {
                Ok(root) => nodes::parse_nodes(&root, &mut sink),
                Err(problems) => {
                    problems.into_iter().for_each(|d| sink.push(d));
                    BTreeMap::new()
                }
            }
        }
    };

    let mut service_files: Vec<&(String, String)> = files.services.iter().collect();
    service_files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    for (name, text) in service_files {
        let path = format!("{}{SERVICES_DIR}/{name}", files.root);
        let file = sources.add(path.clone(), text.clone());
        let stem = name.strip_suffix(".json").unwrap_or(name);
        let root = match json::parse(file, text) {
            Ok(root) => root,
            Err(problems) => {
                problems.into_iter().for_each(|d| sink.push(d));
                continue;
            }
        };
        // A duplicate id can only come from a file whose id does not match
        // its name; report the duplicate too, since that is what the user sees.
        if let Some(id_json) = root.as_object().and_then(|m| decode::get(m, "id"))
            && let Some(id) = id_json.as_str()
            && id != stem
            && files.services.iter().any(|(other, _)| other.strip_suffix(".json") == Some(id))
        {
            sink.push(
                Diagnostic::new(format!("duplicate service id \"{id}\": {SERVICES_DIR}/{id}.json defines it too"))
                    .at(id_json.span)
                    .help("each service has one file, named after its id: give this one its own id"),
            );
        }
        if let Some(service) = service::parse_service(stem, &root, &mut sink) {
            services.insert(service.id.clone(), service);
        }
    }

    let datastores = match &files.datastores {
        None => BTreeMap::new(),
        Some(text) => {
            let file = sources.add(format!("{}{DATASTORES_FILE}", files.root), text.clone());
            match json::parse(file, text) {
                Ok(root) => parse_datastores(&root, &mut sink),
                Err(problems) => {
                    problems.into_iter().for_each(|d| sink.push(d));
                    BTreeMap::new()
                }
            }
        }
    };

    if sink.is_empty() {
        check_services(&services, &datastores, &mut sink);
        check_scheduled_not_in_run_lists(&groups, &services, &mut sink);
    }
    match sink.finish() {
        Ok(()) => Ok(Repo { groups, services, datastores, sources }),
        Err(diagnostics) => Err(LoadError { sources, diagnostics }),
    }
}

fn parse_datastores(root: &json::Json, sink: &mut Sink) -> BTreeMap<String, String> {
    let Some(values) = decode::scalar_map("datastores", root, sink) else { return BTreeMap::new() };
    for m in root.as_object().unwrap_or_default() {
        if !template::is_env_name(&m.key) {
            sink.push(
                Diagnostic::new(format!("datastore name \"{}\" is not a placeholder name", m.key))
                    .at(m.key_span)
                    .help("names are letters, digits and `_`, not starting with a digit (PRIMARY_DATABASE_URL)"),
            );
        }
    }
    values
}

/// Checks across services: every requirement can be met, and nothing two
/// services claim collides within a federation.
fn check_services(services: &BTreeMap<String, Service>, datastores: &BTreeMap<String, String>, sink: &mut Sink) {
    // Provided name -> the service that provides it, per federation.
    let mut providers: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    let mut ports: BTreeMap<(&str, u16), &str> = BTreeMap::new();
    for s in services.values() {
        for name in s.provides.keys() {
            if let Some(other) = providers.insert((&s.federation, name), &s.id) {
                sink.push(
                    Diagnostic::new(format!(
                        "\"{name}\" is provided by both \"{other}\" and \"{}\" in federation \"{}\"",
                        s.id, s.federation
                    ))
                    .at(s.span_of(&format!("provides.{name}")))
                    .help("a provided name must have one provider per federation: rename one of them"),
                );
            }
        }
        if let Some(port) = s.local_port
            && let Some(other) = ports.insert((&s.federation, port), &s.id)
        {
            sink.push(
                Diagnostic::new(format!(
                    "local_port {port} of \"{}\" is also the local_port of \"{other}\" in federation \"{}\"",
                    s.id, s.federation
                ))
                .at(s.span_of("local_port"))
                .help("local load balancers listen on local_port: give each service its own"),
            );
        }
    }
    for s in services.values() {
        for (key, template) in &s.requires {
            for name in template.placeholders() {
                if providers.contains_key(&(s.federation.as_str(), name)) || datastores.contains_key(name) {
                    continue;
                }
                let known: BTreeSet<&str> = providers
                    .keys()
                    .filter(|(f, _)| *f == s.federation)
                    .map(|(_, n)| *n)
                    .chain(datastores.keys().map(String::as_str))
                    .collect();
                let help = match nearest(name, known.iter().copied()) {
                    Some(near) => format!("did you mean {{{near}}}?"),
                    None => format!(
                        "add \"{name}\" to {DATASTORES_FILE}, or add a service in federation \"{}\" that provides it",
                        s.federation
                    ),
                };
                let span = s.span_of(&format!("requires.{key}"));
                sink.push(
                    Diagnostic::new(format!(
                        "service \"{}\" requires {{{name}}} (for {key}), but no service in federation \"{}\" provides it and {DATASTORES_FILE} does not define it",
                        s.id, s.federation
                    ))
                    .at(span)
                    .help(help),
                );
            }
        }
    }
}

/// A service is placed either by run lists or by the scheduler: a group
/// whose run list names a scheduled service would run it on every node of
/// the group besides the scheduler's allocations.
fn check_scheduled_not_in_run_lists(
    groups: &BTreeMap<String, NodeGroup>,
    services: &BTreeMap<String, Service>,
    sink: &mut Sink,
) {
    for group in groups.values() {
        for item in group.role_run_list() {
            if let Some(service) = item.recipe_name().and_then(|r| services.get(r))
                && service.scheduling.is_some()
            {
                sink.push(
                    Diagnostic::new(format!(
                        "service \"{}\" has \"count\" (the scheduler places it), but the run list of group \"{}\" names it too",
                        service.id, group.name
                    ))
                    .at(service.span_of("count"))
                    .help(format!(
                        "a service is placed by run lists or by the scheduler: remove \"count\", or remove {item} from the group's run list"
                    )),
                );
            }
        }
    }
}

impl Repo {
    /// The group named `name`, or a diagnostic listing the known groups and the nearest one.
    pub fn group(&self, name: &str) -> Result<&NodeGroup, Diagnostic> {
        self.groups.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
            let mut help = match nearest(name, known.iter().copied()) {
                Some(near) => format!("did you mean \"{near}\"? "),
                None => String::new(),
            };
            if known.is_empty() {
                help.push_str("nodes.json defines no groups");
            } else {
                help.push_str(&format!("known groups: {}", known.join(", ")));
            }
            let message = if name == nodes::BASE {
                format!("\"{name}\" is what every group inherits, not a group")
            } else {
                format!("unknown group \"{name}\"")
            };
            Diagnostic::new(message).help(help)
        })
    }

    /// The service with id `id`, or a diagnostic listing the known ones.
    pub fn service(&self, id: &str) -> Result<&Service, Diagnostic> {
        self.services.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            let help = match nearest(id, known.iter().copied()) {
                Some(near) => format!("did you mean \"{near}\"? known services: {}", known.join(", ")),
                None if known.is_empty() => format!("{SERVICES_DIR}/ defines no services"),
                None => format!("known services: {}", known.join(", ")),
            };
            Diagnostic::new(format!("unknown service \"{id}\"")).help(help)
        })
    }

    /// The services a group's nodes run: each recipe in the group's role run
    /// list whose recipe name is a service id (`recipe[seatgeek-service::api]`
    /// runs service `api`), in run-list order.
    pub fn services_of(&self, group: &NodeGroup) -> Vec<&Service> {
        let mut out: Vec<&Service> = Vec::new();
        for item in group.role_run_list() {
            if let Some(service) = item.recipe_name().and_then(|r| self.services.get(r))
                && !out.iter().any(|s| s.id == service.id)
            {
                out.push(service);
            }
        }
        out
    }
}
