//! Supervision events: what supervisors did, for logs, tests and tools.

use std::time::Duration;

use crate::{ActorId, ExitReason};

/// Something a supervisor saw or did. Every event is also logged with `tracing`; subscribe with
/// [`Node::supervision_events`](crate::Node::supervision_events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SupervisionEvent {
    /// A child (re)started.
    ChildStarted {
        /// The supervisor's name.
        supervisor: String,
        /// The child's name (or `#key` for anonymous children).
        child: String,
        /// The new incarnation's id.
        id: ActorId,
    },
    /// A child's incarnation ended.
    ChildExited {
        /// The supervisor's name.
        supervisor: String,
        /// The child's name.
        child: String,
        /// The incarnation that ended.
        id: ActorId,
        /// Why it ended.
        reason: ExitReason,
    },
    /// A restart is scheduled after a delay.
    ChildRestarting {
        /// The supervisor's name.
        supervisor: String,
        /// The child's name.
        child: String,
        /// The backoff delay before it starts again.
        delay: Duration,
        /// The restart's number in the current run of restarts (1-based).
        attempt: u32,
    },
    /// A supervisor exceeded its restart intensity, stopped its children and failed.
    SupervisorFailed {
        /// The supervisor's name.
        supervisor: String,
        /// Why.
        reason: String,
    },
}
