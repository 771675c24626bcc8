//! Autoscaling groups of node groups (found by their `group` tag): create
//! from a launch template version, describe with their instances, delete
//! with their instances; and AWS's own instance refresh.

use aws_config::retry::RetryConfig;
use aws_sdk_autoscaling::types::{
    DesiredConfiguration, Filter, InstanceRefreshStatus, LaunchTemplateSpecification, RefreshPreferences, Tag,
};

use crate::{Aws, Error, GROUP_TAG, TemplateVersion};

/// An autoscaling group to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAsg {
    pub name: String,
    pub template: TemplateVersion,
    pub settings: AsgSettings,
}

/// What every generation of a node group's autoscaling group is made with,
/// apart from its name and launch template: from nodes.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgSettings {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Seconds a new instance has before its health checks count.
    pub grace_seconds: u64,
    /// Where instances go when there is no subnet: these zones.
    pub zones: Vec<String>,
    pub subnet_id: Option<String>,
    /// Tags of the group, also put on every instance it launches.
    pub tags: Vec<(String, String)>,
}

/// An autoscaling group as AWS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asg {
    pub name: String,
    /// The `group` tag.
    pub group: String,
    /// `None` while it lives; `Delete in progress` once deleted.
    pub status: Option<String>,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    /// The launch template it launches from, and which version.
    pub launch_template: Option<(String, String)>,
    /// ISO 8601.
    pub created: String,
    pub instances: Vec<AsgInstance>,
}

/// One instance of an autoscaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgInstance {
    pub id: String,
    /// `Pending`, `InService`, `Terminating`, ... (AWS's lifecycle states).
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
    pub zone: String,
}

impl Asg {
    /// Instances that are in service and healthy.
    pub fn in_service(&self) -> usize {
        self.instances.iter().filter(|i| i.is_in_service()).count()
    }

    /// AWS is deleting it (`ForceDelete` returns before its instances are gone).
    pub fn is_deleting(&self) -> bool {
        self.status.as_deref() == Some("Delete in progress")
    }

    /// Every instance the group wants is in service and healthy.
    pub fn is_ready(&self) -> bool {
        self.in_service() >= usize::try_from(self.desired).unwrap_or(0)
    }
}

impl AsgInstance {
    pub fn is_in_service(&self) -> bool {
        self.lifecycle == "InService" && self.health == "Healthy"
    }
}

/// One instance refresh, started by [`Aws::start_instance_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub asg: String,
    pub id: String,
}

/// Where an instance refresh stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshState {
    /// AWS's status: `Pending`, `InProgress`, `Successful`, `Failed`, ...
    pub status: String,
    pub percentage_complete: i32,
    pub reason: Option<String>,
    /// It will not change any more.
    pub finished: bool,
    /// It finished and the group runs the new configuration.
    pub succeeded: bool,
}

