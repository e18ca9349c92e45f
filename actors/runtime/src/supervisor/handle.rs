//! [`SupervisorRef`]: a handle to a running supervisor.

use std::fmt;
use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::oneshot;

use super::server::SupMsg;
use super::spec::{Child, Restart, Started};
use crate::{Actor, ActorId, Addr, ChildSpec, Error, Node, SupervisorSpec};

/// A handle to a running supervisor: start and stop its children at run time (OTP's dynamic
/// children), stop or restart them by name, wait for their next start, and list them. Find a
/// nested one by name with [`Node::supervisor`].
#[derive(Clone)]
pub struct SupervisorRef {
    pub(crate) actor: ActorRef<SupMsg>,
    pub(crate) node: Node,
    pub(crate) label: Arc<str>,
}

/// One child of a supervisor as it is now.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// The child's name, if it has one.
    pub name: Option<String>,
    /// The running incarnation's id; `None` while it waits to restart.
    pub id: Option<ActorId>,
    /// Its restart type.
    pub restart: Restart,
    /// Whether it was started at run time (rather than from the supervisor's spec).
    pub dynamic: bool,
    /// The child's own handle when it is a supervisor.
    pub supervisor: Option<SupervisorRef>,
}

impl SupervisorRef {
    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.label
    }

    /// The supervisor's actor id.
    pub fn id(&self) -> ActorId {
        ActorId::of(&self.actor.get_cell())
    }

    /// Starts an actor as a new child, after the existing ones; it is restarted by this
    /// supervisor's strategy like the others.
    pub async fn start_child<A: Actor>(&self, spec: ChildSpec<A>) -> Result<Addr<A::Msg>, Error> {
        let started = self.start(spec.into()).await?;
        Ok(Addr::local(
            started.cell.into(),
            self.node.clone(),
            started.bound,
        ))
    }

    /// Starts a nested supervisor as a new child.
    pub async fn start_supervisor(&self, spec: SupervisorSpec) -> Result<SupervisorRef, Error> {
        let label = spec.name.clone();
        let started = self.start(spec.into()).await?;
        started.supervisor.ok_or_else(|| Error::StartFailed {
            child: label.as_deref().unwrap_or("supervisor").to_owned(),
            reason: "the child is not a supervisor".to_owned(),
        })
    }

    /// Stops a child gracefully (then kills it after its shutdown timeout) and removes it: it is
    /// not restarted. `id` is one incarnation's, stale once the child restarts
    /// ([`Error::NotFound`] then); [`SupervisorRef::stop_child_named`] stops whichever runs.
    pub async fn stop_child(&self, id: ActorId) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.call(SupMsg::Stop(id, tx), rx).await?
    }

    /// Stops the child called `name` gracefully (then kills it after its shutdown timeout) and
    /// removes it, like [`SupervisorRef::stop_child`] but whichever incarnation runs now (or
    /// none, while it waits to restart). [`Error::NotFound`] when this supervisor has no child of
    /// that name.
    pub async fn stop_child_named(&self, name: &str) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.call(SupMsg::StopNamed(name.to_owned(), tx), rx)
            .await?
    }

    /// Restarts the child called `name` now and returns the new incarnation's id: the running
    /// incarnation is stopped as by [`SupervisorRef::stop_child`] (reported as
    /// [`ChildExited`](crate::SupervisionEvent::ChildExited)) and the child starts again at once
    /// (one waiting for a scheduled restart starts now). As OTP's `restart_child` after
    /// `terminate_child`, this is not a failure: it does not count against the
    /// [`Intensity`](crate::Intensity), does not advance the backoff, and restarts no sibling
    /// whatever the strategy. If the new incarnation fails to start the error is returned, and
    /// the supervisor handles it as a failed restart (counted, retried after the backoff; a
    /// temporary child is dropped). [`Error::NotFound`] when this supervisor has no child of that
    /// name.
    pub async fn restart_child(&self, name: &str) -> Result<ActorId, Error> {
        let (tx, rx) = oneshot::channel();
        self.call(SupMsg::Restart(name.to_owned(), tx), rx).await?
    }

    /// [`Node::next_start`] for this supervisor's children only: resolves with the id of the
    /// next incarnation of its child `child` to start, listening from the moment it is called.
    /// Bound it with a timeout.
    pub fn next_start(
        &self,
        child: &str,
    ) -> impl std::future::Future<Output = Result<ActorId, Error>> + Send + 'static {
        self.node.wait_start(Some(self.label.clone()), child)
    }

    /// The children in start order.
    pub async fn children(&self) -> Result<Vec<ChildInfo>, Error> {
        let (tx, rx) = oneshot::channel();
        self.call(SupMsg::Children(tx), rx).await
    }

    async fn start(&self, child: Child) -> Result<Started, Error> {
        let (tx, rx) = oneshot::channel();
        self.call(SupMsg::Start(child, tx), rx).await?
    }

    async fn call<T>(&self, msg: SupMsg, rx: oneshot::Receiver<T>) -> Result<T, Error> {
        self.actor
            .cast(msg)
            .map_err(|_| Error::ActorStopped(self.label.to_string()))?;
        rx.await
            .map_err(|_| Error::ActorStopped(self.label.to_string()))
    }
}

impl fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorRef")
            .field("name", &self.label)
            .field("id", &self.id())
            .finish()
    }
}
