//! The [`Actor`] trait users implement, the [`Context`] it runs with, and the ractor adapter that
//! hosts it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use ractor::{ActorProcessingErr, ActorRef, SupervisionEvent as RactorEvent};
use tokio::sync::{broadcast, mpsc, watch};

use crate::mailbox::MailboxBound;
use crate::task::{self, AbortOnDrop, Mailbox};
use crate::{ActorId, Addr, Node};

/// What an actor's hooks return on failure: any error. A handler that returns one fails the actor,
/// and its supervisor decides what happens next.
pub type ActorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An actor: its own state (`self`) and a handler for its messages.
///
/// A fresh value is built by the child spec's factory for every incarnation, so a restarted actor
/// starts from clean state. Resources the actor owns (sockets, threads, files) must be released in
/// `Drop`: when an actor panics or is killed, [`Actor::stopped`] does not run, but the value is
/// always dropped.
///
/// ```
/// use micro_runtime::{Actor, ActorError, Context, Reply};
///
/// #[derive(Default)]
/// struct Counter { count: u64 }
///
/// enum CounterMsg { Add(u64), Get(Reply<u64>) }
///
/// impl Actor for Counter {
///     type Msg = CounterMsg;
///     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: CounterMsg) -> Result<(), ActorError> {
///         match msg {
///             CounterMsg::Add(n) => self.count += n,
///             CounterMsg::Get(reply) => { let _ = reply.send(self.count); }
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Actor: Sized + Send + 'static {
    /// The messages this actor takes.
    type Msg: Send + 'static;

    /// Runs before the first message. An error here is a start failure, reported to whoever
    /// started the actor (or its supervisor).
    fn started(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message. Messages are handled one at a time, in arrival order.
    fn handle(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Self::Msg,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// Runs after a graceful stop (not after a panic, an error or a kill; use `Drop` for cleanup
    /// that must always happen).
    fn stopped(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}

/// What a running actor can see of itself and its node.
pub struct Context<A: Actor> {
    addr: Addr<A::Msg>,
    node: Node,
    name: Option<Arc<str>>,
    bound: Arc<MailboxBound>,
    myself: ActorRef<A::Msg>,
    /// Ticks and forwarded streams: aborted when the incarnation's state is dropped.
    helpers: Vec<AbortOnDrop>,
}

impl<A: Actor> Context<A> {
    /// The address of this incarnation (id-based: it reports the actor stopped after a restart).
    pub fn addr(&self) -> Addr<A::Msg> {
        self.addr.clone()
    }

    /// The node this actor runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The name this actor is registered under on its node, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// This incarnation's id.
    pub fn id(&self) -> ActorId {
        ActorId::of(&self.myself.get_cell())
    }

    /// Stops this actor gracefully once the current message is handled. Its exit is normal, so a
    /// transient child is not restarted.
    pub fn stop(&self) {
        self.myself.stop(None);
    }

    /// Puts `msg()` in this actor's mailbox every `period`, the first one period from now, until
    /// this incarnation ends (gracefully, by an error, a panic or a kill: the ticker is aborted
    /// with the actor's state). A restarted actor ticks only if its new incarnation asks again.
    ///
    /// A tick that finds a bounded mailbox full is skipped, and ticks missed while the runtime
    /// was busy are not made up in a burst. A zero period counts as one millisecond.
    ///
    /// ```
    /// use std::time::Duration;
    /// use micro_runtime::{Actor, ActorError, Context};
    ///
    /// struct Sweeper;
    /// enum Msg { Sweep }
    ///
    /// impl Actor for Sweeper {
    ///     type Msg = Msg;
    ///     async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
    ///         ctx.tick(Duration::from_millis(250), || Msg::Sweep);
    ///         Ok(())
    ///     }
    ///     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
    ///         match msg {
    ///             Msg::Sweep => { /* drop what expired */ }
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn tick<F>(&mut self, period: Duration, msg: F)
    where
        F: FnMut() -> A::Msg + Send + 'static,
    {
        let ticker = task::tick(self.mailbox(), period, msg);
        self.keep(ticker);
    }

    /// Puts each item of `stream` in this actor's mailbox as the message `f` makes of it, in the
    /// stream's order, until the stream ends (the forwarding then stops quietly) or this
    /// incarnation ends (the forwarder is aborted with the actor's state, also after a panic or a
    /// kill, and the stream dropped; a restarted actor gets items only if it forwards again).
    ///
    /// `f` returns a message or an `Option` of one: `None` skips the item. While a bounded
    /// mailbox is full, the stream is not polled.
    ///
    /// ```
    /// use micro_runtime::{Actor, ActorError, Context};
    ///
    /// struct Totals { sum: u64 }
    /// enum Msg { Add(u64) }
    ///
    /// impl Actor for Totals {
    ///     type Msg = Msg;
    ///     async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
    ///         // Any `futures::Stream`; odd numbers are skipped.
    ///         let numbers = futures::stream::iter(1..=10u64);
    ///         ctx.forward(numbers, |n| (n % 2 == 0).then_some(Msg::Add(n)));
    ///         Ok(())
    ///     }
    ///     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
    ///         let Msg::Add(n) = msg;
    ///         self.sum += n;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn forward<S, F, R>(&mut self, stream: S, f: F)
    where
        S: Stream + Send + 'static,
        F: FnMut(S::Item) -> R + Send + 'static,
        R: Into<Option<A::Msg>>,
    {
        let forwarder = task::forward(self.mailbox(), stream, f);
        self.keep(forwarder);
    }

    /// [`forward`](Context::forward)s a watch channel: its current value first, then each
    /// change (values overwritten before the forwarder saw them are skipped, as watch receivers
    /// do); it stops when the sender is dropped.
    ///
    /// ```
    /// use micro_runtime::{Actor, ActorError, Context};
    /// use tokio::sync::watch;
    ///
    /// struct Follower { config: watch::Receiver<u32>, current: u32 }
    /// enum Msg { Config(u32) }
    ///
    /// impl Actor for Follower {
    ///     type Msg = Msg;
    ///     async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
    ///         ctx.forward_watch(self.config.clone(), Msg::Config);
    ///         Ok(())
    ///     }
    ///     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
    ///         let Msg::Config(value) = msg;
    ///         self.current = value;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn forward_watch<T, F, R>(&mut self, rx: watch::Receiver<T>, f: F)
    where
        T: Clone + Send + Sync + 'static,
        F: FnMut(T) -> R + Send + 'static,
        R: Into<Option<A::Msg>>,
    {
        self.forward(task::watch_stream(rx), f);
    }

    /// [`forward`](Context::forward)s a broadcast channel. `f` gets what the receiver got: a
    /// value, or `Err(RecvError::Lagged(n))` when `n` values were missed (so the actor can
    /// catch up another way); the forwarding stops when the channel closes.
    ///
    /// ```
    /// use micro_runtime::{Actor, ActorError, Context, PeerEvent};
    ///
    /// struct Membership;
    /// enum Msg { Peer(PeerEvent) }
    ///
    /// impl Actor for Membership {
    ///     type Msg = Msg;
    ///     async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
    ///         let events = ctx.node().peer_events()?;
    ///         // Lags are skipped here: `ok()` turns them into `None`.
    ///         ctx.forward_broadcast(events, |event| event.ok().map(Msg::Peer));
    ///         Ok(())
    ///     }
    ///     async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
    ///         let Msg::Peer(_event) = msg;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn forward_broadcast<T, F, R>(&mut self, rx: broadcast::Receiver<T>, f: F)
    where
        T: Clone + Send + 'static,
        F: FnMut(Result<T, broadcast::error::RecvError>) -> R + Send + 'static,
        R: Into<Option<A::Msg>>,
    {
        self.forward(task::broadcast_stream(rx), f);
    }

    /// [`forward`](Context::forward)s an mpsc channel's values; it stops when every sender is
    /// dropped. (An unbounded receiver forwards as a stream:
    /// `futures::stream::poll_fn(move |cx| rx.poll_recv(cx))`.)
    pub fn forward_channel<T, F, R>(&mut self, rx: mpsc::Receiver<T>, f: F)
    where
        T: Send + 'static,
        F: FnMut(T) -> R + Send + 'static,
        R: Into<Option<A::Msg>>,
    {
        self.forward(task::channel_stream(rx), f);
    }

    /// This incarnation's mailbox, for its helper tasks.
    fn mailbox(&self) -> Mailbox<A::Msg> {
        Mailbox::new(self.myself.clone(), self.bound.clone())
    }

    /// Keeps a helper task until the incarnation ends, forgetting the ones that already ended.
    fn keep(&mut self, helper: AbortOnDrop) {
        self.helpers.retain(|h| !h.is_finished());
        self.helpers.push(helper);
    }
}

impl<A: Actor> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("id", &self.id())
            .field("helpers", &self.helpers.len())
            .finish()
    }
}

