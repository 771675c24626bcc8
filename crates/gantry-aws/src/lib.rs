//! Typed AWS operations the gantry command calls, over the official SDK:
//! a node group's AMIs (found by their `group` tag), tagging one, and
//! deregistering one with its snapshots.
//!
//! Credentials and region come from the SDK's usual places (environment,
//! profile, instance metadata); an endpoint (`AWS_ENDPOINT_URL`, or one the
//! caller passes) points every call at an AWS-compatible server such as
//! moto. Throttled calls are retried with exponential backoff by the SDK's
//! standard retry strategy.
//!
//! Architecture invariant: no credential is ever part of a value this
//! crate returns or of an error's message.
#![forbid(unsafe_code)]

use std::cmp::Ordering;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, Tag};

/// The tag that says which node group an AMI was built for.
pub const GROUP_TAG: &str = "group";

/// The tag that names the repository commit an AMI was built from.
pub const GIT_COMMIT_TAG: &str = "git_commit";

/// Attempts per call: throttling (`RequestLimitExceeded`) and transient
/// errors are retried with exponential backoff and jitter up to this many
/// times in all.
const MAX_ATTEMPTS: u32 = 5;

/// How to reach EC2.
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
    #[error(
        "no AWS region: set AWS_REGION, a region in the AWS profile, or \"region\" in the node group"
    )]
    NoRegion,
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in ~/.aws/credentials"
    )]
    NoCredentials {
        #[source]
        source: aws_sdk_ec2::error::BoxError,
    },
    #[error("AMI {image_id} not found in {region}")]
    ImageNotFound { image_id: String, region: String },
    #[error("AWS kept throttling {operation} after {MAX_ATTEMPTS} attempts with backoff; try again in a minute")]
    Throttled { operation: &'static str },
    #[error("{operation} in {region} failed: {message}")]
    Api { operation: &'static str, region: String, message: String },
}

/// One AMI of a node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// ISO 8601 as EC2 gives it (`2024-05-01T12:00:00.000Z`), so it sorts as text.
    pub creation_date: String,
    /// The EBS snapshots behind its block devices, deleted with it.
    pub snapshot_ids: Vec<String>,
}

/// An EC2 client for one region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    region: String,
}

impl Ec2 {
    /// Loads the configuration and checks that credentials can be had, so
    /// that a missing one is reported as such before any call.
    pub async fn connect(connect: &Connect) -> Result<Ec2, Error> {
        let region = match &connect.region {
            Some(region) => RegionProviderChain::first_try(aws_config::Region::new(region.clone())),
            None => RegionProviderChain::default_provider()
                .or_else(connect.fallback_region.clone().map(aws_config::Region::new)),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        if let Some(url) = &connect.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let region = config.region().ok_or(Error::NoRegion)?.to_string();
        let credentials = config.credentials_provider().ok_or_else(|| Error::NoCredentials {
            source: "the SDK has no credentials provider".into(),
        })?;
        credentials
            .provide_credentials()
            .await
            .map_err(|e| Error::NoCredentials { source: e.into() })?;
        Ok(Ec2 { client: aws_sdk_ec2::Client::new(&config), region })
    }

    /// The region this client talks to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The AMIs this account owns that carry `group: <group>`, newest first
    /// (see [`newest_first`]).
    pub async fn group_images(&self, group: &str) -> Result<Vec<Image>, Error> {
        let mut images = Vec::new();
        let mut pages = self
            .client
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name(format!("tag:{GROUP_TAG}")).values(group).build())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.api_error("DescribeImages", e))?;
            images.extend(page.images().iter().map(image));
        }
        images.sort_by(newest_first);
        Ok(images)
    }

    /// One AMI by id.
    pub async fn image(&self, image_id: &str) -> Result<Image, Error> {
        let not_found = || Error::ImageNotFound { image_id: image_id.to_string(), region: self.region.clone() };
        let out = self.client.describe_images().image_ids(image_id).send().await.map_err(|e| {
            if e.code() == Some("InvalidAMIID.NotFound") { not_found() } else { self.api_error("DescribeImages", e) }
        })?;
        out.images().first().map(image).ok_or_else(not_found)
    }

    /// Adds (or overwrites) tags on an AMI.
    pub async fn tag_image(&self, image_id: &str, tags: &[(&str, &str)]) -> Result<(), Error> {
        let mut request = self.client.create_tags().resources(image_id);
        for (key, value) in tags {
            request = request.tags(Tag::builder().key(*key).value(*value).build());
        }
        request.send().await.map_err(|e| self.api_error("CreateTags", e))?;
        Ok(())
    }

    /// Deregisters an AMI, then deletes its snapshots (which AWS refuses
    /// while an AMI still uses them).
    pub async fn deregister(&self, image: &Image) -> Result<(), Error> {
        self.client.deregister_image().image_id(&image.id).send().await.map_err(|e| {
            if e.code() == Some("InvalidAMIID.NotFound") || e.code() == Some("InvalidAMIID.Unavailable") {
                Error::ImageNotFound { image_id: image.id.clone(), region: self.region.clone() }
            } else {
                self.api_error("DeregisterImage", e)
            }
        })?;
        for snapshot in &image.snapshot_ids {
            self.client
                .delete_snapshot()
                .snapshot_id(snapshot)
                .send()
                .await
                .map_err(|e| self.api_error("DeleteSnapshot", e))?;
        }
        Ok(())
    }

    fn api_error<E, R>(&self, operation: &'static str, e: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        if is_throttling(e.code()) {
            return Error::Throttled { operation };
        }
        let message = match e.code() {
            Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
            None => DisplayErrorContext(&e).to_string(),
        };
        Error::Api { operation, region: self.region.clone(), message }
    }
}

/// Newest first: by creation date, then by name, since EC2's dates have a
/// resolution of one second and names carry packer's timestamp.
pub fn newest_first(a: &Image, b: &Image) -> Ordering {
    (&b.creation_date, &b.name, &b.id).cmp(&(&a.creation_date, &a.name, &a.id))
}

/// `packer:clean`'s plan: of images sorted [`newest_first`], the ones past
/// the newest `keep`.
pub fn beyond_newest(images: &[Image], keep: usize) -> &[Image] {
    images.get(keep..).unwrap_or(&[])
}

/// The error codes EC2 uses for throttling.
fn is_throttling(code: Option<&str>) -> bool {
    matches!(code, Some("RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled"))
}

fn image(raw: &aws_sdk_ec2::types::Image) -> Image {
    Image {
        id: raw.image_id().unwrap_or_default().to_string(),
        name: raw.name().unwrap_or_default().to_string(),
        creation_date: raw.creation_date().unwrap_or_default().to_string(),
        snapshot_ids: raw
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|ebs| ebs.snapshot_id()))
            .map(str::to_string)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, name: &str, date: &str) -> Image {
        Image { id: id.into(), name: name.into(), creation_date: date.into(), snapshot_ids: vec![] }
    }

    #[test]
    fn newest_first_breaks_same_second_ties_by_name() {
        let mut images = vec![
            img("ami-1", "g 100", "2024-01-01T00:00:00.000Z"),
            img("ami-3", "g 102", "2024-01-01T00:00:01.000Z"),
            img("ami-2", "g 101", "2024-01-01T00:00:01.000Z"),
        ];
        images.sort_by(newest_first);
        let ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["ami-3", "ami-2", "ami-1"]);
        assert_eq!(beyond_newest(&images, 2).len(), 1);
        assert_eq!(beyond_newest(&images, 2)[0].id, "ami-1");
        assert!(beyond_newest(&images, 5).is_empty());
    }
}
