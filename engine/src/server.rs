//! The way in for a user of the engine: name your services, start, stop.
//!
//! ```no_run
//! use engine::{Fed, Next, Server, StreamSession};
//!
//! /// Sends every byte back.
//! struct Echo;
//!
//! impl StreamSession for Echo {
//!     fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
//!         out.extend_from_slice(input);
//!         Fed { consumed: input.len(), next: Next::Continue }
//!     }
//! }
//!
//! fn main() -> Result<(), engine::EngineError> {
//!     Server::new()
//!         .tcp("127.0.0.1:7000".parse().unwrap(), "echo", |_cx| Echo)
//!         .run() // until SIGINT or SIGTERM
//! }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use protocols::{DatagramHandler, StreamSession};

use crate::config::{EngineConfig, Handler, ServiceConfig, SessionContext, Sharded};
use crate::error::EngineError;
use crate::mesh::Mesh;
use crate::per_core::PerCore;
use crate::signals::ShutdownSignals;

/// Which I/O interface the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// io_uring: multishot accept and receive, provided buffers (the default).
    #[default]
    Uring,
    /// epoll: the same workers and connection core with readiness I/O.
    Epoll,
}

/// A server to be started: its services, its workers and its bounds.
///
/// Every worker (one per CPU unless [`workers`](Self::workers) says
/// otherwise) serves every service on its own `SO_REUSEPORT` socket; the
/// kernel spreads connections over them, and a connection stays on the
/// worker that accepted it for its whole life.
#[derive(Clone)]
pub struct Server {
    config: EngineConfig,
    driver: Driver,
    metrics: Option<SocketAddr>,
}

