//! ringcore's load generator as a library: the `loadgen` binary is a thin
//! command line over these runners, and the tests drive them directly too.

pub mod cli;
pub mod latency;
pub mod progress;
pub mod report;
pub mod rng;
pub mod tcp;
