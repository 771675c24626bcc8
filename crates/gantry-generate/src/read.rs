//! Reading a user's repository from disk into [`RepoFiles`] for the spec crate,
//! which does no IO of its own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use gantry_spec::{DATASTORES_FILE, NODES_FILE, RepoFiles, SERVICES_DIR};

/// A repository file that exists but could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not UTF-8 text; save it as UTF-8")]
    NotUtf8 { path: PathBuf },
}

/// Reads `nodes.json`, `data_bags/service/*.json` and
/// `configuration/datastores.json` under `dir`. A missing file is `None` (the
/// spec crate reports what is missing); `display` is how diagnostics name `dir`.
pub fn read_repo(dir: &Path, display: &str) -> Result<RepoFiles, ReadError> {
    let services_dir = dir.join(SERVICES_DIR);
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    };
    let mut services = Vec::new();
    match fs::read_dir(&services_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io_error(&services_dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Editors' and Gantry's own temporary files start with a dot.
                if !name.ends_with(".json") || name.starts_with('.') {
                    continue;
                }
                if let Some(text) = read_text(&entry.path())? {
                    services.push((name, text));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&services_dir)(e)),
    }
    services.sort();
    Ok(RepoFiles {
        root: display.to_string(),
        nodes: read_text(&dir.join(NODES_FILE))?,
        services,
        datastores: read_text(&dir.join(DATASTORES_FILE))?,
    })
}

fn read_text(path: &Path) -> Result<Option<String>, ReadError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| ReadError::NotUtf8 { path: path.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReadError::Io { path: path.to_path_buf(), source }),
    }
}
