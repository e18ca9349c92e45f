//! How children are described: restart policy, strategy, intensity, backoff and child specs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::ActorCell;

use crate::actor::{Actor, Host, HostArgs};
use crate::mailbox::MailboxBound;
use crate::node::Node;
use crate::supervisor::SupervisorRef;
use crate::{ActorId, Error};

/// When a child is restarted after it exits (OTP's restart types).
///
/// A child supervisor that gives up (exceeds its [`Intensity`]) exits abnormally, and is reported
/// so, but its parent decides on it as OTP on a supervisor's `shutdown` exit: only a permanent one
/// is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always restarted, whatever the exit reason.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (error, panic, kill); a normal stop is final, and so
    /// is a child supervisor giving up.
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    pub(crate) fn applies(self, abnormal: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        }
    }
}

/// Which children are restarted when one exits and must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: the others are stopped (in reverse start order), then all start again in order.
    /// If one fails to start, the ones this pass started are stopped again and the whole group
    /// starts again after the next backoff, as in OTP; the failure counts against the intensity.
    OneForAll,
    /// The child that exited and every child started after it. If one of them fails to start,
    /// the restart goes on from that child after the next backoff; the failure counts against the
    /// intensity.
    RestForOne,
}

/// Restart intensity: at most `max_restarts` restarts within `period`. One more and the supervisor
/// gives up: it stops its children and fails with
/// [`Error::SupervisorFailed`](crate::Error::SupervisorFailed). Its own supervisor restarts it
/// only if it is [`Restart::Permanent`] (OTP's `shutdown` exit), so a transient or temporary
/// subtree can give up for good; the root's failure stops the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The sliding window the restarts are counted in.
    pub period: Duration,
}

impl Intensity {
    /// At most `max_restarts` within `period`.
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Intensity {
            max_restarts,
            period,
        }
    }
}

impl Default for Intensity {
    /// Three restarts within five seconds, as Elixir's and Akka's supervisors default to.
    fn default() -> Self {
        Intensity::new(3, Duration::from_secs(5))
    }
}

/// The delay before a restart: exponential from `initial`, doubling each consecutive restart,
/// capped at `max`, spread by up to ± `jitter` (a fraction), and back to `initial` after the
/// supervisor has been quiet (no restart) for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// How far each delay is spread at random, as a fraction of it (0.0 to 1.0).
    pub jitter: f64,
    /// After this long without a restart the delay starts from `initial` again.
    pub reset_after: Duration,
}

impl Backoff {
    /// Exponential backoff from `initial` to `max`, with 10% jitter and a reset after 30 s quiet.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
        }
    }

    /// Restart at once, as OTP does.
    pub fn none() -> Self {
        Backoff::exponential(Duration::ZERO, Duration::ZERO)
    }

    /// The same backoff with another jitter fraction (clamped to 0.0..=1.0).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The same backoff with another quiet period before it resets.
    #[must_use]
    pub fn with_reset_after(mut self, quiet: Duration) -> Self {
        self.reset_after = quiet;
        self
    }

    /// The delay before restart number `attempt` (0-based) of a run, before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        let spread = rand::random_range(-self.jitter..=self.jitter);
        base.mul_f64(1.0 + spread)
    }
}

impl Default for Backoff {
    /// 10 ms doubling up to 2 s, 10% jitter, reset after 30 s quiet.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(10), Duration::from_secs(2))
    }
}

/// How to build and run one actor child: a factory for fresh state, an optional name, the restart
/// type, the time it gets to stop gracefully and an optional mailbox bound.
///
/// ```
/// # use micro_runtime::{Actor, ActorError, ChildSpec, Context, Restart};
/// # use std::time::Duration;
/// # #[derive(Default)] struct Cache;
/// # impl Actor for Cache { type Msg = (); async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> { Ok(()) } }
/// let spec = ChildSpec::new(Cache::default)
///     .named("cache")
///     .restart(Restart::Transient)
///     .shutdown(Duration::from_secs(2))
///     .mailbox(10_000);
/// ```
pub struct ChildSpec<A: Actor> {
    name: Option<Arc<str>>,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    restart: Restart,
    shutdown: Duration,
    mailbox: Option<usize>,
}

impl<A: Actor> ChildSpec<A> {
    /// A child built by `factory` (called again for every restart), anonymous, permanent, with
    /// five seconds to stop and an unbounded mailbox.
    pub fn new(factory: impl Fn() -> A + Send + Sync + 'static) -> Self {
        ChildSpec {
            name: None,
            factory: Arc::new(factory),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            mailbox: None,
        }
    }

    /// Registers the child under `name` in its node's directory (unique per node).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into().into());
        self
    }

    /// Sets the restart type.
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how long the child gets to stop gracefully before it is killed.
    #[must_use]
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// Bounds the mailbox: sends beyond `capacity` queued messages fail with
    /// [`Error::MailboxFull`](crate::Error::MailboxFull).
    #[must_use]
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = Some(capacity.max(1));
        self
    }
}

impl<A: Actor> Clone for ChildSpec<A> {
    fn clone(&self) -> Self {
        ChildSpec {
            name: self.name.clone(),
            factory: self.factory.clone(),
            restart: self.restart,
            shutdown: self.shutdown,
            mailbox: self.mailbox,
        }
    }
}

