//! [`Addr`]: a typed, location-transparent handle to an actor.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, MessagingErr};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::mailbox::MailboxBound;
use crate::reply::Reply;
use crate::watch::Watch;
use crate::wire::context;
use crate::wire::exports::{Export, Inbound};
use crate::wire::frame::{Envelope, Frame, Target};
use crate::{ActorId, ContentType, Down, Error, Node, NodeId, RemoteMessage};

/// A typed handle to an actor, on this node or another.
///
/// - An **id-based** address (from [`Node::spawn`], [`Context::addr`](crate::Context::addr))
///   points at one incarnation. After that incarnation ends, sends fail with
///   [`Error::ActorStopped`], even if a supervisor restarted the actor: its restarted self is a
///   different incarnation.
/// - A **named** address (from [`Node::lookup`]) resolves the name in its node's directory at every
///   send, so it follows the actor across restarts.
///
/// While an actor restarts (between the old incarnation's exit and the new one's start, which
/// includes the backoff delay), a named address fails fast with [`Error::ActorStopped`]: nothing is
/// buffered. Messages still in the old incarnation's mailbox when it died are lost, as in Erlang;
/// an `ask` among them fails with [`Error::ReplyDropped`]. Retry, or ask, when delivery matters.
///
/// Addresses serialize (for [`RemoteMessage`]s): sent inside a message to another node, an `Addr`
/// arrives as a working handle there, and one that comes home decodes to a local handle. Passed on
/// again to a third node it works there too: that node asks the node that passed it on where the
/// actor's node listens, and links to it directly.
pub struct Addr<M: Send + 'static> {
    inner: Inner<M>,
}

enum Inner<M: Send + 'static> {
    Local(Local<M>),
    Named(Named<M>),
    Remote(Arc<Remote<M>>),
    /// An id-based address that came home after its actor ended (or from an earlier incarnation
    /// of this node): every send reports the actor stopped, as Erlang's dead pids do.
    Gone(Gone),
}

#[derive(Clone)]
struct Gone {
    node: Node,
    id: ActorId,
    incarnation: u64,
}

struct Local<M: Send + 'static> {
    actor: ActorRef<M>,
    node: Node,
    bound: Arc<MailboxBound>,
}

struct Named<M> {
    node: Node,
    name: Arc<str>,
    _msg: PhantomData<fn(M)>,
}

struct Remote<M> {
    /// The local node whose links carry the frames.
    via: Node,
    peer: NodeId,
    target: Target,
    type_name: &'static str,
    content_type: ContentType,
    encode: EncodeFor<M>,
}

/// Encodes a message for a peer; returns the bytes and the frame's envelope (the request id of
/// a reply port inside, the message's call data).
type EncodeFor<M> = fn(&Node, NodeId, ContentType, &M) -> Result<(Vec<u8>, Envelope), Error>;

