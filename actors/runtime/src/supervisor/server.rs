//! The supervisor actor: starts children in order, restarts them by strategy within the restart
//! intensity, with backoff between restarts, and stops them in reverse order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent as RactorEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::events::SupervisionEvent;
use super::handle::{ChildInfo, SupervisorRef};
use super::spec::{Backoff, Child, Intensity, StartChild, Started, Strategy, SupervisorSpec};
use crate::{ActorId, Error, ExitReason, Node};

/// How long a killed child gets to finish dying before the supervisor moves on.
const KILL_GRACE: Duration = Duration::from_secs(5);

pub(crate) enum SupMsg {
    Start(Child, oneshot::Sender<Result<Started, Error>>),
    Stop(ActorId, oneshot::Sender<Result<(), Error>>),
    /// Stops and removes the child called so, whichever incarnation runs.
    StopNamed(String, oneshot::Sender<Result<(), Error>>),
    /// Stops the child called so (if it runs) and starts it again now.
    Restart(String, oneshot::Sender<Result<ActorId, Error>>),
    Children(oneshot::Sender<Vec<ChildInfo>>),
    /// A scheduled restart is due; stale generations are ignored.
    RestartDue(u64),
}

pub(crate) struct SupervisorServer;

pub(crate) struct SupArgs {
    spec: SupervisorSpec,
    node: Node,
    label: Arc<str>,
    root: bool,
}

struct Running {
    id: ActorId,
    cell: ActorCell,
    bound: Arc<crate::mailbox::MailboxBound>,
    supervisor: Option<SupervisorRef>,
}

/// One child of a supervisor: its spec and its running incarnation, if any.
struct ChildSlot {
    key: u64,
    child: Child,
    running: Option<Running>,
    /// Waiting for a scheduled restart.
    pending: bool,
    dynamic: bool,
}

impl ChildSlot {
    fn label(&self) -> String {
        match &self.child.name {
            Some(name) => name.to_string(),
            None => format!("#{}", self.key),
        }
    }
}

pub(crate) struct SupState {
    node: Node,
    label: Arc<str>,
    root: bool,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    slots: Vec<ChildSlot>,
    next_key: u64,
    /// When recent restarts happened, for the intensity window.
    restarts: VecDeque<Instant>,
    /// Consecutive restarts in the current run, for the backoff.
    attempt: u32,
    last_restart: Option<Instant>,
    /// Bumped at every scheduled restart so an outdated `RestartDue` is ignored.
    generation: u64,
}

/// Starts a node's root supervisor (no parent: its failure stops the node).
pub(crate) async fn start_root(
    node: &Node,
    spec: SupervisorSpec,
) -> Result<(SupervisorRef, ractor::concurrency::JoinHandle<()>), Error> {
    let label: Arc<str> = spec.name.clone().unwrap_or_else(|| "root".into());
    let args = SupArgs {
        spec,
        node: node.clone(),
        label: label.clone(),
        root: true,
    };
    let (actor, join) = ractor::Actor::spawn(None, SupervisorServer, args)
        .await
        .map_err(|e| super::spec::start_error(&label, e))?;
    Ok((
        SupervisorRef {
            actor,
            node: node.clone(),
            label,
        },
        join,
    ))
}

impl StartChild for SupervisorSpec {
    fn start<'a>(
        &'a self,
        parent: Option<&'a ActorCell>,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Started, Error>> {
        Box::pin(async move {
            let label: Arc<str> = self
                .name
                .clone()
                .unwrap_or_else(|| "anonymous supervisor".into());
            let args = SupArgs {
                spec: self.clone(),
                node: node.clone(),
                label: label.clone(),
                root: false,
            };
            let spawned = match parent {
                Some(parent) => {
                    ractor::Actor::spawn_linked(None, SupervisorServer, args, parent.clone()).await
                }
                None => ractor::Actor::spawn(None, SupervisorServer, args).await,
            };
            let (actor, _join) = spawned.map_err(|e| super::spec::start_error(&label, e))?;
            Ok(Started {
                cell: actor.get_cell(),
                bound: Arc::default(),
                supervisor: Some(SupervisorRef {
                    actor,
                    node: node.clone(),
                    label,
                }),
            })
        })
    }
}