/// Why an actor's incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    /// It stopped gracefully: [`Context::stop`], or its supervisor or node shut it down.
    Normal,
    /// It was killed (its task cancelled) before it could stop gracefully.
    Killed,
    /// A hook returned an error; the text is the error's.
    Error(String),
    /// A hook panicked; the text is the panic message.
    Panic(String),
}

impl ExitReason {
    /// Whether this exit counts as a failure (everything but [`ExitReason::Normal`]); transient
    /// children are restarted only after abnormal exits.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal)
    }

    pub(crate) fn from_ractor(event: &RactorEvent) -> Option<(ActorId, ExitReason)> {
        match event {
            RactorEvent::ActorTerminated(cell, _, reason) => {
                let exit = match reason.as_deref() {
                    Some("killed") | Some("actor_task_cancelled") => ExitReason::Killed,
                    _ => ExitReason::Normal,
                };
                Some((ActorId::of(cell), exit))
            }
            RactorEvent::ActorFailed(cell, err) => {
                // Errors are ours (a `Failure` from a hook, or a supervisor's `Error`); anything
                // else is the panic message ractor caught around the actor's loop.
                let exit = if let Some(failure) = err.downcast_ref::<Failure>() {
                    match failure {
                        Failure::Panic(msg) => ExitReason::Panic(msg.clone()),
                        Failure::Error(msg) => ExitReason::Error(msg.clone()),
                    }
                } else if let Some(error) = err.downcast_ref::<crate::Error>() {
                    ExitReason::Error(error.to_string())
                } else {
                    ExitReason::Panic(err.to_string())
                };
                Some((ActorId::of(cell), exit))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
            ExitReason::Panic(p) => write!(f, "panic: {p}"),
        }
    }
}

