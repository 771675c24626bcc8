//! Objects of one S3 bucket under a prefix: what `gantry server
//! --artifacts s3://BUCKET/PREFIX` keeps release artifacts in. Keys are
//! `PREFIX/sha256/<hex>`; the caller names objects by their hex SHA-256.
//!
//! Objects are put whole from a local file (PutObject: up to 5 GiB) and
//! read back as a stream. No checksum is asked of S3 beyond what the
//! operation requires: the agents verify every artifact's SHA-256 anyway,
//! and S3-compatible servers differ in the checksums they accept.

use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use crate::Error;

/// A bucket and a key prefix, from `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`; `None` when `url` is no such URL.
    pub fn parse(url: &str) -> Option<S3Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        valid.then(|| S3Location { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned() })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// An S3 client bound to one bucket and prefix.
#[derive(Debug, Clone)]
pub struct S3Objects {
    client: aws_sdk_s3::Client,
    location: S3Location,
    region: String,
}

impl S3Objects {
    /// Connects as `connect` and the AWS environment say (`AWS_ENDPOINT_URL` for an
    /// S3-compatible server, which is then addressed path-style) and checks
    /// that the bucket exists and may be read, so that a wrong bucket is
    /// reported at once.
    pub async fn open(location: S3Location, connect: &crate::Connect) -> Result<S3Objects, Error> {
        let (config, region) = crate::sdk_config(connect).await?;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(config.endpoint_url().is_some())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let objects = S3Objects { client: aws_sdk_s3::Client::from_conf(s3), location, region };
        objects.client.head_bucket().bucket(&objects.location.bucket).send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            match status {
                Some(404) => {
                    Error::BucketNotFound { bucket: objects.location.bucket.clone(), region: objects.region.clone() }
                }
                Some(403) => {
                    Error::BucketDenied { bucket: objects.location.bucket.clone(), region: objects.region.clone() }
                }
                _ => objects.error("HeadBucket", e),
            }
        })?;
        Ok(objects)
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    fn key(&self, name: &str) -> String {
        match self.location.prefix.as_str() {
            "" => format!("sha256/{name}"),
            prefix => format!("{prefix}/sha256/{name}"),
        }
    }

    /// The object's size, if it exists (HeadObject).
    pub async fn stat(&self, name: &str) -> Result<Option<u64>, Error> {
        match self.client.head_object().bucket(&self.location.bucket).key(self.key(name)).send().await {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.error("HeadObject", e)),
        }
    }

    /// Stores the file at `path` as object `name` (PutObject).
    pub async fn put(&self, name: &str, path: &std::path::Path) -> Result<(), Error> {
        let body = ByteStream::from_path(path).await.map_err(|e| Error::Api {
            operation: "PutObject",
            region: self.region.clone(),
            message: format!("reading {}: {e}", path.display()),
        })?;
        let put = self.client.put_object().bucket(&self.location.bucket).key(self.key(name)).body(body);
        put.send().await.map_err(|e| self.error("PutObject", e))?;
        Ok(())
    }

    /// The object's size and bytes, if it exists (GetObject).
    pub async fn get(&self, name: &str) -> Result<Option<(u64, ObjectBytes)>, Error> {
        match self.client.get_object().bucket(&self.location.bucket).key(self.key(name)).send().await {
            Ok(out) => {
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                Ok(Some((size, ObjectBytes { body: out.body })))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.error("GetObject", e)),
        }
    }

    /// Deletes object `name` (absent already is no error: DeleteObject).
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        let delete = self.client.delete_object().bucket(&self.location.bucket).key(self.key(name));
        delete.send().await.map_err(|e| self.error("DeleteObject", e))?;
        Ok(())
    }

    fn error<E>(&self, operation: &'static str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        crate::api_error(operation, &self.region, e)
    }
}

/// An object's bytes as they arrive.
#[derive(Debug)]
pub struct ObjectBytes {
    body: ByteStream,
}

impl ObjectBytes {
    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<std::io::Result<bytes::Bytes>> {
        self.body.next().await.map(|chunk| chunk.map_err(std::io::Error::other))
    }
}

#[cfg(test)]
mod tests {
    use super::S3Location;

    #[test]
    fn locations_parse_bucket_and_prefix() {
        let at = |bucket: &str, prefix: &str| Some(S3Location { bucket: bucket.into(), prefix: prefix.into() });
        assert_eq!(S3Location::parse("s3://my-bucket"), at("my-bucket", ""));
        assert_eq!(S3Location::parse("s3://my-bucket/"), at("my-bucket", ""));
        assert_eq!(S3Location::parse("s3://my-bucket/a/b/"), at("my-bucket", "a/b"));
        assert_eq!(S3Location::parse("/var/lib/gantry"), None);
        assert_eq!(S3Location::parse("s3://"), None);
        assert_eq!(S3Location::parse("s3://Upper_Case/x"), None);
    }
}
