//! Where release artifacts live: content-addressed by SHA-256 behind
//! [`ArtifactStore`]. [`LocalArtifacts`] keeps them as files under the
//! server's data directory (`artifacts/sha256/<hex>`); `gantry server
//! --artifacts s3://...` plugs in another implementation.
//!
//! An upload is staged in a file of the store's staging directory while
//! its hash is computed; only bytes whose hash is the one named are put
//! in place, by rename, so a reader never sees a half-written artifact.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
/// The artifact store a server shares among its requests.
pub type SharedArtifacts = std::sync::Arc<dyn ArtifactStore>;

/// A content-addressed store of artifacts. Names are lower-case hex SHA-256.
pub trait ArtifactStore: Send + Sync + Debug {
    /// Where the store is, for messages.
    fn describe(&self) -> String;
    /// Where uploads are staged (on local disk) before [`ArtifactStore::put`].
    fn staging(&self) -> &Path;
    /// The artifact's size, if it is stored.
    fn stat<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<Option<u64>>>;
    /// Stores the verified file `staged` as `sha256` (taking it: it is
    /// moved or removed).
    fn put<'a>(&'a self, sha256: &'a str, staged: &'a Path) -> BoxFuture<'a, io::Result<()>>;
    /// The artifact's size and bytes, if it is stored.
    fn open<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<Option<(u64, ByteStream)>>>;
    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<()>>;
}

/// Whether `name` is a SHA-256 as the store names artifacts.
pub fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Artifacts as files under a directory (the server's `<data-dir>/artifacts`).
#[derive(Debug)]
pub struct LocalArtifacts {
    dir: PathBuf,
    staging: PathBuf,
}

impl LocalArtifacts {
    /// Opens (creating, private) `dir`.
    pub fn open(dir: &Path) -> io::Result<LocalArtifacts> {
        let staging = dir.join("staging");
        std::fs::create_dir_all(dir.join("sha256"))?;
        std::fs::create_dir_all(&staging)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        // Staged files of a server that died mid-upload.
        for entry in std::fs::read_dir(&staging)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(LocalArtifacts { dir: dir.to_owned(), staging })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }
}

impl ArtifactStore for LocalArtifacts {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn staging(&self) -> &Path {
        &self.staging
    }

    fn stat<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move {
            match std::fs::metadata(self.path(sha256)) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn put<'a>(&'a self, sha256: &'a str, staged: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let target = self.path(sha256);
            let dir = self.dir.join("sha256");
            let staged = staged.to_owned();
            tokio::task::spawn_blocking(move || {
                std::fs::File::open(&staged)?.sync_all()?;
                std::fs::rename(&staged, &target)?;
                std::fs::File::open(&dir)?.sync_all()
            })
            .await
            .map_err(io::Error::other)?
        })
    }

    fn open<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<Option<(u64, ByteStream)>>> {
        Box::pin(async move {
            let file = match std::fs::File::open(self.path(sha256)) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = file.metadata()?.len();
            Ok(Some((size, read_stream(file))))
        })
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match std::fs::remove_file(self.path(sha256)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }
}

/// A file's bytes as a stream of 1 MiB chunks, each read off the event loop.
pub fn read_stream(file: std::fs::File) -> ByteStream {
    Box::pin(futures::stream::try_unfold(file, |mut file| async move {
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut buf = vec![0u8; 1 << 20];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, io::Error>((buf, file))
        });
        let (buf, file) = read.await.map_err(io::Error::other)??;
        Ok((!buf.is_empty()).then(|| (Bytes::from(buf), file)))
    }))
}
