//! Layering checked on every `cargo test`: the dependency edges `cargo
//! metadata` reports against the rules ARCHITECTURE.md states. The crate
//! order is read from the code map's `### \`crate\`` headings, so the
//! document and the build cannot disagree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The benchmarks: they may use anything; nothing may use them.
const BENCH: &str = "gantry-bench";
/// The only crates of the product that open the store (the server, and the
/// binary that hands `gantry server` its store).
const STORE_OPENERS: &[&str] = &["gantry-server", "gantry"];
/// Plain data: no IO crate anywhere among their dependencies.
const PLAIN_DATA: &[&str] = &["gantry-spec", "gantry-api", "gantry-sched"];
const IO_CRATES: &[&str] = &["tokio", "mio", "reqwest", "hyper", "axum", "tonic"];

#[test]
fn dependencies_follow_the_layers_architecture_md_states() {
    let workspace = Workspace::load();
    let order = code_map_order(&workspace.root.join("ARCHITECTURE.md"));
    let mut broken = Vec::new();

    for member in &workspace.members {
        if !order.contains(member) {
            broken.push(format!(
                "{member}: not in ARCHITECTURE.md's code map; add a \"### `{member}`\" section where its dependencies allow"
            ));
        }
    }
    let rank = |name: &str| order.iter().position(|n| n == name);
    for edge in &workspace.edges {
        let (from, to) = (edge.from.as_str(), edge.to.as_str());
        let shown = format!("{from} -> {to}{}", edge.kind.suffix());
        if edge.to_member
            && edge.kind.links()
            && let (Some(f), Some(t)) = (rank(from), rank(to))
            && t >= f
        {
            broken.push(format!(
                "{shown}: breaks \"each depends only on crates above it\": {to} is not above {from} in ARCHITECTURE.md's code map"
            ));
        }
        if to == BENCH {
            broken.push(format!("{shown}: breaks \"nothing depends on the benchmarks\""));
        }
        let aws_sdk = to.starts_with("aws-sdk-") || to == "aws-config";
        if aws_sdk && edge.kind.links() && from != "gantry-aws" {
            broken.push(format!("{shown}: breaks \"only gantry-aws depends on the AWS SDK\""));
        }
        if to == "gantry-store" && edge.kind.links() && from != BENCH && !STORE_OPENERS.contains(&from) {
            broken.push(format!(
                "{shown}: breaks \"only the server opens the store\" (only {} may depend on gantry-store)",
                STORE_OPENERS.join(" and ")
            ));
        }
        if to == "gantry-store" && edge.kind.links() && from != BENCH && edge.features.contains("test-utils") {
            broken.push(format!(
                "{shown}: turns on `test-utils` (`local_etcd`), which only dev-dependencies and {BENCH} may"
            ));
        }
    }
    for plain in PLAIN_DATA {
        for io in IO_CRATES {
            if let Some(path) = workspace.normal_path(plain, io) {
                broken.push(format!("{}: breaks \"{plain} does no IO\" ({io} is an IO crate)", path.join(" -> ")));
            }
        }
    }
    assert!(broken.is_empty(), "the crates' dependencies break ARCHITECTURE.md's layering:\n{}", broken.join("\n"));
}

/// The README's first command is `scripts/gantry up ...`, which builds the
/// `gantry` binary, and `cargo run -p gantry` must run the command without a
/// `--bin`, whatever binaries join the crate later (the benchmarks once
/// lived beside it).
#[test]
fn cargo_run_runs_the_gantry_command() {
    let workspace = Workspace::load();
    let gantry = workspace.package("gantry");
    assert_eq!(
        gantry["default_run"].as_str(),
        Some("gantry"),
        "crates/gantry/Cargo.toml needs default-run = \"gantry\", so `cargo run -p gantry` runs the command"
    );
    let script = std::fs::read_to_string(workspace.root.join("scripts/gantry")).unwrap();
    assert!(script.contains("--bin gantry"), "scripts/gantry must build `--bin gantry`, the command");
}