impl<A: Actor> fmt::Debug for ChildSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("mailbox", &self.mailbox)
            .finish()
    }
}

/// A supervisor's description: its strategy, intensity, backoff and children (actors or other
/// supervisors), started in the order given and stopped in reverse.
///
/// ```
/// # use micro_runtime::{Actor, ActorError, ChildSpec, Context, Intensity, Strategy, SupervisorSpec};
/// # use std::time::Duration;
/// # #[derive(Default)] struct Worker;
/// # impl Actor for Worker { type Msg = (); async fn handle(&mut self, _: &mut Context<Self>, _: ()) -> Result<(), ActorError> { Ok(()) } }
/// let spec = SupervisorSpec::new(Strategy::RestForOne)
///     .named("pipeline")
///     .intensity(Intensity::new(5, Duration::from_secs(10)))
///     .child(ChildSpec::new(Worker::default).named("reader"))
///     .child(ChildSpec::new(Worker::default).named("writer"));
/// ```
#[derive(Clone)]
pub struct SupervisorSpec {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) backoff: Backoff,
    pub(crate) children: Vec<Child>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
}

impl SupervisorSpec {
    /// A supervisor with this strategy, default intensity and backoff, and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            name: None,
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(30),
        }
    }

    /// Names the supervisor (in events and logs).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into().into());
        self
    }

    /// Sets the restart intensity.
    #[must_use]
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets the backoff between restarts.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a child, started after the ones before it.
    #[must_use]
    pub fn child(mut self, child: impl Into<Child>) -> Self {
        self.children.push(child.into());
        self
    }

    /// The restart type of this supervisor as a child of another (permanent by default). When
    /// this supervisor gives up (exceeds its intensity) only a permanent one is restarted.
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long this supervisor gets to stop its children when it is itself stopped.
    #[must_use]
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }
}

impl fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field("children", &self.children.len())
            .finish()
    }
}

/// One child of a supervisor, of any kind: made from a [`ChildSpec`] or a [`SupervisorSpec`].
#[derive(Clone)]
pub struct Child {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
    pub(crate) start: Arc<dyn StartChild>,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .finish()
    }
}

impl<A: Actor> From<ChildSpec<A>> for Child {
    fn from(spec: ChildSpec<A>) -> Self {
        Child {
            name: spec.name.clone(),
            restart: spec.restart,
            shutdown: spec.shutdown,
            start: Arc::new(spec),
        }
    }
}

impl From<SupervisorSpec> for Child {
    fn from(spec: SupervisorSpec) -> Self {
        Child {
            name: spec.name.clone(),
            restart: spec.restart,
            shutdown: spec.shutdown,
            start: Arc::new(spec),
        }
    }
}

/// A child that has just started.
pub(crate) struct Started {
    pub(crate) cell: ActorCell,
    pub(crate) bound: Arc<MailboxBound>,
    pub(crate) supervisor: Option<SupervisorRef>,
}

impl Started {
    pub(crate) fn id(&self) -> ActorId {
        ActorId::of(&self.cell)
    }
}

/// Starts one incarnation of a child, linked to `parent`.
pub(crate) trait StartChild: Send + Sync {
    fn start<'a>(
        &'a self,
        parent: Option<&'a ActorCell>,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Started, Error>>;
}

impl<A: Actor> StartChild for ChildSpec<A> {
    fn start<'a>(
        &'a self,
        parent: Option<&'a ActorCell>,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Started, Error>> {
        Box::pin(async move {
            let label = self.name.as_deref().unwrap_or("anonymous actor");
            if let Some(name) = &self.name {
                node.directory().check_free(name)?;
            }
            // A named actor's mailbox is counted from the start, so it may take remote messages
            // inline (it is the kind `Node::expose` reaches).
            let bound = Arc::new(match self.name {
                Some(_) => MailboxBound::tracked(self.mailbox),
                None => MailboxBound::new(self.mailbox),
            });
            let args = HostArgs {
                actor: (self.factory)(),
                node: node.clone(),
                name: self.name.clone(),
                bound: bound.clone(),
            };
            let spawned = match parent {
                Some(parent) => {
                    ractor::Actor::spawn_linked(None, Host::<A>::new(), args, parent.clone()).await
                }
                None => ractor::Actor::spawn(None, Host::<A>::new(), args).await,
            };
            let (actor, _join) = spawned.map_err(|e| start_error(label, e))?;
            let cell = actor.get_cell();
            Ok(Started {
                cell,
                bound,
                supervisor: None,
            })
        })
    }
}

/// Turns ractor's spawn error into ours, keeping the reason the actor gave.
pub(crate) fn start_error(child: &str, err: ractor::SpawnErr) -> Error {
    let reason = match err {
        ractor::SpawnErr::StartupFailed(inner) => match inner.downcast::<Error>() {
            Ok(ours) => return *ours,
            Err(other) => other.to_string(),
        },
        other => other.to_string(),
    };
    Error::StartFailed {
        child: child.to_owned(),
        reason,
    }
}
