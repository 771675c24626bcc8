//! Integration tests of the generators: the seed example's generated files
//! are golden (they are the files committed under `examples/seatgeek`), output
//! is byte-stable, and the real `packer validate` accepts every template.

mod golden;
mod packer;

use gantry_spec::{Repo, RepoFiles};

pub(crate) const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seatgeek");

/// Reads a repository from disk the way the CLI does (the spec crate does no IO).
pub(crate) fn read_repo(root: &str) -> RepoFiles {
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).ok();
    let mut services = Vec::new();
    if let Ok(entries) = std::fs::read_dir(format!("{root}/data_bags/service")) {
        for entry in entries {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            services.push((name, std::fs::read_to_string(entry.path()).expect("readable")));
        }
    }
    RepoFiles {
        root: String::new(),
        nodes: read("nodes.json"),
        services,
        datastores: read("configuration/datastores.json"),
    }
}

pub(crate) fn load(files: &RepoFiles) -> Repo {
    gantry_spec::load(files).unwrap_or_else(|e| panic!("repository must load:\n{}", e.render()))
}
