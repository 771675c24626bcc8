//! Access control's documents (`acl/`): tokens and the policies they hold
//! (DESIGN.md "Trust boundary"; Consul's ACL system is the model).
//!
//! A token is an accessor id (safe to show and log) and a secret (256
//! random bits, shown once, stored only as its SHA-256). Every request
//! carries the secret as `Authorization: Bearer <secret>`. What a token may
//! do is the union of its policies' rules, or, for an agent's token, what
//! its machine needs (see `gantry-server`'s `access`). Default deny.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How much a rule grants. Ordered: `Deny < Read < Write` (write implies read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Deny,
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One rule of a policy: `access` to everything under `prefix`.
///
/// Prefixes are the store's keys (`kv/datastores/`, `services/`,
/// `machines/web-`, `instances/api/`, `agents/`, `groups/`, `acl/` for
/// tokens and policies), plus three that name no key: `logs/<machine>/` (a
/// node's service logs, read through the server), `metrics` (the
/// server's `/metrics`) and `prometheus/targets` (Prometheus' service
/// discovery of the whole fleet: every node's address and services). The empty prefix is everything. Among a token's
/// rules the longest matching prefix decides; at equal length `deny` wins
/// over `write`, and `write` over `read`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub prefix: String,
    pub access: Access,
}

/// `acl/policies/<name>`: named rules, given to tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub rules: Vec<Rule>,
    /// When not empty, the policy sees only these federations' service
    /// definitions and instances (federations never see each other).
    #[serde(default)]
    pub federations: Vec<String>,
}

/// The policy every server knows without storing it: everything, ACLs
/// included. The bootstrap token holds it.
pub const MANAGEMENT_POLICY: &str = "management";

/// Whose node an agent's token is: it may write only that machine's
/// records, and read what that machine's services need.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    pub machine: String,
    /// Its services' federation (`default` when the node names none).
    #[serde(default = "default_federation")]
    pub federation: String,
    /// Services it may run besides its group's and those the scheduler
    /// places on it (`gantry agent --service`). What an agent reports
    /// running grants nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

fn default_federation() -> String {
    crate::DEFAULT_FEDERATION.to_owned()
}

/// A token as anyone allowed to list tokens sees it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Safe to show and log; names the token in `acl:token:revoke`.
    pub accessor: String,
    #[serde(default)]
    pub name: String,
    /// Names of the policies it holds.
    #[serde(default)]
    pub policies: Vec<String>,
    /// An agent's token: its machine and federation.
    #[serde(default)]
    pub agent: Option<AgentIdentity>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// Unix ms after which it is refused; `None`: it does not expire.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

/// `acl/tokens/<accessor>`: a token as the store keeps it, with the
/// SHA-256 of its secret (hex) instead of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredToken {
    #[serde(flatten)]
    pub token: Token,
    pub secret_sha256: String,
}

/// `POST /v1/acl/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Makes it an agent's token for this machine.
    #[serde(default)]
    pub agent: Option<AgentIdentity>,
    /// Seconds until it expires; `None`: never.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// The answer to `POST /v1/acl/tokens`: the token, and its secret, which
/// is shown this once and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub token: Token,
    pub secret: String,
}

/// `GET /v1/acl/self`: who the caller's token says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub token: Token,
}
