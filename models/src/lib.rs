//! The server models ringcore's engine is compared with, on the same
//! protocols and counters: [`ThreadsServer`] (the chapter's blocking thread
//! per connection), [`TokioServer`] (tokio's work-stealing runtime, a task
//! per connection) and [`tokio_uring_model`] (the tokio-uring crate, one
//! runtime per pinned worker). They are baselines: the engine crate holds
//! only the io_uring engine and the epoll driver that shares its layout.

#![deny(missing_docs)]

pub mod threads;
pub mod tokio_model;
pub mod tokio_uring_model;

pub use threads::ThreadsServer;
pub use tokio_model::TokioServer;

/// The error for a service whose sessions share per-worker state: only the
/// thread-per-core engine has workers to give them.
pub(crate) fn per_worker_refused(service: &engine::ServiceConfig) -> engine::EngineError {
    engine::EngineError::Config(format!(
        "service '{}' keeps per-worker state, which only the thread-per-core engine (io_uring or epoll) serves",
        service.protocol
    ))
}
