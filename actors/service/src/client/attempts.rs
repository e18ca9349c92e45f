//! The bookkeeping of one call's attempts, apart from the awaiting: which node to try next,
//! what an outcome means for the node's health, and whether the retry policy, the budget and the
//! deadline allow another try. Synchronous, so that a call's loop stays a small future.

use std::time::Duration;

use tokio::time::Instant;

use super::select::{EndpointView, NodeView, ServiceView, lost_names, millis_since};
use super::{CallOptions, Failure, Inner, Selector};
use crate::ServiceError;
use crate::error::CLIENT_ID;

/// One call's attempts so far.
pub(super) struct Attempts<'a> {
    client: &'a Inner,
    view: &'a ServiceView,
    endpoint: &'a EndpointView,
    options: &'a CallOptions,
    strategy: Selector,
    deadline: Instant,
    idempotent: bool,
    tried: Vec<usize>,
    /// Slots whose link this call saw lost (the client's follower of peer events may not have
    /// marked them yet).
    lost: Vec<usize>,
    retry: u32,
}

/// What to do after an attempt.
pub(super) enum Settled<T> {
    /// The call is over, with this outcome.
    Done(Result<T, ServiceError>),
    /// Try again on another node after this pause (within the deadline).
    Retry(Duration),
}

impl<'a> Attempts<'a> {
    /// A call about to start: it deposits into the retry budget.
    pub(super) fn new(
        client: &'a Inner,
        view: &'a ServiceView,
        endpoint: &'a EndpointView,
        options: &'a CallOptions,
        deadline: Instant,
        idempotent: bool,
    ) -> Self {
        client.budget.deposit();
        Attempts {
            client,
            view,
            endpoint,
            options,
            strategy: options.strategy.unwrap_or(client.strategy),
            deadline,
            idempotent,
            tried: Vec::new(),
            lost: Vec::new(),
            retry: 0,
        }
    }

    /// Picks the node slot for the next attempt (and counts it outstanding there, when calls
    /// are placed by their outstanding counts).
    pub(super) fn pick(&self) -> Result<usize, ServiceError> {
        let now_ms = || millis_since(self.client.epoch);
        let slot = self
            .view
            .pick(
                self.endpoint,
                self.strategy,
                &self.options.filter,
                &self.tried,
                &now_ms,
            )
            .ok_or_else(|| {
                ServiceError::unavailable(
                    CLIENT_ID,
                    format!("no node of {} matches the call's filter", self.view.name),
                )
            })?;
        if self.counts_outstanding() {
            self.node(slot).health.begin();
        }
        Ok(slot)
    }

    /// Counts the outcome of the attempt on `slot` into its node's health (ejecting it after
    /// enough failures) and decides what comes next.
    pub(super) fn settle<T>(&mut self, slot: usize, outcome: Result<T, Failure>) -> Settled<T> {
        let client = self.client;
        let node = self.node(slot);
        if self.counts_outstanding() {
            node.health.end();
        }
        let now_ms = || millis_since(client.epoch);
        let error = match outcome {
            Ok(done) => {
                node.health.succeeded();
                return Settled::Done(Ok(done));
            }
            Err(Failure::Final(error)) => return Settled::Done(Err(error)),
            Err(Failure::NotSent(error)) => error,
            Err(Failure::Unknown(error) | Failure::Lost(error)) if !self.idempotent => {
                node.health.failed(&client.ejection, now_ms());
                return Settled::Done(Err(error));
            }
            Err(Failure::Unknown(error)) => error,
            Err(Failure::Lost(error)) => {
                self.lost.push(slot);
                error
            }
        };
        // Every node that could serve the call is known lost: no retry or pause can reach one
        // before the deadline, so say so now. (Only a failed attempt looks.)
        if let Some(nodes) = self.all_lost() {
            return Settled::Done(Err(ServiceError::unavailable(
                CLIENT_ID,
                format!(
                    "{} {}: lost the link to {nodes}",
                    self.view.name, self.endpoint.name
                ),
            )));
        }
        if node.health.failed(&client.ejection, now_ms()) {
            tracing::info!(service = %self.view.name, node = %node.id, "ejecting a failing node for a while");
        }
        self.retry += 1;
        let retries = self.options.retries.unwrap_or(client.retry.max_retries);
        if self.retry > retries || Instant::now() >= self.deadline || !client.budget.withdraw() {
            return Settled::Done(Err(error));
        }
        tracing::debug!(service = %self.view.name, endpoint = %self.endpoint.name, retry = self.retry, error = %error, "retrying on another node");
        self.tried.push(slot);
        Settled::Retry(client.retry.delay(self.retry))
    }

    /// Waits out a retry's pause, never past the deadline; a 408 when no time is left after it
    /// (`settle` has just checked the deadline, so a retry without a pause reads no clock here).
    pub(super) async fn pause(&self, pause: Duration) -> Result<(), ServiceError> {
        if pause.is_zero() {
            return Ok(());
        }
        tokio::time::sleep_until((Instant::now() + pause).min(self.deadline)).await;
        if Instant::now() >= self.deadline {
            return Err(super::timeout_error(&self.view.name, &self.endpoint.name));
        }
        Ok(())
    }

    /// When the link to every node the call's filter accepts is known lost (by the client, or
    /// by this call's own attempts): their names.
    fn all_lost(&self) -> Option<String> {
        let filter = &self.options.filter;
        let candidates = || {
            (0..self.endpoint.nodes.len())
                .filter(|&slot| filter.is_any() || filter.accepts(self.node(slot)))
        };
        let lost = |slot: usize| self.lost.contains(&slot) || self.node(slot).health.is_lost();
        let mut any = false;
        for slot in candidates() {
            if !lost(slot) {
                return None;
            }
            any = true;
        }
        any.then(|| lost_names(candidates().map(|slot| self.node(slot).id)))
    }

    /// Only the least-outstanding selector reads the counts: other calls leave them be, as
    /// two shared writes per call are a cost every core pays.
    fn counts_outstanding(&self) -> bool {
        self.strategy == Selector::LeastOutstanding
    }

    fn node(&self, slot: usize) -> &'a NodeView {
        &self.view.nodes[self.endpoint.nodes[slot]]
    }
}
