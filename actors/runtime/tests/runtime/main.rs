//! The runtime's behaviour, one story per test: supervision, addressing, the wire context and
//! resource cleanup. One test binary keeps link time down.

#![allow(clippy::unwrap_used)]

mod addressing;
mod common;
mod helpers;
mod inline;
mod process;
mod remote;
mod resources;
mod streams;
mod supervision;
mod wire;