/// How a hook failed, carried through ractor's boxed error so supervisors can tell a panic from
/// an error.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Error(String),
    Panic(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => f.write_str(e),
            Failure::Panic(p) => write!(f, "panicked: {p}"),
        }
    }
}

impl std::error::Error for Failure {}

pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Runs a start or stop hook, turning its error or panic into a [`Failure`].
async fn guarded<F>(hook: F) -> Result<(), ActorProcessingErr>
where
    F: Future<Output = Result<(), ActorError>> + Send,
{
    match AssertUnwindSafe(hook).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Box::new(Failure::Error(e.to_string()))),
        Err(payload) => Err(Box::new(Failure::Panic(panic_text(payload.as_ref())))),
    }
}

pin_project_lite::pin_project! {
    /// A handler's future with its error turned into a [`Failure`]: as thin as the handler's own
    /// future, since ractor moves it for every message.
    pub(crate) struct Handled<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = Result<(), ActorError>>> Future for Handled<F> {
    type Output = Result<(), ActorProcessingErr>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(())),
            std::task::Poll::Ready(Err(err)) => std::task::Poll::Ready(Err(failed(err))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[cold]
fn failed(err: ActorError) -> ActorProcessingErr {
    Box::new(Failure::Error(err.to_string()))
}

/// The ractor actor that hosts a user [`Actor`].
///
/// The user value and its [`Context`] live in a [`Slot`] behind an async lock, so that a remote
/// message can be handled inline, in the link's reading task, when the actor is idle and its
/// mailbox empty (see [`HostCell::try_inline`]); the lock is what keeps the state from being
/// touched by two tasks at once, and the mailbox count is what keeps each sender's order.
pub(crate) struct Host<A>(PhantomData<fn() -> A>);

impl<A> Host<A> {
    pub(crate) fn new() -> Self {
        Host(PhantomData)
    }
}

pub(crate) struct HostArgs<A: Actor> {
    pub(crate) actor: A,
    pub(crate) node: Node,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) bound: Arc<MailboxBound>,
}

/// The user's actor and its context, and how an inline handler failed, if one did.
struct Slot<A: Actor> {
    actor: A,
    ctx: Context<A>,
    /// Set when a handler run outside the actor's task failed: the actor exits with it.
    failed: Option<Failure>,
}

/// One incarnation's state, shared by its ractor task and the inline path.
pub(crate) struct HostCell<A: Actor> {
    slot: Arc<tokio::sync::Mutex<Slot<A>>>,
    bound: Arc<MailboxBound>,
    myself: ActorRef<A::Msg>,
    /// A handler started inline that had to wait, finishing in a task of its own (it holds the
    /// slot's lock); aborted with the incarnation.
    continuation: std::sync::Mutex<Option<AbortOnDrop>>,
}

/// ractor's state for a [`Host`]: the shared cell. Dropped when the actor's task ends, which
/// aborts a continuation still running, so the user value is dropped with the incarnation.
pub(crate) struct HostState<A: Actor> {
    cell: Arc<HostCell<A>>,
}

impl<A: Actor> Drop for HostState<A> {
    fn drop(&mut self) {
        let continuation = self
            .cell
            .continuation
            .lock()
            .ok()
            .and_then(|mut c| c.take());
        drop(continuation);
    }
}

impl<A: Actor> HostCell<A> {
    /// Handles `msg` in the caller's task when the actor is idle (its lock free) and its mailbox
    /// empty (counted exactly: named actors only), as a service answers a call inline: the
    /// handler is polled once here; if it must wait, it finishes in a task of its own, still
    /// holding the lock, so the actor's next message waits for it. A failure or a panic there is
    /// the actor's: it is recorded and the actor stopped, and its exit reports it.
    fn inline(self: Arc<Self>, msg: A::Msg) -> Result<(), A::Msg> {
        if !self.bound.known_empty() {
            return Err(msg);
        }
        let Ok(guard) = self.slot.clone().try_lock_owned() else {
            return Err(msg);
        };
        if guard.failed.is_some() || self.myself.get_status() != ractor::ActorStatus::Running {
            return Err(msg);
        }
        // Checked again under the lock: the actor's task takes the lock before it counts a
        // message out, so a message it has dequeued but not yet handled is still counted here.
        if !self.bound.known_empty() {
            return Err(msg);
        }
        let mut run = Box::pin(run_inline(guard, msg));
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        if run.as_mut().poll(&mut first).is_pending() {
            // Futures register their wakers anew at every poll: the task's first poll replaces
            // the no-op waker registered here.
            let task = AbortOnDrop::spawn(run);
            if let Ok(mut continuation) = self.continuation.lock() {
                *continuation = Some(task);
            }
        }
        Ok(())
    }
}

impl<A: Actor> crate::mailbox::InlineTarget<A::Msg> for HostCell<A> {
    fn try_inline(self: Arc<Self>, msg: A::Msg) -> Result<(), A::Msg> {
        self.inline(msg)
    }
}

/// Runs one handler outside the actor's task, holding the slot's lock; an error or a panic
/// fails the actor as if its own task had met it.
async fn run_inline<A: Actor>(mut guard: tokio::sync::OwnedMutexGuard<Slot<A>>, msg: A::Msg) {
    let slot = &mut *guard;
    let outcome = AssertUnwindSafe(slot.actor.handle(&mut slot.ctx, msg))
        .catch_unwind()
        .await;
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(err)) => Failure::Error(err.to_string()),
        Err(payload) => Failure::Panic(panic_text(payload.as_ref())),
    };
    tracing::debug!(actor = %slot.ctx.id(), failure = %failure, "a handler run inline failed");
    slot.failed = Some(failure);
    // Wakes the actor's task if it is idle; its exit (in `post_stop`, or in `handle` if a
    // message is waiting for the lock) reports the failure.
    slot.ctx.myself.stop(None);
}

