//! Prometheus HTTP service discovery (`GET /v1/prometheus/targets`, issue
//! 18): the `http_sd_configs` format, a list of target groups, each
//! `host:port` targets with the labels they share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One group of targets with their labels (`__metrics_path__` and
/// `__scheme__` among them, which Prometheus reads as the scrape's path
/// and scheme).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// `host:port` of each target.
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}
