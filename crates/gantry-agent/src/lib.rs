//! The node agent's building blocks (DESIGN.md "Agent and listener"): this
//! machine's [`facts`], requirement resolution ([`resolve`]), the env files
//! services read ([`envfile`]), the provision [`listener`], the process
//! supervisor that keeps services running ([`supervise`]), instances'
//! [`health`] checks and the local load balancer ([`lb`]); the [`agent`]
//! puts them together.
//!
//! Architecture invariant: decisions are pure and take the clock and the
//! world as arguments (`facts` parsers, `resolve`, the listener's state
//! machine); the IO around them is thin, so each is tested with plain data.
#![forbid(unsafe_code)]

pub mod agent;
pub mod envfile;
pub mod facts;
pub mod health;
pub mod lb;
pub mod listener;
pub mod metrics;
pub mod resolve;
pub mod supervise;
pub mod usage;

mod process_group;
