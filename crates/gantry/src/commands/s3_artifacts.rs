//! `gantry server --artifacts s3://BUCKET/PREFIX`: the server's artifact
//! store in an S3 bucket, over gantry-aws's [`S3Objects`], handed to the
//! server as a [`gantry_server::ArtifactStore`] (the server does not depend
//! on the AWS SDK). Uploads are staged on local disk under the data
//! directory while their hash is checked, then put whole; downloads stream
//! from S3 through the server to the agents, which need no AWS credentials.

use std::io;
use std::path::{Path, PathBuf};

use gantry_aws::{S3Location, S3Objects};
use gantry_server::{ArtifactStore, BoxFuture, ByteStream};

#[derive(Debug)]
pub struct S3Artifacts {
    objects: S3Objects,
    staging: PathBuf,
}

impl S3Artifacts {
    /// Connects to the bucket (it must exist) and makes the local staging
    /// directory `staging` (private), emptied of a previous run's leftovers.
    pub async fn open(location: S3Location, staging: &Path) -> Result<S3Artifacts, String> {
        let objects = S3Objects::open(location.clone(), &gantry_aws::Connect::default())
            .await
            .map_err(|e| format!("cannot open the artifact store {location}: {e}"))?;
        let prepare = || -> io::Result<()> {
            std::fs::create_dir_all(staging)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(staging)?.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
            Ok(())
        };
        prepare().map_err(|e| format!("cannot prepare the staging directory {}: {e}", staging.display()))?;
        Ok(S3Artifacts { objects, staging: staging.to_owned() })
    }
}

impl ArtifactStore for S3Artifacts {
    fn describe(&self) -> String {
        self.objects.location().to_string()
    }

    fn staging(&self) -> &Path {
        &self.staging
    }

    fn stat<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move { self.objects.stat(sha256).await.map_err(io::Error::other) })
    }

    fn put<'a>(&'a self, sha256: &'a str, staged: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let put = self.objects.put(sha256, staged).await.map_err(io::Error::other);
            let _ = std::fs::remove_file(staged);
            put
        })
    }

    fn open<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<Option<(u64, ByteStream)>>> {
        Box::pin(async move {
            let Some((size, bytes)) = self.objects.get(sha256).await.map_err(io::Error::other)? else {
                return Ok(None);
            };
            let stream =
                futures::stream::unfold(
                    bytes,
                    |mut bytes| async move { bytes.next().await.map(|chunk| (chunk, bytes)) },
                );
            Ok(Some((size, Box::pin(stream) as ByteStream)))
        })
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.objects.delete(sha256).await.map_err(io::Error::other) })
    }
}
