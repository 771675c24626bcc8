//! Finding the user's repository on disk and reading its files for the spec crate.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gantry_spec::{DATASTORES_FILE, Diagnostic, Diagnostics, NODES_FILE, Repo, RepoFiles, SERVICES_DIR};

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

/// Finds and loads the repository; spec problems become [`BadInput`].
pub fn open(args: &RepoArgs) -> anyhow::Result<Opened> {
    let (dir, display) = match &args.repo {
        Some(dir) => {
            let mut display = dir.display().to_string();
            if !display.ends_with('/') {
                display.push('/');
            }
            (dir.clone(), display)
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
    let files = read_files(&dir, &display)?;
    let repo = gantry_spec::load(&files).map_err(|e| BadInput(e.render()))?;
    Ok(Opened { repo, dir, display })
}

/// Reads the repository's input files. A missing file is `None`; any other
/// read failure is an error naming the file.
pub fn read_files(dir: &Path, display: &str) -> anyhow::Result<RepoFiles> {
    let services_dir = dir.join(SERVICES_DIR);
    let mut services = Vec::new();
    match fs::read_dir(&services_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", services_dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".json") || name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let text = read_text(&path)?.with_context(|| format!("{} vanished while reading", path.display()))?;
                services.push((name, text));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {}", services_dir.display())),
    }
    Ok(RepoFiles {
        root: display.to_string(),
        nodes: read_text(&dir.join(NODES_FILE))?,
        services,
        datastores: read_text(&dir.join(DATASTORES_FILE))?,
    })
}

fn read_text(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| BadInput(format!("error: {} is not UTF-8 text\n = help: save it as UTF-8", path.display())).into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
