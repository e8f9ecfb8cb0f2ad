//! The server models `--io` chooses between, behind one interface.

use std::sync::Arc;

use clap::ValueEnum;
use engine::{BoundService, Engine, EngineConfig, EngineError, PerCore, WorkerStats};
use models::{ThreadsServer, TokioServer};

/// How the server does its I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoModel {
    /// io_uring where the kernel allows it with what the engine needs, the
    /// epoll model otherwise (saying why on stderr).
    Auto,
    /// The thread-per-core io_uring engine (refuses to start without it).
    Uring,
    /// The same thread-per-core layout with epoll readiness I/O.
    Epoll,
    /// The chapter's model: a blocking thread per connection.
    Threads,
    /// tokio's multi-threaded work-stealing runtime, a task per connection.
    Tokio,
    /// The tokio-uring crate, a runtime per pinned worker (baseline only).
    TokioUring,
}

/// A running server, whichever its model.
pub enum Running {
    /// The epoll model, because io_uring was unavailable (the cause).
    Fallback(PerCore, String),
    /// The io_uring engine.
    Uring(Engine),
    /// Thread per core with epoll.
    Epoll(PerCore),
    /// Thread per connection.
    Threads(ThreadsServer),
    /// tokio.
    Tokio(TokioServer),
    /// tokio-uring, thread per core.
    TokioUring(PerCore),
}

impl Running {
    /// Starts `model` with `config`.
    pub fn start(model: IoModel, config: EngineConfig) -> Result<Running, EngineError> {
        Ok(match model {
            IoModel::Auto => match Engine::start(config.clone()) {
                Ok(engine) => Running::Uring(engine),
                Err(EngineError::UringUnavailable(cause)) => {
                    eprintln!(
                        "ringcore: io_uring is unavailable, serving with epoll instead: {cause}"
                    );
                    Running::Fallback(engine::start_epoll(config)?, cause)
                }
                Err(e) => return Err(e),
            },
            IoModel::Uring => Running::Uring(Engine::start(config)?),
            IoModel::Epoll => Running::Epoll(engine::start_epoll(config)?),
            IoModel::Threads => Running::Threads(ThreadsServer::start(config)?),
            IoModel::Tokio => Running::Tokio(TokioServer::start(config)?),
            IoModel::TokioUring => Running::TokioUring(models::tokio_uring_model::start(config)?),
        })
    }

    /// The services as bound.
    pub fn services(&self) -> &[BoundService] {
        match self {
            Running::Uring(e) => e.services(),
            Running::Epoll(e) | Running::Fallback(e, _) | Running::TokioUring(e) => e.services(),
            Running::Threads(t) => t.services(),
            Running::Tokio(t) => t.services(),
        }
    }

    /// The counters, per worker (one set for the threads model).
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        match self {
            Running::Uring(e) => e.stats(),
            Running::Epoll(e) | Running::Fallback(e, _) | Running::TokioUring(e) => e.stats(),
            Running::Threads(t) => t.stats(),
            Running::Tokio(t) => t.stats(),
        }
    }

    /// One line on how it runs.
    pub fn describe(&self) -> String {
        match self {
            Running::Uring(e) => match e.batch_wait() {
                Some(wait) => format!(
                    "io_uring: {}; waits hold out up to {wait:?} for {} completions",
                    e.ring_mode().describe(),
                    engine::BATCH_COMPLETIONS
                ),
                None => format!("io_uring: {}", e.ring_mode().describe()),
            },
            Running::Epoll(_) => {
                "epoll: thread per core, edge-triggered readiness, GRO/GSO for UDP".to_string()
            }
            Running::Fallback(_, cause) => format!(
                "epoll, because io_uring is unavailable ({cause}): thread per core, edge-triggered readiness, GRO/GSO for UDP"
            ),
            Running::Threads(_) => {
                "threads: a blocking thread per connection (the chapter's model)".to_string()
            }
            Running::Tokio(_) => {
                "tokio: a work-stealing multi-threaded runtime, a task per connection".to_string()
            }
            Running::TokioUring(_) => {
                "tokio-uring: a runtime and ring per pinned worker, a task per connection (baseline)"
                    .to_string()
            }
        }
    }

    /// True for the models built on the engine's connection core, which
    /// enforces the output, send-timeout and memory bounds; the baselines
    /// (threads, tokio, tokio-uring) do not.
    pub fn enforces_bounds(&self) -> bool {
        matches!(
            self,
            Running::Uring(_) | Running::Epoll(_) | Running::Fallback(..)
        )
    }

    /// The I/O path in use, as `/metrics` labels it.
    pub fn io_path(&self) -> &'static str {
        match self {
            Running::Uring(_) => "io_uring",
            Running::Epoll(_) => "epoll",
            Running::Fallback(..) => "epoll-fallback",
            Running::Threads(_) => "threads",
            Running::Tokio(_) => "tokio",
            Running::TokioUring(_) => "tokio-uring",
        }
    }

    /// How many workers serve (threads: one process-wide set of threads).
    pub fn workers(&self) -> usize {
        match self {
            Running::Uring(e) => e.workers(),
            Running::Epoll(e) | Running::Fallback(e, _) | Running::TokioUring(e) => e.workers(),
            Running::Threads(_) => 1,
            Running::Tokio(t) => t.workers(),
        }
    }

    /// Starts graceful shutdown.
    pub fn shutdown(&self) {
        match self {
            Running::Uring(e) => e.shutdown_handle().shutdown(),
            Running::Epoll(e) | Running::Fallback(e, _) | Running::TokioUring(e) => {
                e.shutdown_handle().shutdown()
            }
            Running::Threads(t) => t.shutdown(),
            Running::Tokio(t) => t.shutdown(),
        }
    }

    /// True once a worker (or service thread) stopped.
    pub fn any_stopped(&self) -> bool {
        match self {
            Running::Uring(e) => e.any_worker_stopped(),
            Running::Epoll(e) | Running::Fallback(e, _) | Running::TokioUring(e) => {
                e.any_worker_stopped()
            }
            Running::Threads(t) => t.any_thread_stopped(),
            Running::Tokio(t) => t.any_task_stopped(),
        }
    }

    /// Waits for everything to finish.
    pub fn join(self) -> Result<(), EngineError> {
        match self {
            Running::Uring(e) => e.join(),
            Running::Epoll(e) | Running::Fallback(e, _) | Running::TokioUring(e) => e.join(),
            Running::Threads(t) => t.join(),
            Running::Tokio(t) => t.join(),
        }
    }
}
