//! What nodes offer the scheduler and what their work actually uses
//! (issue 16): a node's capacity (measured from its facts, or given with
//! `gantry agent --capacity`), what it keeps for the system (`--reserve`),
//! and the usage its agent measures from /proc, per node and per process
//! tree (`agents/<machine>/usage`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// CPU in cores (fractions allowed) and memory in MB (MiB, as `memory_mb`
/// everywhere in Gantry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu: f64,
    pub memory_mb: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources { cpu: 0.0, memory_mb: 0 };

    /// `self` less `other`, never below zero.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources { cpu: (self.cpu - other.cpu).max(0.0), memory_mb: self.memory_mb.saturating_sub(other.memory_mb) }
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;

    fn add(self, other: Resources) -> Resources {
        Resources { cpu: self.cpu + other.cpu, memory_mb: self.memory_mb.saturating_add(other.memory_mb) }
    }
}

impl std::str::FromStr for Resources {
    type Err = String;

    /// `cpu=0.5,memory_mb=512` (either may be left out: zero), as
    /// `gantry agent --reserve` and `--capacity` take it.
    fn from_str(text: &str) -> Result<Resources, String> {
        let mut resources = Resources::ZERO;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("{part:?} is not KEY=VALUE (write cpu=0.5,memory_mb=512)"));
            };
            match key.trim() {
                "cpu" => match value.trim().parse::<f64>() {
                    Ok(cpu) if cpu.is_finite() && cpu >= 0.0 => resources.cpu = cpu,
                    _ => return Err(format!("cpu={value}: CPU cores are a number of 0 or more, such as 0.5")),
                },
                "memory_mb" => match value.trim().parse::<u64>() {
                    Ok(mb) => resources.memory_mb = mb,
                    Err(_) => return Err(format!("memory_mb={value}: megabytes are a whole number, such as 512")),
                },
                other => return Err(format!("unknown resource {other:?}: the resources are cpu and memory_mb")),
            }
        }
        Ok(resources)
    }
}

/// Where a node's total capacity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapacitySource {
    /// The machine's facts: its CPUs and memory.
    Measured,
    /// `gantry agent --capacity`: for test nodes and nodes sharing a machine.
    Configured,
}

/// What a node offers, as its agent publishes it in its machine record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeCapacity {
    /// The whole node: measured, or as configured.
    pub total: Resources,
    pub source: CapacitySource,
    /// Kept for the system and the agent (`--reserve`): never scheduled.
    pub reserved: Resources,
    /// Started without `--group`: it runs scheduled work only.
    #[serde(default)]
    pub scheduled_only: bool,
}

impl NodeCapacity {
    /// What the scheduler may hand out: the total less the reserve.
    pub fn allocatable(&self) -> Resources {
        self.total.saturating_sub(self.reserved)
    }
}

/// What a node and its processes use, measured by its agent from /proc
/// (`agents/<machine>/usage`, under the agent's lease, every few seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUsage {
    pub machine: String,
    /// CPU cores busy over the last interval (from /proc/stat), all processes.
    pub cpu: f64,
    /// Memory in use: total less available (from /proc/meminfo).
    pub memory_mb: u64,
    /// The machine's whole memory and CPUs, as measured (not `--capacity`).
    pub memory_total_mb: u64,
    pub cpus: u32,
    /// One-minute load average.
    pub load1: f64,
    /// Each supervised process tree, by the name the agent runs it under
    /// (a service id).
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessUsage>,
    /// Unix milliseconds of the measurement.
    pub measured_at_ms: u64,
}

/// One supervised process and its descendants (its process group).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessUsage {
    /// CPU time (user + system) of the processes alive now, since each started.
    pub cpu_seconds: f64,
    /// CPU cores busy over the last interval.
    pub cpu: f64,
    /// Resident memory of the process tree.
    pub rss_mb: f64,
    /// How many processes the tree has.
    pub processes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_from_the_command_line() {
        assert_eq!("cpu=0.5,memory_mb=512".parse(), Ok(Resources { cpu: 0.5, memory_mb: 512 }));
        assert_eq!("memory_mb=700".parse(), Ok(Resources { cpu: 0.0, memory_mb: 700 }));
        assert_eq!(" cpu = 2 , ".parse(), Ok(Resources { cpu: 2.0, memory_mb: 0 }));
        for (bad, says) in [
            ("cpu", "is not KEY=VALUE"),
            ("cpu=-1", "0 or more"),
            ("cpu=NaN", "0 or more"),
            ("memory_mb=1.5", "whole number"),
            ("disk=5", "unknown resource \"disk\""),
        ] {
            let error = bad.parse::<Resources>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn allocatable_is_the_total_less_the_reserve_never_negative() {
        let node = |total, reserved| NodeCapacity {
            total,
            source: CapacitySource::Configured,
            reserved,
            scheduled_only: false,
        };
        let two = Resources { cpu: 2.0, memory_mb: 700 };
        assert_eq!(
            node(two, Resources { cpu: 0.5, memory_mb: 200 }).allocatable(),
            Resources { cpu: 1.5, memory_mb: 500 }
        );
        assert_eq!(node(two, Resources { cpu: 3.0, memory_mb: 900 }).allocatable(), Resources::ZERO);
    }
}