impl ractor::Actor for SupervisorServer {
    type Msg = SupMsg;
    type State = SupState;
    type Arguments = SupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupMsg>,
        args: SupArgs,
    ) -> Result<SupState, ActorProcessingErr> {
        let SupArgs {
            spec,
            node,
            label,
            root,
        } = args;
        let mut state = SupState {
            node,
            label,
            root,
            strategy: spec.strategy,
            intensity: spec.intensity,
            backoff: spec.backoff,
            slots: Vec::with_capacity(spec.children.len()),
            next_key: 0,
            restarts: VecDeque::new(),
            attempt: 0,
            last_restart: None,
            generation: 0,
        };
        for child in spec.children {
            let index = state.push_slot(child, false);
            if let Err(err) = state.start_slot(&myself, index).await {
                tracing::warn!(supervisor = %state.label, error = %err, "child failed to start; stopping the started ones");
                state.stop_range(0..state.slots.len()).await;
                return Err(Box::new(err));
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupMsg>,
        msg: SupMsg,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::Start(child, reply) => {
                let index = state.push_slot(child, true);
                let result = state.start_slot(&myself, index).await;
                let result = match result {
                    Ok(()) => state.slots[index]
                        .running
                        .as_ref()
                        .map(|r| Started {
                            cell: r.cell.clone(),
                            bound: r.bound.clone(),
                            supervisor: r.supervisor.clone(),
                        })
                        .ok_or_else(|| Error::ActorStopped(state.label.to_string())),
                    Err(err) => {
                        state.slots.remove(index);
                        Err(err)
                    }
                };
                let _ = reply.send(result);
            }
            SupMsg::Stop(id, reply) => {
                let result = match state.position(id) {
                    Some(index) => {
                        state.remove_slot(index).await;
                        Ok(())
                    }
                    None => Err(Error::NotFound(id.to_string())),
                };
                let _ = reply.send(result);
            }
            SupMsg::StopNamed(name, reply) => {
                let result = match state.named(&name) {
                    Some(index) => {
                        state.remove_slot(index).await;
                        Ok(())
                    }
                    None => Err(Error::NotFound(name)),
                };
                let _ = reply.send(result);
            }
            SupMsg::Restart(name, reply) => match state.named(&name) {
                Some(index) => state.restart_by_hand(&myself, index, reply).await?,
                None => {
                    let _ = reply.send(Err(Error::NotFound(name)));
                }
            },
            SupMsg::Children(reply) => {
                let infos = state
                    .slots
                    .iter()
                    .map(|slot| ChildInfo {
                        name: slot.child.name.as_deref().map(str::to_owned),
                        id: slot.running.as_ref().map(|r| r.id),
                        restart: slot.child.restart,
                        dynamic: slot.dynamic,
                        supervisor: slot.running.as_ref().and_then(|r| r.supervisor.clone()),
                    })
                    .collect();
                let _ = reply.send(infos);
            }
            SupMsg::RestartDue(generation) => {
                if generation == state.generation {
                    state.restart_pending(&myself).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupMsg>,
        event: RactorEvent,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((id, reason)) = ExitReason::from_ractor(&event) else {
            return Ok(());
        };
        // Children the supervisor stopped itself are no longer in a slot: ignore their exit.
        let Some(index) = state.position(id) else {
            return Ok(());
        };
        state
            .child_exited(&myself, index, reason, gave_up(&event))
            .await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupMsg>,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_range(0..state.slots.len()).await;
        Ok(())
    }
}

/// Whether a child's exit is a supervisor giving up (its intensity exceeded). OTP's supervisor
/// exits with reason `shutdown` then, so its parent restarts it only if it is permanent.
fn gave_up(event: &RactorEvent) -> bool {
    matches!(
        event,
        RactorEvent::ActorFailed(_, err)
            if matches!(err.downcast_ref::<Error>(), Some(Error::SupervisorFailed { .. }))
    )
}

impl SupState {
    fn push_slot(&mut self, child: Child, dynamic: bool) -> usize {
        self.next_key += 1;
        self.slots.push(ChildSlot {
            key: self.next_key,
            child,
            running: None,
            pending: false,
            dynamic,
        });
        self.slots.len() - 1
    }

    fn position(&self, id: ActorId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.running.as_ref().is_some_and(|r| r.id == id))
    }

    /// The slot of the child called `name` (running or waiting to restart).
    fn named(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.child.name.as_deref() == Some(name))
    }

    /// Stops the child at `index` (if it runs) and removes it: it is not restarted.
    async fn remove_slot(&mut self, index: usize) {
        let mut slot = self.slots.remove(index);
        if let Some(running) = slot.running.take() {
            self.shut_down(&slot, running).await;
        }
    }

    /// A restart asked for from outside (OTP's `terminate_child` then `restart_child`): stops
    /// the running incarnation (reported as its exit), then starts the child again at once.
    /// Nothing else is touched: no strategy group, no restart counted against the intensity, no
    /// backoff step. A start that fails is answered to the caller and then handled as a failed
    /// restart (a temporary child is dropped).
    async fn restart_by_hand(
        &mut self,
        myself: &ActorRef<SupMsg>,
        index: usize,
        reply: oneshot::Sender<Result<ActorId, Error>>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(running) = self.slots[index].running.take() {
            let id = running.id;
            let reason = self.shut_down(&self.slots[index], running).await;
            self.emit(|| SupervisionEvent::ChildExited {
                supervisor: self.label.to_string(),
                child: self.slots[index].label(),
                id,
                reason,
            });
        }
        tracing::info!(supervisor = %self.label, child = %self.slots[index].label(), "restarting child by request");
        match self.start_slot(myself, index).await {
            Ok(()) => {
                let started = self.slots[index]
                    .running
                    .as_ref()
                    .map(|r| r.id)
                    .ok_or_else(|| Error::ActorStopped(self.slots[index].label()));
                let _ = reply.send(started);
                Ok(())
            }
            Err(err) => {
                let _ = reply.send(Err(err.clone()));
                if self.slots[index].child.restart == super::Restart::Temporary {
                    self.slots.remove(index);
                    return Ok(());
                }
                self.start_failed(myself, index, err).await
            }
        }
    }

    /// Broadcasts an event; built only when someone listens.
    fn emit(&self, event: impl FnOnce() -> SupervisionEvent) {
        self.node.emit(event);
    }

    async fn start_slot(&mut self, myself: &ActorRef<SupMsg>, index: usize) -> Result<(), Error> {
        let parent = myself.get_cell();
        let start = self.slots[index].child.start.clone();
        let started = start.start(Some(&parent), &self.node).await?;
        let id = started.id();
        let slot = &mut self.slots[index];
        slot.pending = false;
        slot.running = Some(Running {
            id,
            cell: started.cell,
            bound: started.bound,
            supervisor: started.supervisor,
        });
        let child = slot.label();
        tracing::debug!(supervisor = %self.label, %child, %id, "child started");
        self.emit(|| SupervisionEvent::ChildStarted {
            supervisor: self.label.to_string(),
            child,
            id,
        });
        Ok(())
    }

    /// A child's incarnation ended on its own (error, panic, kill or normal stop). `gave_up`: the
    /// child is a supervisor that exceeded its intensity; it is reported as the abnormal exit it
    /// is, but decided on as OTP's `shutdown`: only a permanent child is restarted.
    async fn child_exited(
        &mut self,
        myself: &ActorRef<SupMsg>,
        index: usize,
        reason: ExitReason,
        gave_up: bool,
    ) -> Result<(), ActorProcessingErr> {
        let Some(running) = self.slots[index].running.take() else {
            return Ok(());
        };
        let child = self.slots[index].label();
        self.node
            .forget(running.id, self.slots[index].child.name.as_deref(), &reason);
        if reason.is_abnormal() {
            tracing::warn!(supervisor = %self.label, %child, id = %running.id, %reason, "child exited");
        } else {
            tracing::debug!(supervisor = %self.label, %child, id = %running.id, "child stopped");
        }
        self.emit(|| SupervisionEvent::ChildExited {
            supervisor: self.label.to_string(),
            child,
            id: running.id,
            reason: reason.clone(),
        });

        let slot = &self.slots[index];
        if !slot.child.restart.applies(reason.is_abnormal() && !gave_up) {
            // Not restarted: a child with no way back leaves the supervisor's list.
            if slot.dynamic || slot.child.restart != super::Restart::Permanent {
                self.slots.remove(index);
            }
            return Ok(());
        }

        self.stop_group(index).await;
        self.schedule_restart(myself).await
    }

    /// The strategy's group of the child at `index`, which is not running: stops the others that
    /// run (reverse order) and marks the group for restart. One-for-one: the child alone;
    /// one-for-all: every child; rest-for-one: the child and those after it.
    async fn stop_group(&mut self, index: usize) {
        match self.strategy {
            Strategy::OneForOne => self.slots[index].pending = true,
            Strategy::OneForAll => {
                self.stop_range(0..self.slots.len()).await;
                self.mark_pending(0);
            }
            Strategy::RestForOne => {
                self.stop_range(index + 1..self.slots.len()).await;
                self.mark_pending(index);
            }
        }
    }

    /// Marks the slots from `from` on that are not running for restart; temporary ones that were
    /// stopped as siblings are removed, as OTP does.
    fn mark_pending(&mut self, from: usize) {
        let mut index = from;
        while index < self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.running.is_none() {
                if slot.child.restart == super::Restart::Temporary {
                    self.slots.remove(index);
                    continue;
                }
                slot.pending = true;
            }
            index += 1;
        }
    }

    /// Counts a restart against the intensity and schedules the pending children after the
    /// backoff delay; gives up when the intensity is exceeded.
    async fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(&first) = self.restarts.front() {
            if now.duration_since(first) > self.intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() > self.intensity.max_restarts as usize {
            let reason = format!(
                "more than {} restarts within {:?}",
                self.intensity.max_restarts, self.intensity.period
            );
            return Err(self.give_up(reason).await);
        }

        if let Some(last) = self.last_restart
            && now.duration_since(last) >= self.backoff.reset_after
        {
            self.attempt = 0;
        }
        let delay = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.last_restart = Some(now);
        self.generation += 1;

        for slot in self.slots.iter().filter(|s| s.pending) {
            let child = slot.label();
            tracing::info!(supervisor = %self.label, %child, ?delay, attempt = self.attempt, "restarting child");
            self.emit(|| SupervisionEvent::ChildRestarting {
                supervisor: self.label.to_string(),
                child,
                delay,
                attempt: self.attempt,
            });
        }
        let generation = self.generation;
        if delay.is_zero() {
            myself
                .cast(SupMsg::RestartDue(generation))
                .map_err(|_| Box::new(Error::ActorStopped(self.label.to_string())))?;
        } else {
            myself.send_after(delay, move || SupMsg::RestartDue(generation));
        }
        Ok(())
    }

    /// Starts the pending children in order. A child that fails to start counts as another
    /// failure of that child, as in OTP: its strategy's group is stopped and marked again (for
    /// one-for-all the children this pass already started stop, so the group starts together
    /// next time) and the restart is scheduled again.
    async fn restart_pending(
        &mut self,
        myself: &ActorRef<SupMsg>,
    ) -> Result<(), ActorProcessingErr> {
        for index in 0..self.slots.len() {
            if !self.slots[index].pending {
                continue;
            }
            if let Err(err) = self.start_slot(myself, index).await {
                return self.start_failed(myself, index, err).await;
            }
        }
        Ok(())
    }

    /// The child at `index` failed to start again: reported as an exit, then its strategy's
    /// group is stopped and the restart scheduled again (counted against the intensity).
    async fn start_failed(
        &mut self,
        myself: &ActorRef<SupMsg>,
        index: usize,
        err: Error,
    ) -> Result<(), ActorProcessingErr> {
        let child = self.slots[index].label();
        tracing::warn!(supervisor = %self.label, %child, error = %err, "restart failed");
        self.emit(|| SupervisionEvent::ChildExited {
            supervisor: self.label.to_string(),
            child,
            id: ActorId(0),
            reason: ExitReason::Error(err.to_string()),
        });
        self.stop_group(index).await;
        self.schedule_restart(myself).await
    }

    /// Stops every child and fails this supervisor, escalating to its parent (or, for the root,
    /// stopping the node).
    async fn give_up(&mut self, reason: String) -> ActorProcessingErr {
        tracing::error!(supervisor = %self.label, %reason, "supervisor gives up");
        self.emit(|| SupervisionEvent::SupervisorFailed {
            supervisor: self.label.to_string(),
            reason: reason.clone(),
        });
        self.stop_range(0..self.slots.len()).await;
        for slot in &mut self.slots {
            slot.pending = false;
        }
        let err = Error::SupervisorFailed {
            supervisor: self.label.to_string(),
            reason,
        };
        if self.root {
            self.node.root_failed(err.clone());
        }
        Box::new(err)
    }

    /// Stops the running children in `range`, last started first.
    async fn stop_range(&mut self, range: std::ops::Range<usize>) {
        for index in range.rev() {
            if let Some(running) = self.slots[index].running.take() {
                let id = running.id;
                let reason = self.shut_down(&self.slots[index], running).await;
                self.emit(|| SupervisionEvent::ChildExited {
                    supervisor: self.label.to_string(),
                    child: self.slots[index].label(),
                    id,
                    reason,
                });
            }
        }
    }

    /// Stops one child: gracefully within its shutdown timeout, then by kill; says which.
    async fn shut_down(&self, slot: &ChildSlot, running: Running) -> ExitReason {
        let Running { id, cell, .. } = running;
        let reason = match cell
            .stop_and_wait(Some("shutdown".to_owned()), Some(slot.child.shutdown))
            .await
        {
            Ok(()) => ExitReason::Normal,
            Err(ractor::RactorErr::Timeout) => {
                tracing::warn!(supervisor = %self.label, child = %slot.label(), timeout = ?slot.child.shutdown, "child did not stop in time; killing it");
                let _ = cell.kill_and_wait(Some(KILL_GRACE)).await;
                ExitReason::Killed
            }
            // Already gone.
            Err(_) => ExitReason::Normal,
        };
        self.node.forget(id, slot.child.name.as_deref(), &reason);
        reason
    }
}