impl<A: Actor> ractor::Actor for Host<A> {
    type Msg = A::Msg;
    type State = HostState<A>;
    type Arguments = HostArgs<A>;

    async fn pre_start(
        &self,
        myself: ActorRef<A::Msg>,
        args: HostArgs<A>,
    ) -> Result<HostState<A>, ActorProcessingErr> {
        let HostArgs {
            mut actor,
            node,
            name,
            bound,
        } = args;
        let addr = Addr::local(myself.clone(), node.clone(), bound.clone());
        let mut ctx = Context {
            addr,
            node,
            name,
            bound: bound.clone(),
            myself: myself.clone(),
            helpers: Vec::new(),
        };
        // The name is bound before `started` runs, so the actor can be found (and exposed) from
        // its own start; a failed start unbinds it.
        if let Some(name) = &ctx.name {
            ctx.node
                .directory()
                .register(name, ctx.myself.get_cell(), ctx.bound.clone())
                .map_err(|taken| Box::new(taken) as ActorProcessingErr)?;
        }
        if let Err(err) = guarded(actor.started(&mut ctx)).await {
            if let Some(name) = &ctx.name {
                ctx.node.directory().remove_if(name, ctx.id());
            }
            return Err(err);
        }
        let cell = Arc::new(HostCell {
            slot: Arc::new(tokio::sync::Mutex::new(Slot {
                actor,
                ctx,
                failed: None,
            })),
            bound,
            myself,
            continuation: std::sync::Mutex::new(None),
        });
        let weak: std::sync::Weak<dyn crate::mailbox::InlineTarget<A::Msg>> =
            Arc::downgrade(&cell) as _;
        cell.bound.set_inline(weak);
        Ok(HostState { cell })
    }