/// The crate names of the code map's `### \`name\`` headings, in order
/// (other `###` headings there, such as `autoscale:update`, are skipped by
/// the caller's membership checks).
fn code_map_order(architecture: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(architecture).unwrap();
    let code_map = text.split("\n## Code map\n").nth(1).expect("ARCHITECTURE.md has a `## Code map` section");
    let code_map = code_map.split("\n## ").next().unwrap();
    let order: Vec<String> = code_map
        .lines()
        .filter_map(|line| line.strip_prefix("### `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("gantry"))
        .map(str::to_string)
        .collect();
    assert!(order.len() > 5, "too few crates in ARCHITECTURE.md's code map: {order:?}");
    // One section per crate: a second heading would put it in two places.
    let mut seen = BTreeSet::new();
    for name in &order {
        assert!(seen.insert(name), "ARCHITECTURE.md's code map has two \"### `{name}`\" sections; keep one");
    }
    order
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    /// Whether the dependency is part of what the crate ships (not only of
    /// its tests).
    fn links(self) -> bool {
        self != Kind::Dev
    }

    fn suffix(self) -> &'static str {
        match self {
            Kind::Normal => "",
            Kind::Build => " (build-dependency)",
            Kind::Dev => " (dev-dependency)",
        }
    }
}

/// One `[dependencies]`-style entry of a workspace crate.
struct Edge {
    from: String,
    to: String,
    to_member: bool,
    kind: Kind,
    features: BTreeSet<String>,
}

struct Workspace {
    root: PathBuf,
    members: BTreeSet<String>,
    edges: Vec<Edge>,
    metadata: Value,
}

impl Workspace {
    fn load() -> Workspace {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1"])
            .current_dir(&root)
            .output()
            .expect("running cargo metadata");
        assert!(output.status.success(), "cargo metadata failed:\n{}", String::from_utf8_lossy(&output.stderr));
        let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
        let member_ids: BTreeSet<&str> =
            metadata["workspace_members"].as_array().unwrap().iter().map(|id| id.as_str().unwrap()).collect();
        let packages = metadata["packages"].as_array().unwrap();
        let members: BTreeSet<String> = packages
            .iter()
            .filter(|p| member_ids.contains(p["id"].as_str().unwrap()))
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let mut edges = Vec::new();
        for package in packages.iter().filter(|p| member_ids.contains(p["id"].as_str().unwrap())) {
            for dep in package["dependencies"].as_array().unwrap() {
                let to = dep["name"].as_str().unwrap().to_string();
                edges.push(Edge {
                    from: package["name"].as_str().unwrap().to_string(),
                    to_member: members.contains(&to) && dep["path"].is_string(),
                    to,
                    kind: match dep["kind"].as_str() {
                        None => Kind::Normal,
                        Some("build") => Kind::Build,
                        Some(_) => Kind::Dev,
                    },
                    features: dep["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().into()).collect(),
                });
            }
        }
        Workspace { root, members, edges, metadata }
    }

    fn package(&self, name: &str) -> &Value {
        let packages = self.metadata["packages"].as_array().unwrap();
        packages.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no package {name}"))
    }

    /// The shortest chain of normal dependencies from package `from` to a
    /// package named `to`, as names, if there is one.
    fn normal_path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let packages = self.metadata["packages"].as_array().unwrap();
        let names: BTreeMap<&str, &str> =
            packages.iter().map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap())).collect();
        let name_of = |id: &str| names[id].to_string();
        let nodes: BTreeMap<&str, &Value> = self.metadata["resolve"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_str().unwrap(), n))
            .collect();
        let start = self.package(from)["id"].as_str().unwrap();
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(id) = queue.pop_front() {
            if name_of(id) == to {
                let mut path = vec![name_of(id)];
                let mut at = id;
                while let Some(&previous) = came_from.get(at) {
                    path.push(name_of(previous));
                    at = previous;
                }
                path.reverse();
                return Some(path);
            }
            for dep in nodes[id]["deps"].as_array().unwrap() {
                let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
                let next = dep["pkg"].as_str().unwrap();
                if normal && next != start && !came_from.contains_key(next) {
                    came_from.insert(next, id);
                    queue.push_back(next);
                }
            }
        }
        None
    }
}
