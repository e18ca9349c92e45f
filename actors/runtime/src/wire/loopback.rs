//! An in-process link between two nodes of one process: frames go through a channel to a task
//! that hands them to the receiving node, as a network link's read loop would.

use tokio::sync::mpsc;

use super::frame::{Frame, PeerLink};
use crate::{Error, Node};

struct ChannelLink {
    peer: String,
    tx: mpsc::UnboundedSender<Frame>,
}

impl PeerLink for ChannelLink {
    fn send(&self, frame: Frame) -> Result<(), Error> {
        self.tx
            .send(frame)
            .map_err(|_| Error::NoRoute(self.peer.clone()))
    }
}

/// Links `a` and `b` both ways.
pub(crate) fn connect(a: &Node, b: &Node) {
    a.add_peer(b.id(), Box::new(link_to(b, a.id())));
    b.add_peer(a.id(), Box::new(link_to(a, b.id())));
}

fn link_to(node: &Node, from: crate::NodeId) -> ChannelLink {
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let receiver = node.downgrade();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let Some(node) = receiver.upgrade() else {
                break;
            };
            node.deliver(from, frame);
        }
    });
    ChannelLink {
        peer: node.id().to_string(),
        tx,
    }
}
