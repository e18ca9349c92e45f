//! The broker actor: exchanges interest with peer brokers, fans out what they send, settles
//! acknowledgements and drives redelivery. One per node, named [`BROKER_NAME`] and exposed.

use std::sync::Arc;
use std::time::Duration;

use micro_runtime::{Actor, ActorError, Addr, Context, Node, NodeId, PeerEvent, SupervisionEvent};

use crate::core::Core;
use crate::protocol::{
    BROKER_NAME, BrokerCommand, BrokerMsg, Command, InterestChange, SUB_PREFIX, command,
};
use crate::queue::lock;

pub(crate) struct BrokerActor {
    core: Arc<Core>,
}

impl BrokerActor {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        BrokerActor { core }
    }

    fn myself(node: &Node) -> Result<Addr<BrokerMsg>, micro_runtime::Error> {
        node.lookup::<BrokerMsg>(BROKER_NAME)
    }

    fn hello(&self, node: &Node, answer: bool) -> Result<BrokerMsg, micro_runtime::Error> {
        Ok(BrokerMsg::Hello {
            node: self.core.me,
            broker: Self::myself(node)?,
            interest: self.core.local_interest(),
            answer,
        })
    }

    fn broadcast(&self, change: InterestChange) {
        for (peer, out) in self.core.peer_list() {
            let msg = BrokerMsg::Interest {
                node: self.core.me,
                change: change.clone(),
            };
            if let Err(err) = out.addr.send(msg) {
                tracing::debug!(%peer, %err, "interest change not sent");
            }
        }
    }

    /// Finds the peer's broker (it may start a little after the link comes up), then says hello.
    fn peer_up(&self, node: &Node, peer: NodeId) {
        let Ok(me) = Self::myself(node) else { return };
        let node = node.clone();
        let core = self.core.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(20);
            for _ in 0..8 {
                // Stop once its hello came first, or once the link is gone: looking it up again
                // would dial a node that left.
                let linked = node.peers().iter().any(|p| p.node == peer && p.connected);
                if core.has_peer(peer) || !linked {
                    return;
                }
                match node.lookup_remote::<BrokerMsg>(peer, BROKER_NAME).await {
                    Ok(addr) => {
                        let _ = me.send(command(Command::PeerFound(peer, addr)));
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(%peer, %err, "peer broker not found yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
            // Its broker will say hello itself when it starts.
        });
    }

    fn remove_local(&self, sub: u64) {
        self.core.remove_interest(self.core.me, sub);
        self.broadcast(InterestChange::Removed(sub));
    }
}

impl Actor for BrokerActor {
    type Msg = BrokerMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let node = ctx.node().clone();
        node.expose::<BrokerMsg>(BROKER_NAME)?;
        let me = Self::myself(&node)?;

        // Ticks, membership and failed subscriptions: messages to itself, ended with this
        // incarnation (even after a panic).
        ctx.tick(self.core.config.tick, || command(Command::Tick));

        // Membership: peers up and down. A node that does not listen has no peers.
        if let Ok(events) = node.peer_events() {
            let to = me.clone();
            let weak = node.clone();
            ctx.forward_broadcast(events, move |event| match event {
                Ok(PeerEvent::Up { node, .. }) => Some(command(Command::PeerUp(node))),
                Ok(PeerEvent::Down { node, .. }) => Some(command(Command::PeerDown(node))),
                Ok(_) => None,
                Err(_lagged) => {
                    // Missed some: say hello to everyone linked now.
                    for info in weak.peers().into_iter().filter(|p| p.connected) {
                        let _ = to.send(command(Command::PeerUp(info.node)));
                    }
                    None
                }
            });
        }

        // Subscriptions whose supervisor gave up are withdrawn.
        ctx.forward_broadcast(node.supervision_events(), |event| match event {
            Ok(SupervisionEvent::SupervisorFailed { supervisor, .. }) => supervisor
                .strip_prefix(SUB_PREFIX)
                .and_then(|id| id.parse::<u64>().ok())
                .map(|sub| command(Command::SubFailed(sub))),
            _ => None,
        });

        for info in node.peers().into_iter().filter(|p| p.connected) {
            self.peer_up(&node, info.node);
        }
        tracing::debug!(node = %node.name(), "broker started");
        Ok(())
    }

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: BrokerMsg) -> Result<(), ActorError> {
        match msg {
            BrokerMsg::Deliver { from, batch } => {
                self.core.count_frame_received();
                let n = batch.len() as u64;
                for delivery in batch {
                    self.core.accept_remote(from, delivery);
                }
                let credit = lock(&self.core.received).received(from, n);
                if let Some(received) = credit
                    && let Some(peer) = self.core.peer(from)
                {
                    let _ = peer.addr.send(BrokerMsg::Credit {
                        node: self.core.me,
                        received,
                    });
                }
            }
            BrokerMsg::Confirmed { token, result } => self.core.confirmed(token, result),
            BrokerMsg::Credit { node, received } => {
                if let Some(peer) = self.core.peer(node) {
                    peer.confirm(received);
                }
            }
            BrokerMsg::Ack {
                id,
                sub,
                group,
                outcome,
            } => self.core.settled(id, sub, group, outcome),
            BrokerMsg::Hello {
                node,
                broker,
                interest,
                answer,
            } => {
                tracing::debug!(peer = %node, subscriptions = interest.len(), "hello");
                self.core.replace_interest(node, interest);
                if !self.core.has_peer(node) {
                    self.core.set_peer(node, broker.clone());
                }
                if answer && let Err(err) = broker.send(self.hello(ctx.node(), false)?) {
                    // The link just went: its Down (or the next Up) settles things.
                    tracing::debug!(peer = %node, %err, "hello not answered");
                }
            }
            BrokerMsg::Interest { node, change } => match change {
                InterestChange::Added(interest) => self.core.add_interest(node, interest),
                InterestChange::Removed(sub) => self.core.remove_interest(node, sub),
            },
            BrokerMsg::Local(BrokerCommand(command)) => match command {
                Command::Tick => self.core.tick(),
                Command::Subscribe {
                    queue,
                    interest,
                    reply,
                } => {
                    self.core.add_local(queue);
                    self.core.add_interest(self.core.me, interest.clone());
                    self.broadcast(InterestChange::Added(interest));
                    let _ = reply.send(());
                }
                Command::Unsubscribe { sub, reply } => {
                    self.remove_local(sub);
                    let _ = reply.send(());
                }
                Command::SubFailed(sub) => {
                    tracing::warn!(
                        sub,
                        "subscription gave up after repeated crashes; withdrawn"
                    );
                    self.remove_local(sub);
                }
                Command::PeerUp(peer) => self.peer_up(ctx.node(), peer),
                Command::PeerFound(peer, addr) => {
                    self.core.set_peer(peer, addr.clone());
                    if let Err(err) = addr.send(self.hello(ctx.node(), true)?) {
                        tracing::debug!(%peer, %err, "hello not sent");
                    }
                }
                Command::PeerDown(peer) => {
                    tracing::debug!(%peer, "peer down: its interest is dropped");
                    self.core.drop_peer(peer);
                    lock(&self.core.received).forget(peer);
                }
                Command::Shared(reply) => {
                    let _ = reply.send(self.core.clone());
                }
            },
        }
        Ok(())
    }
}
