//! Who is asking, and whether they may: the one access-control seam.
//!
//! Every request that reaches the store goes through [`crate::gate::Gate`],
//! which holds the request's [`Caller`] and calls [`authorize`] with what
//! the request does ([`Action`]) and to what ([`Target`]) before it touches
//! the store, the lease table, a watch or an agent. Today there are no
//! tokens: a caller is [`Caller::Anonymous`], or [`Caller::Certified`] when
//! a TLS handshake verified its client certificate, and everything is
//! allowed. Tokens and policies (default deny; an agent's token writes only
//! its own machine, instances, status and leases; reads isolated by
//! federation) are meant to be written in [`authorize`] alone: the targets
//! carry the typed key and, where the layer has the document, whom it
//! belongs to ([`Owner`]), so no handler needs to change.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use gantry_api::keys::StoreKey;
use gantry_store::LeaseId;
use gantry_tls::listener::{PeerCertificate, TlsPeer};

use crate::error::ApiResult;

/// Who sent a request, extracted once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials: the only caller until the server checks tokens.
    Anonymous,
    /// A client over TLS whose certificate the handshake verified against
    /// the server's CA: its holder's name and role (`server`, `agent`,
    /// `client`).
    Certified(PeerCertificate),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Self::Rejection> {
        // Present only on a TLS server (plain HTTP adds nothing per request).
        let certificate = parts.extensions.get::<ConnectInfo<TlsPeer>>().and_then(|peer| peer.0.certificate.clone());
        Ok(certificate.map_or(Caller::Anonymous, Caller::Certified))
    }
}

/// What a request does to its [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    /// Create or replace (a lease: grant or renew).
    Write,
    Delete,
    /// Follow changes (`GET /v1/watch`).
    Watch,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Delete, Action::Watch];

    /// The metrics' label.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Watch => "watch",
        }
    }
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One key of the layout. `owner` is what its document says about whom
    /// it belongs to, when the layer has the document: a write's body, a
    /// read's result (a read is authorized after the document is decoded,
    /// and a listing leaves out the documents a caller may not read). A
    /// delete has the key alone.
    Key { key: StoreKey<'a>, owner: Option<Owner<'a>> },
    /// Every key under a store prefix: a listing, a query, a watch, a
    /// prefix delete.
    Prefix(&'a str),
    /// A lease; `None` for one about to be granted.
    Lease(Option<LeaseId>),
    /// A service's log on one machine, read through its agent's API.
    AgentLogs { machine: &'a str, service: &'a str },
    /// The server itself: its health and metrics.
    Server,
}

/// Whom a document belongs to, as far as access control cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The machine it describes or runs on.
    pub machine: Option<&'a str>,
    /// The federation it is part of (federations never see each other).
    pub federation: Option<&'a str>,
}

/// Whether `caller` may do `action` to `target`; an error answer (403
/// once there are policies) when not.
///
/// Architecture invariant: this is the only place that decides access.
/// Handlers never call the store themselves; [`crate::gate::Gate`]
/// calls this before every operation.
#[inline]
pub fn authorize(caller: &Caller, action: Action, target: &Target<'_>) -> ApiResult<()> {
    match caller {
        Caller::Anonymous | Caller::Certified(_) => {
            let _ = (action, target);
            Ok(())
        }
    }
}
