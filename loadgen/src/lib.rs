//! ringcore's load generator as a library: the `loadgen` binary is a thin
//! command line over these runners, and the tests drive them directly too.

#![deny(missing_docs)]

pub mod bot;
pub mod bulk;
pub mod cc;
pub mod cli;
pub mod client;
pub mod commands;
pub mod dialect;
pub mod hdr_log;
pub mod http;
pub mod kernel;
pub mod lab;
pub mod latency;
pub mod manifest;
pub mod merge;
pub mod pacer;
pub mod plot;
pub mod progress;
pub mod report;
pub mod request_log;
pub mod rng;
pub mod schedule;
pub mod shared_link;
pub mod start;
pub mod targets;
pub mod tcp;
mod text;
pub mod udp;
pub mod udp_generic;