impl<M: Send + 'static> Addr<M> {
    pub(crate) fn local(actor: ActorRef<M>, node: Node, bound: Arc<MailboxBound>) -> Self {
        Addr {
            inner: Inner::Local(Local { actor, node, bound }),
        }
    }

    pub(crate) fn remote_named(via: Node, peer: NodeId, name: Arc<str>) -> Self
    where
        M: RemoteMessage,
    {
        Addr {
            inner: Inner::Remote(Arc::new(Remote {
                via,
                peer,
                target: Target::Name(name),
                type_name: M::TYPE_NAME,
                content_type: ContentType::default(),
                encode: encode_for_wire::<M>,
            })),
        }
    }

    /// The same address, encoding its messages with `content_type` when they cross nodes (local
    /// addresses do not encode, so this changes nothing for them).
    #[must_use]
    pub fn with_content_type(&self, content_type: ContentType) -> Self {
        match &self.inner {
            Inner::Remote(remote) => Addr {
                inner: Inner::Remote(Arc::new(Remote {
                    via: remote.via.clone(),
                    peer: remote.peer,
                    target: remote.target.clone(),
                    type_name: remote.type_name,
                    content_type,
                    encode: remote.encode,
                })),
            },
            _ => self.clone(),
        }
    }

    pub(crate) fn named(node: Node, name: Arc<str>) -> Self {
        Addr {
            inner: Inner::Named(Named {
                node,
                name,
                _msg: PhantomData,
            }),
        }
    }

    /// Sends a message without waiting (fire-and-forget). Messages from one sender to one actor
    /// arrive in the order they were sent.
    #[doc(alias = "cast")]
    #[inline(always)]
    pub fn send(&self, msg: M) -> Result<(), Error> {
        // The local case inlines into the caller; the others are out of line.
        match &self.inner {
            Inner::Local(local) => cast(&local.actor, &local.bound, msg),
            _ => self.send_indirect(msg),
        }
    }

    /// Sends through the directory (named) or a link (remote).
    #[inline(never)]
    fn send_indirect(&self, msg: M) -> Result<(), Error> {
        match &self.inner {
            Inner::Local(local) => cast(&local.actor, &local.bound, msg),
            Inner::Gone(gone) => Err(Error::ActorStopped(gone.id.to_string())),
            Inner::Named(named) => {
                let entry = named
                    .node
                    .directory()
                    .get(&named.name)
                    .ok_or_else(|| Error::ActorStopped(named.name.to_string()))?;
                let actor: ActorRef<M> = entry.cell.into();
                cast(&actor, &entry.bound, msg)
            }
            Inner::Remote(remote) => {
                let (body, envelope) =
                    (remote.encode)(&remote.via, remote.peer, remote.content_type, &msg)?;
                remote.via.send_frame(
                    remote.peer,
                    Frame::Deliver {
                        to: remote.target.clone(),
                        type_name: Cow::Borrowed(remote.type_name),
                        content_type: remote.content_type,
                        envelope,
                        body,
                    },
                )
            }
        }
    }

    /// Sends a request built around a fresh [`Reply`] port and waits up to `timeout` for the
    /// answer.
    ///
    /// Errors: [`Error::Timeout`] when no answer comes in time, [`Error::ReplyDropped`] when the
    /// actor drops the port unanswered (or dies holding it), and the errors of [`Addr::send`].
    pub async fn ask<T: Send + 'static>(
        &self,
        request: impl FnOnce(Reply<T>) -> M,
        timeout: Duration,
    ) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.ask_until(request, deadline)
            .await
            .map_err(|e| match e {
                Error::DeadlinePassed => Error::Timeout(timeout),
                other => other,
            })
    }

    /// [`Addr::ask`] with a deadline instead of a timeout: for a caller that keeps one deadline
    /// over several steps (retries, say), and so reads the clock once for all of them. A
    /// deadline already past still sends the request (whose reply port says no time is left).
    ///
    /// Errors: [`Error::DeadlinePassed`] when no answer comes in time, else as [`Addr::ask`].
    ///
    /// ```
    /// # use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node, Reply};
    /// # use std::time::Duration;
    /// # struct Doubler;
    /// # impl Actor for Doubler {
    /// #     type Msg = (u32, Reply<u32>);
    /// #     async fn handle(&mut self, _: &mut Context<Self>, (n, reply): (u32, Reply<u32>)) -> Result<(), ActorError> {
    /// #         let _ = reply.send(n * 2);
    /// #         Ok(())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), micro_runtime::Error> {
    /// let node = Node::builder().start().await?;
    /// let doubler = node.spawn(ChildSpec::new(|| Doubler)).await?;
    /// let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    /// assert_eq!(doubler.ask_until(|r| (21, r), deadline).await?, 42);
    /// # node.shutdown().await
    /// # }
    /// ```
    pub async fn ask_until<T: Send + 'static>(
        &self,
        request: impl FnOnce(Reply<T>) -> M,
        deadline: tokio::time::Instant,
    ) -> Result<T, Error> {
        let (reply, answer) = Reply::channel(Some(deadline));
        self.send(request(reply))?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err(Error::ReplyDropped),
            Err(_elapsed) => Err(Error::DeadlinePassed),
        }
    }

    /// The incarnation this address points at, when it is id-based.
    pub fn id(&self) -> Option<ActorId> {
        match &self.inner {
            Inner::Local(local) => Some(ActorId::of(&local.actor.get_cell())),
            Inner::Named(_) => None,
            Inner::Remote(remote) => match &remote.target {
                Target::Id(id, _) => Some(*id),
                Target::Name(_) => None,
            },
            Inner::Gone(gone) => Some(gone.id),
        }
    }

    /// The name this address follows, when it is named.
    pub fn name(&self) -> Option<&str> {
        match &self.inner {
            Inner::Named(named) => Some(&named.name),
            Inner::Remote(remote) => match &remote.target {
                Target::Name(name) => Some(name),
                Target::Id(..) => None,
            },
            Inner::Local(_) | Inner::Gone(_) => None,
        }
    }

    /// The node the actor lives on.
    pub fn node_id(&self) -> NodeId {
        match &self.inner {
            Inner::Local(local) => local.node.id(),
            Inner::Named(named) => named.node.id(),
            Inner::Remote(remote) => remote.peer,
            Inner::Gone(gone) => gone.node.id(),
        }
    }

    /// Starts watching the actor: the returned [`Watch`] resolves with why it is gone — its exit
    /// reason, [`Down::NotRunning`] when it was not running, or [`Down::NodeLost`] when its node
    /// is lost. A named address watches the incarnation running now.
    pub fn watch(&self) -> Watch {
        match &self.inner {
            Inner::Local(local) => local.node.watch_local(local.actor.get_cell()),
            Inner::Named(named) => match named.node.directory().get(&named.name) {
                Some(entry) => named.node.watch_local(entry.cell),
                None => Watch::ready(Down::NotRunning),
            },
            Inner::Remote(remote) => remote.via.watch_remote(remote.peer, remote.target.clone()),
            Inner::Gone(_) => Watch::ready(Down::NotRunning),
        }
    }

    /// Bounds the mailbox of the actor behind a local or named address, if it has no bound yet:
    /// what an actor accepts from the network is always bounded.
    pub(crate) fn bound_for_network(&self, capacity: usize) {
        match &self.inner {
            Inner::Local(local) => local.bound.bound_if_unbounded(capacity),
            Inner::Named(named) => {
                if let Some(entry) = named.node.directory().get(&named.name) {
                    entry.bound.bound_if_unbounded(capacity);
                }
            }
            Inner::Remote(_) | Inner::Gone(_) => {}
        }
    }

    /// Hands `msg` to the actor's inline handler (a remote message, in the link's reading task)
    /// when the actor is idle and its mailbox empty; gives it back otherwise, to be sent.
    #[inline]
    pub(crate) fn try_inline(&self, msg: M) -> Result<(), M> {
        let target = match &self.inner {
            Inner::Local(local) => local.bound.inline::<M>(),
            Inner::Named(named) => match named.node.directory().get(&named.name) {
                Some(entry) => entry.bound.inline::<M>(),
                None => None,
            },
            Inner::Remote(_) | Inner::Gone(_) => None,
        };
        match target {
            Some(target) => target.try_inline(msg),
            None => Err(msg),
        }
    }

    /// The running incarnation behind a local or named address.
    pub(crate) fn current_cell(&self, node: &Node) -> Option<ractor::ActorCell> {
        let cell = match &self.inner {
            Inner::Local(local) => local.actor.get_cell(),
            Inner::Named(named) => node.directory().get(&named.name)?.cell,
            Inner::Remote(_) | Inner::Gone(_) => return None,
        };
        (cell.get_status() <= ractor::ActorStatus::Upgrading).then_some(cell)
    }

    /// Whether the actor lives on another node.
    pub fn is_remote(&self) -> bool {
        matches!(self.inner, Inner::Remote(_))
    }

    /// Whether a send could currently be delivered locally (always true for remote addresses,
    /// whose liveness only a send or a watch can tell).
    pub fn is_alive(&self) -> bool {
        match &self.inner {
            Inner::Local(local) => local.actor.get_status() <= ractor::ActorStatus::Upgrading,
            Inner::Named(named) => named.node.directory().get(&named.name).is_some(),
            Inner::Remote(_) => true,
            Inner::Gone(_) => false,
        }
    }
}

