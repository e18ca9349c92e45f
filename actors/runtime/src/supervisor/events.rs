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

/// Accessors, so a test or a tool can read an event without matching every variant (the enum is
/// `#[non_exhaustive]`, so a `match` needs a wildcard arm outside this crate).
///
/// ```
/// use micro_runtime::SupervisionEvent;
///
/// # fn read(event: SupervisionEvent) {
/// if let (Some(child), Some(reason)) = (event.child(), event.reason()) {
///     println!("{} saw {child} exit: {reason}", event.supervisor());
/// }
/// # }
/// ```
impl SupervisionEvent {
    /// The name of the supervisor that saw or did this.
    pub fn supervisor(&self) -> &str {
        match self {
            SupervisionEvent::ChildStarted { supervisor, .. }
            | SupervisionEvent::ChildExited { supervisor, .. }
            | SupervisionEvent::ChildRestarting { supervisor, .. }
            | SupervisionEvent::SupervisorFailed { supervisor, .. } => supervisor,
        }
    }

    /// The child's name (`#key` for anonymous children); `None` for
    /// [`SupervisorFailed`](SupervisionEvent::SupervisorFailed), which is about the supervisor.
    pub fn child(&self) -> Option<&str> {
        match self {
            SupervisionEvent::ChildStarted { child, .. }
            | SupervisionEvent::ChildExited { child, .. }
            | SupervisionEvent::ChildRestarting { child, .. } => Some(child),
            SupervisionEvent::SupervisorFailed { .. } => None,
        }
    }

    /// The incarnation that started or exited; `None` for the other events. (A restart that
    /// failed to start is reported as an exit of incarnation 0.)
    pub fn id(&self) -> Option<ActorId> {
        match self {
            SupervisionEvent::ChildStarted { id, .. }
            | SupervisionEvent::ChildExited { id, .. } => Some(*id),
            SupervisionEvent::ChildRestarting { .. }
            | SupervisionEvent::SupervisorFailed { .. } => None,
        }
    }

    /// Why a child exited; `None` unless this is [`ChildExited`](SupervisionEvent::ChildExited).
    pub fn reason(&self) -> Option<&ExitReason> {
        match self {
            SupervisionEvent::ChildExited { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Why a supervisor gave up; `None` unless this is
    /// [`SupervisorFailed`](SupervisionEvent::SupervisorFailed).
    pub fn failure(&self) -> Option<&str> {
        match self {
            SupervisionEvent::SupervisorFailed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The backoff delay of a scheduled restart; `None` unless this is
    /// [`ChildRestarting`](SupervisionEvent::ChildRestarting).
    pub fn delay(&self) -> Option<Duration> {
        match self {
            SupervisionEvent::ChildRestarting { delay, .. } => Some(*delay),
            _ => None,
        }
    }

    /// Whether this is the start of the child called `child`.
    pub fn is_start_of(&self, child: &str) -> bool {
        matches!(self, SupervisionEvent::ChildStarted { child: c, .. } if c == child)
    }

    /// Whether this is the exit of the child called `child`.
    pub fn is_exit_of(&self, child: &str) -> bool {
        matches!(self, SupervisionEvent::ChildExited { child: c, .. } if c == child)
    }
}
