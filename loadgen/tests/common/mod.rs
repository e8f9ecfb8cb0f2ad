//! Helpers for loadgen's tests: the real engine started in-process on
//! loopback, and the loadgen binary run with `--json`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;

use engine::{Engine, EngineConfig, Handler, ServiceConfig};
use protocols::{Options, Protocol, Transport};

/// A ringcore engine serving on 127.0.0.1 ephemeral ports; stopped on drop.
pub struct TestServer {
    engine: Option<Engine>,
}

impl TestServer {
    /// Starts one worker serving `services`.
    pub fn start(services: &[(Transport, Protocol)]) -> TestServer {
        let services = services
            .iter()
            .map(|&(transport, protocol)| ServiceConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                protocol: protocol.name().to_string(),
                handler: match transport {
                    Transport::Tcp => Handler::Stream(Arc::new(move || {
                        protocol.stream_session(&Options::default()).unwrap()
                    })),
                    Transport::Udp => Handler::Datagram(Arc::new(move || {
                        protocol.datagram_handler(&Options::default()).unwrap()
                    })),
                },
            })
            .collect();
        let engine = Engine::start(EngineConfig {
            services,
            cpus: vec![0],
            ..EngineConfig::default()
        })
        .expect("start the engine");
        TestServer {
            engine: Some(engine),
        }
    }

    /// The address of the `i`-th service.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.engine.as_ref().unwrap().services()[i].addr
    }

    /// The engine's summed counters.
    pub fn totals(&self) -> engine::StatsSnapshot {
        let stats = self.engine.as_ref().unwrap().stats();
        engine::StatsSnapshot::total(&stats.iter().map(|s| s.snapshot()).collect::<Vec<_>>())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown_handle().shutdown();
            let _ = engine.join();
        }
    }
}

/// Runs `loadgen ARGS --quiet`; its output.
pub fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("run loadgen")
}

/// Runs `loadgen ARGS --quiet --json`, expecting success; the parsed report.
pub fn loadgen_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = loadgen(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Field `path` (dot separated) of a JSON report as u64.
pub fn num(v: &serde_json::Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path} in {v}"))
}

/// Runs `loadgen ARGS` expecting a failure whose stderr names `expected`.
pub fn assert_fails_with(args: &[&str], expected: &str) {
    let out = loadgen(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected '{expected}' in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}
