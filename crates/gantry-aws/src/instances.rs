//! What a node is launched from and as: security groups by name, launch
//! templates, key pairs
//! (imported from a public key, or reused), one-off instances, and the
//! instances of node groups.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceType, LaunchTemplateIamInstanceProfileSpecificationRequest,
    Placement, RequestLaunchTemplateData, ResourceType, TagSpecification,
};

use crate::{Aws, Error, GROUP_TAG, NAME_TAG, PublicKey, ec2_tag, ec2_tags};

/// Everything a node of a group is launched with, as EC2 takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    /// An EC2 key pair's name; `None`: no SSH key on the node.
    pub key_name: Option<String>,
    /// Resolved with [`Aws::security_group_ids`].
    pub security_group_ids: Vec<String>,
    pub subnet_id: Option<String>,
    pub iam_instance_profile: Option<String>,
    /// The boot script, as text (EC2 wants it in base64; this crate encodes it).
    pub user_data: String,
}

/// One version of a launch template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVersion {
    pub template_id: String,
    pub template_name: String,
    pub version: i64,
}

/// What [`Aws::key_pair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPair {
    Imported,
    /// A key pair of that name already held the same public key.
    Reused,
}

/// An EC2 instance of a node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// The `group` tag.
    pub group: String,
    /// The `Name` tag.
    pub name: Option<String>,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`.
    pub state: String,
    pub instance_type: String,
    pub image_id: String,
    pub zone: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    /// The autoscaling group that launched it, if one did.
    pub autoscaling_group: Option<String>,
}

impl Aws {
    /// The ids of security groups named in nodes.json, within `vpc_id` when
    /// one is set. All missing names are reported at once.
    pub async fn security_group_ids(&self, names: &[String], vpc_id: Option<&str>) -> Result<Vec<String>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = self
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").set_values(Some(names.to_vec())).build());
        if let Some(vpc) = vpc_id {
            request = request.filters(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let out = request.send().await.map_err(|e| self.api_error("DescribeSecurityGroups", e))?;
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            let found: Vec<&str> = out
                .security_groups()
                .iter()
                .filter(|g| g.group_name() == Some(name))
                .filter_map(|g| g.group_id())
                .collect();
            match found.as_slice() {
                [] => missing.push(name.clone()),
                [id] => ids.push((*id).to_string()),
                _ => return Err(Error::SecurityGroupAmbiguous { name: name.clone(), region: self.region.clone() }),
            }
        }
        if !missing.is_empty() {
            return Err(Error::SecurityGroupsNotFound {
                names: missing,
                region: self.region.clone(),
                vpc: vpc_id.map(str::to_string),
            });
        }
        Ok(ids)
    }

    /// A new version of launch template `name` holding `spec`; the template
    /// is created (as version 1) when it does not exist yet.
    pub async fn put_launch_template(&self, name: &str, spec: &LaunchSpec) -> Result<TemplateVersion, Error> {
        let existing = self.ec2.describe_launch_templates().launch_template_names(name).send().await;
        let existing = match existing {
            Ok(out) => out.launch_templates().first().and_then(|t| t.launch_template_id()).map(str::to_string),
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.NotFoundException") => None,
            Err(e) => return Err(self.api_error("DescribeLaunchTemplates", e)),
        };
        let Some(template_id) = existing else {
            let out = self
                .ec2
                .create_launch_template()
                .launch_template_name(name)
                .launch_template_data(template_data(spec))
                .send()
                .await
                .map_err(|e| self.api_error("CreateLaunchTemplate", e))?;
            let template = out.launch_template();
            return Ok(TemplateVersion {
                template_id: template.and_then(|t| t.launch_template_id()).unwrap_or_default().to_string(),
                template_name: name.to_string(),
                version: template.and_then(|t| t.latest_version_number()).unwrap_or(1),
            });
        };
        let out = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(&template_id)
            .launch_template_data(template_data(spec))
            .send()
            .await
            .map_err(|e| self.api_error("CreateLaunchTemplateVersion", e))?;
        let version = out.launch_template_version().and_then(|v| v.version_number()).unwrap_or_default();
        Ok(TemplateVersion { template_id, template_name: name.to_string(), version })
    }

    /// Makes `version` its template's default: the one the group runs.
    pub async fn set_default_version(&self, version: &TemplateVersion) -> Result<(), Error> {
        self.ec2
            .modify_launch_template()
            .launch_template_id(&version.template_id)
            .default_version(version.version.to_string())
            .send()
            .await
            .map_err(|e| self.api_error("ModifyLaunchTemplate", e))?;
        Ok(())
    }

    /// Deletes launch template `name` with all its versions; one that is
    /// already gone is fine.
    pub async fn delete_launch_template(&self, name: &str) -> Result<(), Error> {
        match self.ec2.delete_launch_template().launch_template_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.NotFoundException") => Ok(()),
            Err(e) => Err(self.api_error("DeleteLaunchTemplate", e)),
        }
    }

    /// The region's availability zones that are up.
    pub async fn zones(&self) -> Result<Vec<String>, Error> {
        let out = self
            .ec2
            .describe_availability_zones()
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(|e| self.api_error("DescribeAvailabilityZones", e))?;
        Ok(out.availability_zones().iter().filter_map(|z| z.zone_name()).map(str::to_string).collect())
    }

    /// Makes sure key pair `name` holds `key`: imports it when there is no
    /// such key pair, reuses it when it holds the same key, refuses otherwise.
    /// Only the public key ever leaves this machine.
    pub async fn key_pair(&self, name: &str, key: &PublicKey) -> Result<KeyPair, Error> {
        let out = self.ec2.describe_key_pairs().key_names(name).include_public_key(true).send().await;
        match out {
            Ok(out) => {
                let same = out.key_pairs().iter().any(|k| k.public_key().is_some_and(|p| key.same_key_as(p)));
                if same {
                    Ok(KeyPair::Reused)
                } else {
                    Err(Error::KeyPairMismatch { name: name.into(), region: self.region.clone() })
                }
            }
            Err(e) if e.code() == Some("InvalidKeyPair.NotFound") => {
                self.ec2
                    .import_key_pair()
                    .key_name(name)
                    .public_key_material(Blob::new(key.openssh().as_bytes()))
                    .send()
                    .await
                    .map_err(|e| self.api_error("ImportKeyPair", e))?;
                Ok(KeyPair::Imported)
            }
            Err(e) => Err(self.api_error("DescribeKeyPairs", e)),
        }
    }

    /// Launches one instance with `spec` in `zone` (or the subnet's), tagged
    /// `tags` from the start; returns its id.
    pub async fn run_instance(
        &self,
        spec: &LaunchSpec,
        zone: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<String, Error> {
        let out = self
            .ec2
            .run_instances()
            .min_count(1)
            .max_count(1)
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .set_key_name(spec.key_name.clone())
            .set_security_group_ids(non_empty(&spec.security_group_ids))
            .set_subnet_id(spec.subnet_id.clone())
            .set_iam_instance_profile(
                spec.iam_instance_profile.as_ref().map(|n| IamInstanceProfileSpecification::builder().name(n).build()),
            )
            .user_data(aws_smithy_types::base64::encode(&spec.user_data))
            .set_placement(zone.map(|z| Placement::builder().availability_zone(z).build()))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(ec2_tags(tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                if matches!(e.code(), Some("InvalidAMIID.NotFound" | "InvalidAMIID.Malformed")) {
                    Error::ImageNotFound { image_id: spec.image_id.clone(), region: self.region.clone() }
                } else {
                    self.api_error("RunInstances", e)
                }
            })?;
        Ok(out.instances().first().and_then(|i| i.instance_id()).unwrap_or_default().to_string())
    }

    /// The instances tagged with node group `group` (any group when `None`)
    /// that are not terminated, sorted by group then id.
    pub async fn group_instances(&self, group: Option<&str>) -> Result<Vec<Instance>, Error> {
        let tag_filter = match group {
            Some(g) => Filter::builder().name(format!("tag:{GROUP_TAG}")).values(g).build(),
            None => Filter::builder().name("tag-key").values(GROUP_TAG).build(),
        };
        let live = ["pending", "running", "stopping", "stopped", "shutting-down"].map(String::from);
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(tag_filter)
            .filters(Filter::builder().name("instance-state-name").set_values(Some(live.to_vec())).build())
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.api_error("DescribeInstances", e))?;
            instances.extend(page.reservations().iter().flat_map(|r| r.instances()).map(instance));
        }
        instances.sort_by(|a, b| (&a.group, &a.id).cmp(&(&b.group, &b.id)));
        Ok(instances)
    }
}

fn template_data(spec: &LaunchSpec) -> RequestLaunchTemplateData {
    RequestLaunchTemplateData::builder()
        .image_id(&spec.image_id)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .set_key_name(spec.key_name.clone())
        .set_security_group_ids(non_empty(&spec.security_group_ids))
        .set_iam_instance_profile(
            spec.iam_instance_profile
                .as_ref()
                .map(|n| LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(n).build()),
        )
        .user_data(aws_smithy_types::base64::encode(&spec.user_data))
        .build()
}

fn non_empty(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

fn instance(raw: &aws_sdk_ec2::types::Instance) -> Instance {
    let owned = |s: Option<&str>| s.map(str::to_string);
    Instance {
        id: raw.instance_id().unwrap_or_default().to_string(),
        group: ec2_tag(raw.tags(), GROUP_TAG).unwrap_or_default().to_string(),
        name: owned(ec2_tag(raw.tags(), NAME_TAG)),
        state: raw.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
        instance_type: raw.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        image_id: raw.image_id().unwrap_or_default().to_string(),
        zone: raw.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
        private_ip: owned(raw.private_ip_address()),
        public_ip: owned(raw.public_ip_address()),
        autoscaling_group: owned(ec2_tag(raw.tags(), "aws:autoscaling:groupName")),
    }
}
