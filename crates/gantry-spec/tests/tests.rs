//! Integration tests of the spec crate: the seed example loads as documented,
//! and every kind of bad input gets a diagnostic naming file, line, column,
//! what is wrong and how to fix it.

mod diagnostics;
mod model;
mod scheduling;

use gantry_spec::{Repo, RepoFiles};

/// The seed example repository shipped in `examples/seatgeek`.
fn example_files() -> RepoFiles {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seatgeek");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).ok();
    let mut services = Vec::new();
    for entry in std::fs::read_dir(format!("{root}/data_bags/service")).expect("example services") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        services.push((name, std::fs::read_to_string(entry.path()).expect("readable")));
    }
    RepoFiles {
        root: String::new(),
        nodes: read("nodes.json"),
        services,
        datastores: read("configuration/datastores.json"),
    }
}

fn load_example() -> Repo {
    gantry_spec::load(&example_files()).unwrap_or_else(|e| panic!("example must load:\n{}", e.render()))
}
