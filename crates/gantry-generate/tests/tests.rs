//! Integration tests of the generators: the seed example's generated files
//! are golden (they are the files committed under `examples/seatgeek`), output
//! is byte-stable, and the real `packer validate` accepts every template.

mod golden;
mod packer;
mod prometheus;

use gantry_spec::{Repo, RepoFiles};

pub(crate) const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seatgeek");

pub(crate) fn read_repo(root: &str) -> RepoFiles {
    gantry_generate::read::read_repo(std::path::Path::new(root), "").expect("readable repository")
}

pub(crate) fn load(files: &RepoFiles) -> Repo {
    gantry_spec::load(files).unwrap_or_else(|e| panic!("repository must load:\n{}", e.render()))
}
