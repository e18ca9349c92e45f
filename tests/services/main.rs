//! Services end to end: replicas of a service on several nodes over real QUIC (loopback), a
//! client calling them by name, and everything between — balancing, retries, deadlines,
//! headers, errors, codecs, overload, streaming, graceful stops.

#![allow(clippy::unwrap_used)]

mod auth;
mod balancing;
mod calls;
mod common;
mod contract;
mod discovery;
mod events;
mod failover;
mod startup;
mod streams;
mod typed;