/// The hot path of every local send: small enough to inline, errors built out of line.
#[inline]
fn cast<M: Send + 'static>(actor: &ActorRef<M>, bound: &MailboxBound, msg: M) -> Result<(), Error> {
    if !bound.try_reserve() {
        return Err(mailbox_full(actor, bound));
    }
    match actor.cast(msg) {
        Ok(()) => Ok(()),
        Err(err) => Err(cast_failed(actor, bound, err)),
    }
}

#[cold]
fn mailbox_full<M>(actor: &ActorRef<M>, bound: &MailboxBound) -> Error {
    Error::MailboxFull {
        actor: describe(actor),
        capacity: bound.capacity(),
    }
}

#[cold]
fn cast_failed<M>(actor: &ActorRef<M>, bound: &MailboxBound, err: MessagingErr<M>) -> Error {
    bound.release();
    match err {
        MessagingErr::SendErr(_) | MessagingErr::ChannelClosed => {
            Error::ActorStopped(describe(actor))
        }
        MessagingErr::InvalidActorType => Error::WrongMessageType {
            actor: describe(actor),
            expected: std::any::type_name::<M>().to_owned(),
        },
    }
}

fn describe<M>(actor: &ActorRef<M>) -> String {
    ActorId::of(&actor.get_cell()).to_string()
}

