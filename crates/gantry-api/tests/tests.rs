//! gantry-api's integration tests: every wire type survives a round trip
//! through JSON, and the documents agents and operators exchange keep their
//! golden shape (`UPDATE_EXPECT=1` refreshes the goldens).

mod documents;
mod round_trip;
mod samples;
