//! Death watch: be told when an actor's incarnation ends, or its node is lost.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::FastMap;
use crate::wire::frame::{Control, Down, Frame};
use crate::{ActorId, ExitReason, Node, NodeId};

/// A pending death watch: resolves with why the actor is gone. Made by
/// [`Addr::watch`](crate::Addr::watch); dropping it cancels nothing on the watched actor.
#[derive(Debug)]
pub struct Watch {
    rx: oneshot::Receiver<Down>,
}

impl Watch {
    pub(crate) fn new(rx: oneshot::Receiver<Down>) -> Self {
        Watch { rx }
    }

    pub(crate) fn ready(down: Down) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(down);
        Watch { rx }
    }
}

impl Future for Watch {
    type Output = Down;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Down> {
        // A watch whose sender went away lost its node (the node or link shut down).
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|result| result.unwrap_or(Down::NodeLost))
    }
}

/// Who waits for an actor's end.
pub(crate) enum Watcher {
    Local(oneshot::Sender<Down>),
    Remote { peer: NodeId, watch: u64 },
}

/// The watches set on this node's actors.
#[derive(Default)]
pub(crate) struct Watches {
    by_actor: FastMap<ActorId, Vec<Watcher>>,
}

impl Watches {
    pub(crate) fn add(&self, id: ActorId, watcher: Watcher) {
        self.by_actor.entry(id).or_default().push(watcher);
    }

    /// Tells everyone watching `id` that it ended.
    pub(crate) fn fire(&self, node: &Node, id: ActorId, reason: &ExitReason) {
        let Some((_, watchers)) = self.by_actor.remove(&id) else {
            return;
        };
        for watcher in watchers {
            notify(node, watcher, Down::Exited(reason.clone()));
        }
    }

    /// Fires every watch on `id` with `down` if the actor is already gone (closes the race between
    /// checking liveness and registering).
    pub(crate) fn fire_if(&self, node: &Node, id: ActorId, down: Down) {
        if let Some((_, watchers)) = self.by_actor.remove(&id) {
            for watcher in watchers {
                notify(node, watcher, down.clone());
            }
        }
    }

    /// Forgets the watches a lost peer had set.
    pub(crate) fn drop_peer(&self, peer: NodeId) {
        self.by_actor.retain(|_, watchers| {
            watchers.retain(|w| !matches!(w, Watcher::Remote { peer: p, .. } if *p == peer));
            !watchers.is_empty()
        });
    }

    /// Removes one watch a peer set.
    pub(crate) fn unwatch(&self, peer: NodeId, watch: u64) {
        self.by_actor.retain(|_, watchers| {
            watchers.retain(
                |w| !matches!(w, Watcher::Remote { peer: p, watch: id } if *p == peer && *id == watch),
            );
            !watchers.is_empty()
        });
    }

    pub(crate) fn clear(&self) {
        self.by_actor.clear();
    }
}

pub(crate) fn notify(node: &Node, watcher: Watcher, down: Down) {
    match watcher {
        Watcher::Local(tx) => {
            let _ = tx.send(down);
        }
        Watcher::Remote { peer, watch } => {
            let _ = node.send_frame(peer, Frame::Control(Control::Down { watch, down }));
        }
    }
}
