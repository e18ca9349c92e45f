//! What a node lets other nodes reach: actors whose [`Addr`](crate::Addr) was sent out, and the
//! replies it waits for.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::ContentType;
use super::frame::Envelope;
use crate::FastMap;
use crate::{Addr, Error, Node, NodeId};

/// A message that can cross nodes: serde both ways, and a declared type name that is checked on
/// arrival so a message of the wrong type is refused rather than misdecoded. The name must stay
/// the same across builds and versions (do not derive it from `type_name` or `TypeId`).
///
/// ```
/// use micro_runtime::{RemoteMessage, Reply};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum KvMsg { Put(String, String), Get(String, Reply<Option<String>>) }
///
/// impl RemoteMessage for KvMsg {
///     const TYPE_NAME: &'static str = "example.Kv";
/// }
/// ```
pub trait RemoteMessage: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name checked on arrival.
    const TYPE_NAME: &'static str;
}

/// An exported actor: decodes frames for it and delivers them.
pub(crate) trait Inbound: Send + Sync {
    fn deliver(
        &self,
        node: &Node,
        from: NodeId,
        type_name: &str,
        content_type: ContentType,
        envelope: Envelope,
        body: &[u8],
    ) -> Result<(), Error>;

    /// The exported [`Addr`] itself, for a decoder on this node that wants it back.
    fn as_any(&self) -> &dyn Any;

    /// The message type the actor takes.
    fn type_name(&self) -> &'static str;

    /// The incarnation currently behind the export, if it runs.
    fn current(&self, node: &Node) -> Option<ractor::ActorCell>;
}

pub(crate) struct Export<M: RemoteMessage> {
    pub(crate) addr: Addr<M>,
}

impl<M: RemoteMessage> Inbound for Export<M> {
    fn deliver(
        &self,
        node: &Node,
        from: NodeId,
        type_name: &str,
        content_type: ContentType,
        envelope: Envelope,
        body: &[u8],
    ) -> Result<(), Error> {
        if type_name != M::TYPE_NAME {
            return Err(Error::WrongMessageType {
                actor: self.addr.to_string(),
                expected: type_name.to_owned(),
            });
        }
        let msg: M = super::context::delivering(|| {
            super::context::with_inbound(envelope, || node.decode_from(from, content_type, body))
        })?;
        // Handled here when the actor is idle and its mailbox empty (outside `delivering`: the
        // handler's reply ports are live ones), else queued.
        let Err(msg) = self.addr.try_inline(msg) else {
            node.count_inline();
            return Ok(());
        };
        super::context::delivering(|| {
            // A full mailbox is overload as far as the sender can tell.
            self.addr.send(msg).map_err(|err| match err {
                Error::MailboxFull { actor, .. } => Error::Unavailable(actor),
                other => other,
            })
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        M::TYPE_NAME
    }

    fn current(&self, node: &Node) -> Option<ractor::ActorCell> {
        self.addr.current_cell(node)
    }
}

/// Completes a wait with what arrived, and from which node (none when the wait ends without an
/// answer).
type Complete =
    Box<dyn FnOnce(&Node, Option<NodeId>, Result<(ContentType, &[u8]), Error>) + Send + Sync>;

struct Waiter {
    deadline: Instant,
    /// The node the request went to, so the wait ends when that link is lost.
    peer: Option<NodeId>,
    complete: Complete,
}

/// Replies this node waits for from other nodes, by request id.
pub(crate) struct PendingReplies {
    next: AtomicU64,
    /// Sharded: askers insert and link readers remove at the same time.
    waiting: FastMap<u64, Waiter>,
    /// When the last sweep ran, in milliseconds after `created` (read on every registration, so
    /// an atomic rather than a lock).
    last_sweep_ms: AtomicU64,
    created: Instant,
}

/// How long a reply with no deadline is waited for before its entry is dropped.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl PendingReplies {
    pub(crate) fn new() -> Self {
        PendingReplies {
            next: AtomicU64::new(1),
            waiting: FastMap::default(),
            last_sweep_ms: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// Registers a waiter and returns its request id. Expired waiters are swept now and then and
    /// completed with a timeout.
    pub(crate) fn register(
        &self,
        node: &Node,
        deadline: Option<Instant>,
        peer: Option<NodeId>,
        complete: Complete,
    ) -> u64 {
        let now = Instant::now();
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let deadline = deadline.unwrap_or(now + DEFAULT_WAIT);
        let expired = self.sweep(now);
        self.waiting.insert(
            request,
            Waiter {
                deadline,
                peer,
                complete,
            },
        );
        for (waited, waiter) in expired {
            (waiter.complete)(node, None, Err(Error::Timeout(waited)));
        }
        request
    }

    pub(crate) fn take(&self, request: u64) -> Option<Complete> {
        self.waiting.remove(&request).map(|(_, w)| w.complete)
    }

    /// Ends every wait for an answer from `peer` with `err` (its link was lost).
    pub(crate) fn fail_peer(&self, node: &Node, peer: NodeId, err: &Error) {
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|w| w.peer == Some(peer))
            .map(|w| *w.key())
            .collect();
        let lost: Vec<Waiter> = ids
            .into_iter()
            .filter_map(|id| self.waiting.remove(&id).map(|(_, w)| w))
            .collect();
        for waiter in lost {
            (waiter.complete)(node, None, Err(err.clone()));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    fn sweep(&self, now: Instant) -> Vec<(Duration, Waiter)> {
        // Whoever moves the mark sweeps; the others go on.
        let now_ms =
            u64::try_from(now.duration_since(self.created).as_millis()).unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Vec::new();
        }
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|w| w.deadline <= now)
            .map(|w| *w.key())
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.waiting.remove(&id).map(|(_, w)| w))
            .map(|w| (DEFAULT_WAIT.min(now.duration_since(w.deadline)), w))
            .collect()
    }
}
