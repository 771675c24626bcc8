//! Integration tests of the agent's building blocks against real files,
//! real shells and real processes.

mod envfile;
mod facts;
mod listener;
mod resolve;
mod supervise;