    fn handle(
        &self,
        _myself: ActorRef<A::Msg>,
        msg: A::Msg,
        state: &mut HostState<A>,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        let cell = &*state.cell;
        async move {
            // The lock first, then the count: while a handler started inline runs, this
            // message stays counted, so later ones from its sender queue behind it.
            let mut guard = match cell.slot.try_lock() {
                Ok(guard) => guard,
                Err(_) => cell.slot.lock().await,
            };
            cell.bound.release();
            let slot = &mut *guard;
            if let Some(failure) = &slot.failed {
                return Err(Box::new(failure.clone()) as ActorProcessingErr);
            }
            // No `catch_unwind` per message: ractor catches panics around the whole loop, and
            // `ExitReason::from_ractor` tells them from errors, which are always a `Failure`.
            Handled {
                inner: slot.actor.handle(&mut slot.ctx, msg),
            }
            .await
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<A::Msg>,
        state: &mut HostState<A>,
    ) -> Result<(), ActorProcessingErr> {
        // Waits for a handler still running outside the actor's task, as a graceful stop waits
        // for the message being handled.
        let mut guard = state.cell.slot.lock().await;
        let slot = &mut *guard;
        if let Some(failure) = &slot.failed {
            // A handler run inline failed: the actor exits with that, and `stopped` does not
            // run (as after a failure in its own task).
            return Err(Box::new(failure.clone()));
        }
        let Slot { actor, ctx, .. } = slot;
        let stopped = async {
            actor.stopped(ctx).await;
            Ok(())
        };
        guarded(stopped).await
    }
}