/// The ids of the CPUs this process may run on (never empty).
fn usable_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|id| id.id).collect())
        .filter(|ids: &Vec<usize>| !ids.is_empty())
        .unwrap_or_else(|| vec![0])
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// No service yet, one worker per CPU, the engine's default bounds.
    pub fn new() -> Self {
        Self {
            config: EngineConfig {
                cpus: usable_cpus(),
                ..EngineConfig::default()
            },
            driver: Driver::default(),
            metrics: None,
        }
    }

    /// Serves `n` workers, pinned in turn to the CPUs the process may use
    /// (wrapping around when there are fewer CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        let cpus = usable_cpus();
        self.config.cpus = (0..n).map(|i| cpus[i % cpus.len()]).collect();
        self
    }

    /// Pins each worker to its CPU (`true`, the default) or lets the
    /// workers float (see [`EngineConfig::pin`]: for cores shared with
    /// other busy processes).
    pub fn pin(mut self, pin: bool) -> Self {
        self.config.pin = pin;
        self
    }

    /// How many workers the server will have.
    pub fn worker_count(&self) -> usize {
        self.config.cpus.len()
    }

    /// Uses `driver` for I/O (io_uring unless told otherwise).
    pub fn driver(mut self, driver: Driver) -> Self {
        self.driver = driver;
        self
    }

    /// [`run`](Self::run) also serves every counter (the engine's, per
    /// worker and in total, and the services' own) in the Prometheus text
    /// format at `http://ADDR/metrics`, from a thread of its own.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// Adjusts the bounds and sizes (output limit, timeouts, memory, ring
    /// and buffer sizes); see [`EngineConfig`] for each.
    pub fn configure(mut self, adjust: impl FnOnce(&mut EngineConfig)) -> Self {
        adjust(&mut self.config);
        self
    }

    /// A TCP service on `addr` (port 0: any free port, the same for every
    /// worker) named `name`: `new_session` makes the session of each
    /// accepted connection.
    pub fn tcp<S, F>(self, addr: SocketAddr, name: &str, new_session: F) -> Self
    where
        S: StreamSession + Send + 'static,
        F: Fn(&SessionContext) -> S + Send + Sync + 'static,
    {
        let handler = Handler::Stream(Arc::new(move |cx: &SessionContext| {
            Box::new(new_session(cx)) as Box<dyn StreamSession + Send>
        }));
        self.service(addr, name, handler)
    }

    /// A TCP service whose sessions share their worker's state without
    /// locks: `per_worker` runs once on each worker's thread, given the
    /// worker's index, and returns that worker's session maker. What the
    /// maker captures (an `Rc<RefCell<_>>`, say) is that worker's alone.
    pub fn tcp_per_worker<S, M, F>(self, addr: SocketAddr, name: &str, per_worker: F) -> Self
    where
        S: StreamSession + 'static,
        M: FnMut(&SessionContext) -> S + 'static,
        F: Fn(usize) -> M + Send + Sync + 'static,
    {
        let handler = Handler::StreamPerWorker(Arc::new(move |worker| {
            let mut make = per_worker(worker);
            Box::new(move |cx: &SessionContext| Box::new(make(cx)) as Box<dyn StreamSession>)
        }));
        self.service(addr, name, handler)
    }

    /// A TCP service whose state is sharded over the workers: each worker
    /// owns one `S`, made by `new_shard` on its own thread (given its
    /// index), and every session gets a [`Mesh`] through which it reaches
    /// its own worker's shard directly and any other's by message, with
    /// no lock. See [`Mesh`] for how replies keep their order.
    pub fn tcp_sharded<S, T, G, F>(
        self,
        addr: SocketAddr,
        name: &str,
        new_shard: G,
        new_session: F,
    ) -> Self
    where
        S: 'static,
        T: StreamSession + 'static,
        G: Fn(usize) -> S + Send + Sync + 'static,
        F: Fn(&SessionContext, &Mesh<S>) -> T + Send + Sync + 'static,
    {
        let new_session = Arc::new(new_session);
        let make = move |local: &std::rc::Rc<crate::mesh::MeshLocal>, service: u32| {
            let shard = std::rc::Rc::new(std::cell::RefCell::new(new_shard(local.worker as usize)));
            let mesh = Mesh::new(local.clone(), shard, service);
            let new_session = new_session.clone();
            Box::new(move |cx: &SessionContext| {
                Box::new(new_session(cx, &mesh)) as Box<dyn StreamSession>
            }) as crate::config::SessionMaker
        };
        self.service(addr, name, Handler::Sharded(Sharded(Arc::new(make))))
    }

    /// A UDP service on `addr` named `name`: `new_handler` makes each
    /// worker's handler, on that worker's thread.
    pub fn udp<H, F>(self, addr: SocketAddr, name: &str, new_handler: F) -> Self
    where
        H: DatagramHandler + 'static,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let handler = Handler::Datagram(Arc::new(move || {
            Box::new(new_handler()) as Box<dyn DatagramHandler>
        }));
        self.service(addr, name, handler)
    }

    fn service(mut self, addr: SocketAddr, name: &str, handler: Handler) -> Self {
        self.config.services.push(ServiceConfig {
            addr,
            protocol: name.to_string(),
            handler,
        });
        self
    }

    /// Binds every service and starts the workers; returns once all are
    /// serving. Stop it with [`PerCore::shutdown`], then
    /// [`PerCore::join`].
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use engine::{Fed, Server, StreamSession};
    ///
    /// /// Answers every byte with its capital.
    /// struct Upper;
    ///
    /// impl StreamSession for Upper {
    ///     fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>, _room: usize) -> Fed {
    ///         out.extend(input.iter().map(u8::to_ascii_uppercase));
    ///         Fed::all(input.len())
    ///     }
    /// }
    ///
    /// let running = Server::new()
    ///     .workers(1)
    ///     .tcp("127.0.0.1:0".parse().unwrap(), "upper", |_cx| Upper)
    ///     .start()
    ///     .expect("io_uring and a free port");
    /// let addr = running.services()[0].addr;
    /// let mut client = std::net::TcpStream::connect(addr).unwrap();
    /// client.write_all(b"hello").unwrap();
    /// let mut reply = [0; 5];
    /// client.read_exact(&mut reply).unwrap();
    /// assert_eq!(&reply, b"HELLO");
    /// running.shutdown();
    /// running.join().unwrap();
    /// ```
    pub fn start(self) -> Result<PerCore, EngineError> {
        match self.driver {
            Driver::Uring => crate::Engine::start(self.config).map(crate::Engine::into_core),
            Driver::Epoll => crate::start_epoll(self.config),
        }
    }

    /// Starts, prints each service as bound (`tcp 127.0.0.1:6379 ping`, one
    /// line each, on standard output; then `metrics http://ADDR/metrics`
    /// if asked for), serves until SIGINT or SIGTERM, then stops
    /// gracefully: no new connections, replies flushed for up to the
    /// shutdown deadline, every worker joined.
    pub fn run(self) -> Result<(), EngineError> {
        // Blocked before any worker starts, so that every thread inherits
        // the mask and only this one receives them.
        let signals = ShutdownSignals::block().map_err(|source| EngineError::Signals { source })?;
        let io_path = match self.driver {
            Driver::Uring => "io_uring",
            Driver::Epoll => "epoll",
        };
        let metrics = self.metrics;
        let running = self.start()?;
        for service in running.services() {
            println!(
                "{} {} {}",
                service.transport, service.addr, service.protocol
            );
        }
        if let Some(addr) = metrics {
            match crate::metrics::serve(addr, running.stats(), io_path) {
                Ok(bound) => println!("metrics http://{bound}/metrics"),
                Err(source) => {
                    running.shutdown();
                    let _ = running.join();
                    return Err(EngineError::Metrics { addr, source });
                }
            }
        }
        let waited = loop {
            match signals.wait(std::time::Duration::from_millis(200)) {
                Ok(Some(_)) => break Ok(()),
                Ok(None) if running.any_worker_stopped() => break Ok(()),
                Ok(None) => {}
                Err(source) => break Err(EngineError::Signals { source }),
            }
        };
        running.shutdown();
        let joined = running.join();
        waited.and(joined)
    }
}
