//! Typed AWS operations the gantry command calls, over the official SDK:
//! a node group's AMIs (`images`), launch templates, key pairs and one-off
//! instances (`instances`), autoscaling groups and instance refreshes
//! (`autoscaling`), the objects of an S3 bucket under a prefix (`s3`:
//! the server's artifact store), the public half of a private key file (`keys`), and
//! the algorithms that launch, replace and refresh a node group's
//! autoscaling groups (`generations`), written against a small trait so
//! that they are tested without AWS.
//!
//! Credentials and region come from the SDK's usual places (environment,
//! profile, instance metadata); an endpoint (`AWS_ENDPOINT_URL`, or one the
//! caller passes) points every call at an AWS-compatible server such as
//! moto. Throttled calls are retried with exponential backoff by the SDK's
//! standard retry strategy.
//!
//! Architecture invariant: this is the only crate of the workspace that
//! depends on the AWS SDK (minutes to build cold); everything else sees
//! plain structs and [`Error`].
//!
//! Architecture invariant: no credential is ever part of a value this
//! crate returns or of an error's message.
#![forbid(unsafe_code)]

mod autoscaling;
pub mod generations;
mod images;
mod instances;
mod keys;
mod s3;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub use autoscaling::{Asg, AsgInstance, AsgSettings, NewAsg, Refresh, RefreshState};
pub use images::{Image, beyond_newest, newest_first};
pub use instances::{Instance, KeyPair, LaunchSpec, TemplateVersion};
pub use keys::{PublicKey, public_key_of};
pub use s3::{ObjectBytes, S3Location, S3Objects};

/// The tag that says which node group an AMI, an autoscaling group or an
/// instance belongs to.
pub const GROUP_TAG: &str = "group";

/// The tag that names the repository commit an AMI was built from.
pub const GIT_COMMIT_TAG: &str = "git_commit";

/// The tag the EC2 console shows as an instance's name.
pub const NAME_TAG: &str = "Name";

/// Attempts per call: throttling (`RequestLimitExceeded`, `Throttling`) and
/// transient errors are retried with exponential backoff and jitter up to
/// this many times in all.
const MAX_ATTEMPTS: u32 = 5;

/// How to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// An AWS-compatible endpoint (a moto server in tests); `None` uses the
    /// SDK's own resolution, which honours `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// The region when the environment and profile name none (the node
    /// group's `region`).
    pub fallback_region: Option<String>,
    /// A region that wins over everything (an AMI's own region).
    pub region: Option<String>,
}

/// What can go wrong talking to AWS. Messages say what to do; none repeats
/// its source or contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no AWS region: set AWS_REGION, a region in the AWS profile, or \"region\" in the node group")]
    NoRegion,
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in ~/.aws/credentials"
    )]
    NoCredentials {
        #[source]
        source: aws_sdk_ec2::error::BoxError,
    },
    #[error("S3 bucket {bucket} not found in {region}: create it (`aws s3 mb s3://{bucket}`), or fix the URL")]
    BucketNotFound { bucket: String, region: String },
    #[error(
        "S3 bucket {bucket} in {region}: access denied to these credentials: grant them s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it"
    )]
    BucketDenied { bucket: String, region: String },
    #[error("AMI {image_id} not found in {region}")]
    ImageNotFound { image_id: String, region: String },
    #[error("security group(s) {} not found in {region}{}: create them, or fix \"security_groups\" in nodes.json", names.join(", "), vpc.as_ref().map(|v| format!(" (VPC {v})")).unwrap_or_default())]
    SecurityGroupsNotFound { names: Vec<String>, region: String, vpc: Option<String> },
    #[error(
        "security group {name} is ambiguous in {region} (one in each of several VPCs): set \"vpc_id\" in nodes.json"
    )]
    SecurityGroupAmbiguous { name: String, region: String },
    #[error("key pair {name} exists in {region} with another public key: rename the key file, or delete the key pair")]
    KeyPairMismatch { name: String, region: String },
    #[error("{path}: {problem}")]
    KeyFile { path: String, problem: String },
    #[error("AWS kept throttling {operation} after {MAX_ATTEMPTS} attempts with backoff; try again in a minute")]
    Throttled { operation: &'static str },
    #[error(
        "{operation} in {region}: the endpoint answered HTTP {status} without an AWS error (an AWS-compatible server that does not implement {operation}?)"
    )]
    NotImplemented { operation: &'static str, region: String, status: u16 },
    #[error("{operation} in {region} failed: {message}")]
    Api { operation: &'static str, region: String, message: String },
}

/// EC2 and Auto Scaling clients for one region.
#[derive(Debug, Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    region: String,
}

impl Aws {
    /// Loads the configuration and checks that credentials can be had, so
    /// that a missing one is reported as such before any call.
    pub async fn connect(connect: &Connect) -> Result<Aws, Error> {
        let (config, region) = sdk_config(connect).await?;
        Ok(Aws {
            ec2: aws_sdk_ec2::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            region,
        })
    }

    /// The region this client talks to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A failed call as an [`Error`].
    fn api_error<E>(&self, operation: &'static str, e: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        api_error(operation, &self.region, e)
    }
}

/// The SDK's configuration and its region, as `connect` and the usual
/// places say; checks that credentials can be had, so that a missing one is
/// reported as such before any call.
async fn sdk_config(connect: &Connect) -> Result<(aws_config::SdkConfig, String), Error> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
    if let Some(region) = &connect.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &connect.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let mut config = loader.load().await;
    // The fallback region only when the usual places (environment,
    // profile, instance metadata) name none.
    if let (None, Some(fallback)) = (config.region(), &connect.fallback_region) {
        config = config.into_builder().region(aws_config::Region::new(fallback.clone())).build();
    }
    let region = config.region().ok_or(Error::NoRegion)?.to_string();
    let credentials = config
        .credentials_provider()
        .ok_or_else(|| Error::NoCredentials { source: "the SDK has no credentials provider".into() })?;
    credentials.provide_credentials().await.map_err(|e| Error::NoCredentials { source: e.into() })?;
    Ok((config, region))
}

/// A failed call as an [`Error`]: throttling that outlasted the retries,
/// an answer that is no AWS error at all, or the service's code and message.
fn api_error<E>(operation: &'static str, region: &str, e: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if is_throttling(e.code()) {
        return Error::Throttled { operation };
    }
    let status = e.raw_response().map(|r| r.status().as_u16());
    let message = match (e.code(), status) {
        (Some(code), _) => format!("{code}: {}", e.message().unwrap_or("no message")),
        (None, Some(status)) if status >= 500 => {
            return Error::NotImplemented { operation, region: region.to_owned(), status };
        }
        (None, _) => DisplayErrorContext(&e).to_string(),
    };
    Error::Api { operation, region: region.to_owned(), message }
}

/// The HTTP client of every SDK client: hyper over rustls with ring (the
/// SDK's default brings aws-lc-sys, minutes of C to compile), trusting the
/// system's certificates. Plain `http://` works too (moto).
pub fn http_client() -> aws_sdk_ec2::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// The error codes EC2, Auto Scaling and S3 use for throttling.
fn is_throttling(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" | "SlowDown")
    )
}

/// `(key, value)` pairs as EC2 tags.
fn ec2_tags(tags: &[(String, String)]) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build()).collect()
}

/// The value of tag `key` among EC2 tags.
fn ec2_tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}
