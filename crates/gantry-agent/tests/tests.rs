//! Integration tests of the agent's building blocks against real files,
//! real shells and real processes.

mod envfile;
mod facts;
mod lb_haproxy;
mod listener;
mod resolve;
