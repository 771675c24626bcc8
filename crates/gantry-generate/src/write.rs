//! Writing files atomically: a crash or a concurrent reader never sees half a file.
//!
//! The bytes go to a temporary file in the same directory, are flushed to
//! disk, and the temporary file is renamed over the target (rename is atomic
//! within a filesystem); then the directory is synced so the rename itself
//! survives a crash. A file whose bytes would not change is not touched.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The file did not exist, or had other bytes, and now has these.
    Written,
    /// The file already had exactly these bytes; it was not touched.
    Unchanged,
}

/// Writes `bytes` to `path` atomically, creating parent directories, unless
/// the file already holds exactly these bytes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<WriteOutcome> {
    write_atomic_with_mode(path, bytes, None)
}

/// Like [`write_atomic`], and the file gets Unix permissions `mode` (for
/// example 0o640 for env files that hold secrets) before it becomes visible.
pub fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<WriteOutcome> {
    if let Ok(existing) = fs::read(path)
        && existing == bytes
        && mode.is_none_or(|m| current_mode(path).is_some_and(|c| c == m))
    {
        return Ok(WriteOutcome::Unchanged);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile_in(dir, &file_name, mode)?;
    let result = (|| {
        // Created with `mode` already (never more open than that); set again
        // for the exact bits, which the umask may have narrowed further.
        if let Some(mode) = mode {
            set_mode(&tmp.1, mode)?;
        }
        tmp.0.write_all(bytes)?;
        tmp.0.sync_all()?;
        fs::rename(&tmp.1, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp.1);
    }
    result.map(|()| WriteOutcome::Written)
}

/// Creates a new, uniquely named temporary file beside the target. The name
/// starts with `.` and ends with `.tmp` so tools and globs skip it.
fn tempfile_in(dir: &Path, name: &str, mode: Option<u32>) -> io::Result<(fs::File, std::path::PathBuf)> {
    let pid = std::process::id();
    for attempt in 0..1000u32 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let tmp = dir.join(format!(".{name}.{pid}.{nanos}.{attempt}.tmp"));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            // A file that will hold secrets is private from its creation,
            // not narrowed after being readable for a moment.
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "could not create a unique temporary file"))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn current_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).ok().map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn current_mode(_path: &Path) -> Option<u32> {
    None
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_then_leaves_unchanged_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.json");
        assert_eq!(write_atomic(&path, b"one").unwrap(), WriteOutcome::Written);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(write_atomic(&path, b"one").unwrap(), WriteOutcome::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert_eq!(write_atomic(&path, b"two").unwrap(), WriteOutcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"two");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn mode_is_set_before_the_file_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.conf");
        write_atomic_with_mode(&path, b"export A=1\n", Some(0o640)).unwrap();
        assert_eq!(current_mode(&path), Some(0o640));
        // Same bytes but a different mode is a change.
        assert_eq!(write_atomic_with_mode(&path, b"export A=1\n", Some(0o600)).unwrap(), WriteOutcome::Written);
        assert_eq!(current_mode(&path), Some(0o600));
    }

    /// The temporary file is created with the mode, not narrowed after it
    /// existed with the umask's default (readable by everyone).
    #[cfg(unix)]
    #[test]
    fn the_temporary_file_is_born_private() {
        let dir = tempfile::tempdir().unwrap();
        let (_file, path) = tempfile_in(dir.path(), "secret.conf", Some(0o600)).unwrap();
        assert_eq!(current_mode(&path), Some(0o600));
    }
}