impl Aws {
    /// Creates an autoscaling group tagged with its node group; its
    /// instances get the same tags.
    pub async fn create_asg(&self, asg: &NewAsg) -> Result<(), Error> {
        let (settings, size) = (&asg.settings, |n: u32| i32::try_from(n).unwrap_or(i32::MAX));
        let tags = settings.tags.iter().map(|(k, v)| {
            Tag::builder()
                .resource_id(&asg.name)
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(true)
                .build()
        });
        self.autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&asg.name)
            .launch_template(template_spec(&asg.template))
            .min_size(size(settings.min))
            .max_size(size(settings.max))
            .desired_capacity(size(settings.desired))
            .health_check_type("EC2")
            .health_check_grace_period(i32::try_from(settings.grace_seconds).unwrap_or(i32::MAX))
            .set_availability_zones(if settings.subnet_id.is_some() { None } else { Some(settings.zones.clone()) })
            .set_vpc_zone_identifier(settings.subnet_id.clone())
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .map_err(|e| self.api_error("CreateAutoScalingGroup", e))?;
        Ok(())
    }

    /// The autoscaling groups tagged with node group `group` (any group
    /// when `None`), oldest first.
    pub async fn group_asgs(&self, group: Option<&str>) -> Result<Vec<Asg>, Error> {
        let filter = match group {
            Some(g) => Filter::builder().name(format!("tag:{GROUP_TAG}")).values(g).build(),
            None => Filter::builder().name("tag-key").values(GROUP_TAG).build(),
        };
        let mut pages = self.autoscaling.describe_auto_scaling_groups().filters(filter).into_paginator().send();
        let mut groups = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.api_error("DescribeAutoScalingGroups", e))?;
            groups.extend(page.auto_scaling_groups().iter().map(asg));
        }
        groups.sort_by(|a, b| (&a.group, &a.created, &a.name).cmp(&(&b.group, &b.created, &b.name)));
        Ok(groups)
    }

    /// One autoscaling group by name; `None` once it is gone.
    pub async fn asg(&self, name: &str) -> Result<Option<Asg>, Error> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| self.api_error("DescribeAutoScalingGroups", e))?;
        Ok(out.auto_scaling_groups().first().map(asg))
    }

    /// Deletes an autoscaling group and terminates its instances.
    pub async fn delete_asg(&self, name: &str) -> Result<(), Error> {
        self.autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(name)
            .force_delete(true)
            .send()
            .await
            .map_err(|e| self.api_error("DeleteAutoScalingGroup", e))?;
        Ok(())
    }

    /// Asks whether the endpoint knows instance refreshes at all (moto does
    /// not: it answers HTTP 500), before anything is changed for one. Two
    /// attempts, not five: such an answer is retried as if transient, and
    /// the refusal should come in a second, not after the full backoff.
    pub async fn check_instance_refresh(&self, asg: &str) -> Result<(), Error> {
        let retries = RetryConfig::standard().with_max_attempts(2);
        self.autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .customize()
            .config_override(aws_sdk_autoscaling::Config::builder().retry_config(retries))
            .send()
            .await
            .map_err(|e| self.api_error("DescribeInstanceRefreshes", e))?;
        Ok(())
    }

    /// Starts AWS's instance refresh of `asg` onto `template`: new instances
    /// first (100% healthy capacity kept, up to 200% during the refresh),
    /// each given `warmup_seconds`, rolled back by AWS if it fails.
    pub async fn start_instance_refresh(
        &self,
        asg: &str,
        template: &TemplateVersion,
        warmup_seconds: u64,
    ) -> Result<Refresh, Error> {
        let preferences = RefreshPreferences::builder()
            .min_healthy_percentage(100)
            .max_healthy_percentage(200)
            .instance_warmup(i32::try_from(warmup_seconds).unwrap_or(i32::MAX))
            .auto_rollback(true)
            .build();
        let out = self
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(asg)
            .desired_configuration(DesiredConfiguration::builder().launch_template(template_spec(template)).build())
            .preferences(preferences)
            .send()
            .await
            .map_err(|e| self.api_error("StartInstanceRefresh", e))?;
        Ok(Refresh { asg: asg.to_string(), id: out.instance_refresh_id().unwrap_or_default().to_string() })
    }

    /// Where an instance refresh stands.
    pub async fn instance_refresh(&self, refresh: &Refresh) -> Result<RefreshState, Error> {
        let out = self
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(&refresh.asg)
            .instance_refresh_ids(&refresh.id)
            .send()
            .await
            .map_err(|e| self.api_error("DescribeInstanceRefreshes", e))?;
        let raw = out.instance_refreshes().first();
        let status = raw.and_then(|r| r.status()).cloned().unwrap_or(InstanceRefreshStatus::Pending);
        Ok(RefreshState {
            finished: !matches!(
                status,
                InstanceRefreshStatus::Pending
                    | InstanceRefreshStatus::InProgress
                    | InstanceRefreshStatus::Cancelling
                    | InstanceRefreshStatus::RollbackInProgress
                    | InstanceRefreshStatus::Baking
            ),
            succeeded: status == InstanceRefreshStatus::Successful,
            status: status.as_str().to_string(),
            percentage_complete: raw.and_then(|r| r.percentage_complete()).unwrap_or(0),
            reason: raw.and_then(|r| r.status_reason()).map(str::to_string),
        })
    }

    /// Undoes an unfinished instance refresh: AWS puts the previous
    /// configuration back on the replaced instances.
    pub async fn rollback_instance_refresh(&self, refresh: &Refresh) -> Result<(), Error> {
        self.autoscaling
            .rollback_instance_refresh()
            .auto_scaling_group_name(&refresh.asg)
            .send()
            .await
            .map_err(|e| self.api_error("RollbackInstanceRefresh", e))?;
        Ok(())
    }
}

fn template_spec(template: &TemplateVersion) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_id(&template.template_id)
        .version(template.version.to_string())
        .build()
}

fn asg(raw: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Asg {
    let group = raw.tags().iter().find(|t| t.key() == Some(GROUP_TAG)).and_then(|t| t.value());
    Asg {
        name: raw.auto_scaling_group_name().unwrap_or_default().to_string(),
        group: group.unwrap_or_default().to_string(),
        status: raw.status().map(str::to_string),
        min: raw.min_size().unwrap_or(0),
        max: raw.max_size().unwrap_or(0),
        desired: raw.desired_capacity().unwrap_or(0),
        launch_template: raw.launch_template().map(|t| {
            (t.launch_template_name().unwrap_or_default().to_string(), t.version().unwrap_or("$Default").to_string())
        }),
        created: raw.created_time().map(|t| t.to_string()).unwrap_or_default(),
        instances: raw
            .instances()
            .iter()
            .map(|i| AsgInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                health: i.health_status().unwrap_or_default().to_string(),
                zone: i.availability_zone().unwrap_or_default().to_string(),
            })
            .collect(),
    }
}