impl<M: Send + 'static> Clone for Addr<M> {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            Inner::Local(local) => Inner::Local(Local {
                actor: local.actor.clone(),
                node: local.node.clone(),
                bound: local.bound.clone(),
            }),
            Inner::Named(named) => Inner::Named(Named {
                node: named.node.clone(),
                name: named.name.clone(),
                _msg: PhantomData,
            }),
            Inner::Remote(remote) => Inner::Remote(remote.clone()),
            Inner::Gone(gone) => Inner::Gone(gone.clone()),
        };
        Addr { inner }
    }
}

impl<M: Send + 'static> fmt::Display for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Local(local) => write!(f, "{}@{}", describe(&local.actor), local.node.id()),
            Inner::Named(named) => write!(f, "{:?}@{}", named.name, named.node.id()),
            Inner::Remote(remote) => write!(f, "{}@{}", remote.target, remote.peer),
            Inner::Gone(gone) => write!(f, "{} (gone)@{}", gone.id, gone.node.id()),
        }
    }
}

impl<M: Send + 'static> fmt::Debug for Addr<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({self})")
    }
}

/// How an address travels: its node and its target there.
#[derive(Serialize, Deserialize)]
struct AddrWire {
    node: NodeId,
    target: Target,
}

impl<M: RemoteMessage> Serialize for Addr<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match &self.inner {
            Inner::Local(local) => {
                let id = ActorId::of(&local.actor.get_cell());
                let exported = self.clone();
                exported.bound_for_network(local.node.inbound_capacity());
                local.node.export_id(id, move || {
                    Arc::new(Export { addr: exported }) as Arc<dyn Inbound>
                });
                AddrWire {
                    node: local.node.id(),
                    target: Target::Id(id, local.node.incarnation()),
                }
            }
            Inner::Named(named) => {
                let exported = self.clone();
                exported.bound_for_network(named.node.inbound_capacity());
                named.node.export_name(&named.name, move || {
                    Arc::new(Export { addr: exported }) as Arc<dyn Inbound>
                });
                AddrWire {
                    node: named.node.id(),
                    target: Target::Name(named.name.clone()),
                }
            }
            Inner::Remote(remote) => AddrWire {
                node: remote.peer,
                target: remote.target.clone(),
            },
            Inner::Gone(gone) => AddrWire {
                node: gone.node.id(),
                target: Target::Id(gone.id, gone.incarnation),
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de, M: RemoteMessage> Deserialize<'de> for Addr<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = AddrWire::deserialize(deserializer)?;
        let ctx = context::current::<D::Error>()?;
        if wire.node != ctx.node.id() {
            // Passed on by a node other than the actor's: remember whom to ask the way to it.
            if let Some(from) = ctx.from
                && from != wire.node
            {
                ctx.node.note_route(wire.node, from);
            }
            return Ok(Addr {
                inner: Inner::Remote(Arc::new(Remote {
                    via: ctx.node,
                    peer: wire.node,
                    target: wire.target,
                    type_name: M::TYPE_NAME,
                    content_type: ctx.content_type,
                    encode: encode_for_wire::<M>,
                })),
            });
        }
        // It came home: hand back the local handle.
        match wire.target {
            Target::Name(name) => Ok(Addr::named(ctx.node, name)),
            Target::Id(id, incarnation) => {
                let gone = || Addr {
                    inner: Inner::Gone(Gone {
                        node: ctx.node.clone(),
                        id,
                        incarnation,
                    }),
                };
                if incarnation != ctx.node.incarnation() {
                    return Ok(gone());
                }
                let Some(exported) = ctx.node.exported(id) else {
                    return Ok(gone());
                };
                exported
                    .as_any()
                    .downcast_ref::<Export<M>>()
                    .map(|export| export.addr.clone())
                    .ok_or_else(|| {
                        serde::de::Error::custom(Error::WrongMessageType {
                            actor: id.to_string(),
                            expected: M::TYPE_NAME.to_owned(),
                        })
                    })
            }
        }
    }
}

fn encode_for_wire<M: RemoteMessage>(
    node: &Node,
    peer: NodeId,
    content_type: ContentType,
    msg: &M,
) -> Result<(Vec<u8>, Envelope), Error> {
    node.encode_for(peer, content_type, msg)
}
