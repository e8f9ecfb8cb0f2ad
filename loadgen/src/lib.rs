//! ringcore's load generator as a library: the `loadgen` binary is a thin
//! command line over these runners, and the tests drive them directly too.

pub mod cli;
pub mod kernel;
pub mod lab;
pub mod latency;
pub mod pacer;
pub mod progress;
pub mod report;
pub mod rng;
pub mod tcp;
pub mod udp;
