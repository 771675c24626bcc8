//! A node group's AMIs: found by owner (`self`) and `group` tag, tagged
//! after a build, deregistered with their snapshots.

use std::cmp::Ordering;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;

use crate::{Aws, Error, GROUP_TAG, ec2_tags};

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

impl Aws {
    /// The AMIs this account owns that carry `group: <group>`, newest first
    /// (see [`newest_first`]).
    pub async fn group_images(&self, group: &str) -> Result<Vec<Image>, Error> {
        let mut images = Vec::new();
        let mut pages = self
            .ec2
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
        let out = self.ec2.describe_images().image_ids(image_id).send().await.map_err(|e| {
            if is_image_not_found(e.code()) { not_found() } else { self.api_error("DescribeImages", e) }
        })?;
        out.images().first().map(image).ok_or_else(not_found)
    }

    /// Adds (or overwrites) tags on an AMI.
    pub async fn tag_image(&self, image_id: &str, tags: &[(String, String)]) -> Result<(), Error> {
        self.ec2
            .create_tags()
            .resources(image_id)
            .set_tags(Some(ec2_tags(tags)))
            .send()
            .await
            .map_err(|e| self.api_error("CreateTags", e))?;
        Ok(())
    }

    /// Deregisters an AMI, then deletes its snapshots (which AWS refuses
    /// while an AMI still uses them).
    pub async fn deregister(&self, image: &Image) -> Result<(), Error> {
        self.ec2.deregister_image().image_id(&image.id).send().await.map_err(|e| {
            if is_image_not_found(e.code()) {
                Error::ImageNotFound { image_id: image.id.clone(), region: self.region.clone() }
            } else {
                self.api_error("DeregisterImage", e)
            }
        })?;
        for snapshot in &image.snapshot_ids {
            self.ec2
                .delete_snapshot()
                .snapshot_id(snapshot)
                .send()
                .await
                .map_err(|e| self.api_error("DeleteSnapshot", e))?;
        }
        Ok(())
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

fn is_image_not_found(code: Option<&str>) -> bool {
    matches!(code, Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable" | "InvalidAMIID.Malformed"))
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
