//! `quire lb` as a process in front of real HTTP upstreams: in-test servers, upstream processes
//! that can be killed with SIGKILL, and real `quire app` instances.

mod app;
mod balancing;
mod failover;
mod ops;
mod proxying;
mod retries;
mod websocket;
