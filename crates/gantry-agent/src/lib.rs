//! The node agent's building blocks (DESIGN.md "Agent and listener"): this
//! machine's [`facts`], requirement resolution ([`resolve`]), the env files
//! services read ([`envfile`]), and the provision [`listener`].
//!
//! Architecture invariant: decisions are pure and take the clock and the
//! world as arguments (`facts` parsers, `resolve`, the listener's state
//! machine); the IO around them is thin, so each is tested with plain data.
#![forbid(unsafe_code)]

pub mod agent;
pub mod envfile;
pub mod facts;
pub mod lb;
pub mod listener;
mod procgroup;
pub mod resolve;
