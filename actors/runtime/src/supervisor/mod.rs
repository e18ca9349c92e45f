//! Supervision: strategies, restart types, intensity and backoff, after Erlang/OTP.

mod events;
mod handle;
mod server;
mod spec;

pub use events::SupervisionEvent;
pub use handle::{ChildInfo, SupervisorRef};
pub use spec::{Backoff, Child, ChildSpec, Intensity, Restart, Strategy, SupervisorSpec};

pub(crate) use server::start_root;
