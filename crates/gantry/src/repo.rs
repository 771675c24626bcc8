//! Finding the user's repository on disk and loading it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gantry_spec::{Diagnostic, Diagnostics, NODES_FILE, Repo};

use crate::BadInput;
use crate::cli::RepoArgs;

/// A loaded repository and the directory it lives in.
#[derive(Debug)]
pub struct Opened {
    pub repo: Repo,
    pub dir: PathBuf,
    /// How messages name `dir` (`""` for the current directory).
    pub display: String,
}

impl Opened {
    /// A diagnostic about the user's request (an unknown group, say), as a bad-input error.
    pub fn bad_input(&self, diagnostics: Vec<Diagnostic>) -> anyhow::Error {
        BadInput(self.repo.sources.render(&Diagnostics(diagnostics))).into()
    }

    /// `path` inside the repository, as messages should show it.
    pub fn show_path(&self, path: &str) -> String {
        format!("{}{path}", self.display)
    }
}

/// Finds and loads the repository of `--repo`; spec problems become [`BadInput`].
pub fn open(args: &RepoArgs) -> anyhow::Result<Opened> {
    open_dir(args.repo.as_deref())
}

/// Loads the repository in `dir`, or finds it upwards from the current directory.
pub fn open_dir(dir: Option<&Path>) -> anyhow::Result<Opened> {
    let (dir, display) = match dir {
        Some(dir) => {
            let mut display = dir.display().to_string();
            if !display.ends_with('/') {
                display.push('/');
            }
            (dir.to_path_buf(), display)
        }
        None => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            match cwd.ancestors().find(|d| d.join(NODES_FILE).is_file()) {
                Some(found) if found == cwd => (cwd.clone(), String::new()),
                Some(found) => (found.to_path_buf(), format!("{}/", found.display())),
                None => (cwd, String::new()),
            }
        }
    };
    if !dir.is_dir() {
        return Err(BadInput(format!(
            "error: the repository directory {} does not exist\n = help: pass --repo DIR with the directory that holds nodes.json",
            dir.display()
        ))
        .into());
    }
    let files = gantry_generate::read::read_repo(&dir, &display).map_err(|e| match e {
        gantry_generate::read::ReadError::NotUtf8 { .. } => anyhow::Error::from(BadInput(format!("error: {e}"))),
        other => other.into(),
    })?;
    let repo = gantry_spec::load(&files).map_err(|e| BadInput(e.render()))?;
    Ok(Opened { repo, dir, display })
}
