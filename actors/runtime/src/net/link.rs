//! Peer links: one per peer node, carrying frames over one QUIC connection.
//!
//! The data path has no actor in it: a sender encodes its frame and pushes the bytes onto one of
//! the link's lanes (a queue picked by destination, so frames to one actor stay in order); a
//! writer task per lane batches them onto one long-lived QUIC stream (lane 0, replies and control
//! frames, is written straight to its stream when its writer is idle: see `replies.rs`). On the
//! receiving side a task per stream reads frames and hands them to the node, which decodes and
//! delivers in place (an idle named actor handles a message right there: see `Host`).
//!
//! The link's life — dialling, the hello, keeping one connection when both sides dial at once,
//! noticing loss, redialling with backoff — is a [`LinkActor`] under the node's `links`
//! supervisor. The tasks of a connection belong to the actor's state and are aborted when it is
//! dropped, even if it panics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Mutex, OnceCell, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::config::{PeerEvent, PeerInfo};
use super::endpoint::{CLOSE_DUPLICATE, CLOSE_SHUTDOWN, Hello, Net};
use super::replies::{Held, ReplyLane, frame_complete, write_replies};
use crate::node::WeakNode;
use crate::wire::frame::{Frame, FrameView, PeerLink, Target};
use crate::{Actor, ActorError, Addr, ChildSpec, Context, Error, Node, NodeId, Reply, Restart};

/// Queues per link. Frames for one destination always take the same lane.
const LANES: usize = 4;
/// Largest batch a lane writer hands to QUIC at once.
const BATCH: usize = 256 * 1024;
/// Read buffer per incoming stream.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes of frames not yet complete that one connection may hold, in largest frames.
const INCOMPLETE_FRAMES: usize = 2;
/// The first byte of every unidirectional stream says what it carries.
pub(crate) const STREAM_FRAMES: u8 = 0;
/// A typed stream's items (see `crate::stream`), after its id.
pub(crate) const STREAM_ITEMS: u8 = 1;

type Lane = Arc<Mutex<mpsc::UnboundedReceiver<Vec<u8>>>>;
/// What a dial gives: a connection that finished its hello, or why not.
type DialOutcome = Result<(quinn::Connection, Hello), Error>;

/// The sending side of a link to one peer.
pub(crate) struct Link {
    peer: NodeId,
    /// Lane 0: replies and control frames, written straight to the stream when they can be.
    replies: Arc<ReplyLane>,
    /// Lanes 1.. (index 0 here is lane 1): messages, through their writers.
    lanes: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    receivers: Vec<Lane>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    max_frame: AtomicUsize,
    actor: OnceCell<Addr<LinkMsg>>,
    /// The live connection, for streams that are not frames (typed streams).
    conn: std::sync::Mutex<Option<quinn::Connection>>,
}

impl Link {
    fn new(peer: NodeId, net: &Net) -> Link {
        let (lanes, receivers) = (1..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Arc::new(Mutex::new(rx)))
            })
            .unzip();
        let queued = Arc::new(AtomicUsize::new(0));
        Link {
            peer,
            replies: Arc::new(ReplyLane::new(peer, queued.clone())),
            lanes,
            receivers,
            queued,
            limit: net.config.outbound_limit,
            max_frame: AtomicUsize::new(net.config.max_frame),
            actor: OnceCell::new(),
            conn: std::sync::Mutex::new(None),
        }
    }

    /// The live connection, if the link is up.
    pub(crate) fn connection(&self) -> Option<quinn::Connection> {
        self.conn.lock().ok().and_then(|c| c.clone())
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// Drops the frames queued while no connection writes them; returns how many.
    fn discard_queued(&self) -> usize {
        let mut dropped = self.replies.discard_queued();
        for lane in &self.receivers {
            // A lane a writer holds is being written: nothing of it is left behind.
            if let Ok(mut rx) = lane.try_lock() {
                while let Ok(bytes) = rx.try_recv() {
                    self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    fn set_connection(&self, conn: Option<quinn::Connection>) {
        if let Ok(mut slot) = self.conn.lock() {
            *slot = conn;
        }
    }

    /// The link's actor, started on first use.
    async fn actor(self: &Arc<Self>, node: &Node) -> Result<Addr<LinkMsg>, Error> {
        self.actor
            .get_or_try_init(|| async {
                let link = self.clone();
                let node_for_actor = node.downgrade();
                let spec = ChildSpec::new(move || LinkActor {
                    link: link.clone(),
                    node: node_for_actor.clone(),
                    live: None,
                    draining: Vec::new(),
                    attempt: 0,
                    dialing: false,
                })
                .named(format!("link:{}", self.peer))
                .restart(Restart::Transient)
                .shutdown(Duration::from_secs(2));
                node.links_supervisor()?.start_child(spec).await
            })
            .await
            .cloned()
    }
}

/// Lane 0 carries replies and control frames (small, and they need no order among themselves,
/// so they batch together); messages spread over the other lanes by destination, which keeps
/// each destination's messages in order.
fn lane_of(frame: &Frame) -> usize {
    use std::hash::{Hash, Hasher};
    match frame {
        Frame::Deliver { to, .. } => {
            let mut hasher = rustc_hash::FxHasher::default();
            match to {
                Target::Id(id, _) => id.hash(&mut hasher),
                Target::Name(name) => name.hash(&mut hasher),
            }
            1 + (hasher.finish() as usize) % (LANES - 1)
        }
        Frame::Reply { .. } | Frame::Control(_) => 0,
    }
}

impl PeerLink for Link {
    fn send(&self, frame: Frame) -> Result<(), Error> {
        let mut bytes = Vec::with_capacity(frame.size_hint());
        frame.encode(&mut bytes, self.max_frame.load(Ordering::Relaxed))?;
        let size = bytes.len();
        if self.queued.fetch_add(size, Ordering::AcqRel) + size > self.limit {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(Error::Unavailable(format!("link to {}", self.peer)));
        }
        match lane_of(&frame) {
            0 => {
                self.replies.send(bytes);
                Ok(())
            }
            lane => self.lanes[lane - 1]
                .send(bytes)
                .map_err(|_| Error::NoRoute(self.peer.to_string())),
        }
    }
}

/// Finds or makes the link to `peer`. Making one needs an address to dial, or a peer to ask for
/// it: the one that passed on a handle naming `peer` (see `Net::routes`).
pub(crate) fn link_for(node: &Node, net: &Arc<Net>, peer: NodeId) -> Result<Arc<Link>, Error> {
    if let Some(link) = net.links.get(&peer) {
        return Ok(link.clone());
    }
    let via = if net.known.contains_key(&peer) {
        None
    } else {
        match net.routes.get(&peer) {
            Some(via) => Some(*via),
            None => return Err(Error::NoRoute(peer.to_string())),
        }
    };
    let link = net
        .links
        .entry(peer)
        .or_insert_with(|| Arc::new(Link::new(peer, net)))
        .clone();
    // Locate and dial in the background; frames queue on the lanes meanwhile.
    let dialing = link.clone();
    let node = node.clone();
    let net = net.clone();
    tokio::spawn(async move {
        if let Some(via) = via
            && let Err(err) = locate(&node, &net, peer, via).await
        {
            tracing::debug!(%peer, %via, error = %err, "could not locate a node to dial");
            // Never sent: drop what queued and fail the asks waiting on it, as a failed dial does.
            dialing.discard_queued();
            net.links
                .remove_if(&peer, |_, link| Arc::ptr_eq(link, &dialing));
            node.fail_waiting(peer, &Error::NoRoute(peer.to_string()));
            return;
        }
        match dialing.actor(&node).await {
            Ok(actor) => {
                let _ = actor.send(LinkMsg::Dial);
            }
            Err(err) => tracing::warn!(%peer, error = %err, "could not start the link"),
        }
    });
    Ok(link)
}

/// Asks `via` where `peer` listens and records the address, so the link actor can dial it.
async fn locate(node: &Node, net: &Net, peer: NodeId, via: NodeId) -> Result<(), Error> {
    let addr = node.locate(via, peer, net.config.connect_timeout).await?;
    net.known.entry(peer).or_insert_with(|| PeerInfo {
        node: peer,
        name: String::new(),
        incarnation: 0,
        addr,
        connected: false,
    });
    net.routes.remove(&peer);
    tracing::debug!(%peer, %via, %addr, "located a node passed on by a peer");
    Ok(())
}

/// Hands a connection that finished its hello to the peer's link, and waits until it is up.
pub(crate) async fn attach(
    node: &Node,
    net: &Arc<Net>,
    conn: quinn::Connection,
    hello: Hello,
    dialer: NodeId,
) -> Result<(), Error> {
    let peer = hello.node;
    net.learn(&hello, false);
    let link = net
        .links
        .entry(peer)
        .or_insert_with(|| Arc::new(Link::new(peer, net)))
        .clone();
    let actor = link.actor(node).await?;
    actor
        .ask(
            |reply| {
                LinkMsg::Attach(
                    Box::new(Attach {
                        conn,
                        hello,
                        dialer,
                    }),
                    reply,
                )
            },
            net.config.connect_timeout,
        )
        .await
}

pub(crate) struct Attach {
    conn: quinn::Connection,
    hello: Hello,
    dialer: NodeId,
}

pub(crate) enum LinkMsg {
    /// A connection finished its hello; the reply says when the link is up on it.
    Attach(Box<Attach>, Reply<()>),
    /// Dial the peer now (if not linked and not dialling already).
    Dial,
    /// A dial started by `Dial` ended (to the address it dialled).
    Dialed(Box<(DialOutcome, SocketAddr)>),
    /// The connection with this stable id ended.
    Lost(usize, String),
    /// A connection that lost the dedupe has drained: close it.
    Retire(usize),
}

/// How long a connection that lost the dedupe keeps being read before it is closed, so frames
/// the peer wrote on it before switching are not lost.
const DRAIN: Duration = Duration::from_secs(2);

/// A live connection and the tasks that serve it; aborted and closed when dropped.
struct Live {
    conn: quinn::Connection,
    dialer: NodeId,
    nonce: u64,
    incarnation: u64,
    tasks: Vec<JoinHandle<()>>,
    /// False when the connection is handed over to draining instead of closed.
    close_on_drop: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if self.close_on_drop {
            self.conn.close(CLOSE_SHUTDOWN.into(), b"link closed");
        }
    }
}

/// A connection that lost the dedupe: still read (the peer may have written on it before it
/// switched), no longer written; closed after [`DRAIN`], or when dropped.
struct Draining {
    conn: quinn::Connection,
    reader: JoinHandle<()>,
}

impl Drop for Draining {
    fn drop(&mut self) {
        self.reader.abort();
        self.conn
            .close(CLOSE_DUPLICATE.into(), b"duplicate connection");
    }
}

pub(crate) struct LinkActor {
    link: Arc<Link>,
    node: WeakNode,
    live: Option<Live>,
    draining: Vec<Draining>,
    attempt: u32,
    /// A dial runs in a task of its own, so the actor can still stop (and take other messages)
    /// while a handshake with a vanished peer waits for its timeout.
    dialing: bool,
}

impl LinkActor {
    fn net(&self) -> Result<(Node, Arc<Net>), Error> {
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| Error::NodeStopped("node".to_owned()))?;
        let net = node.net()?;
        Ok((node, net))
    }

    async fn attach(&mut self, ctx: &Context<Self>, attach: Attach) -> Result<(), Error> {
        let (node, net) = self.net()?;
        let Attach {
            conn,
            hello,
            dialer,
        } = attach;
        let peer = self.link.peer;
        if let Some(live) = &self.live {
            if live.conn.stable_id() == conn.stable_id() {
                return Ok(());
            }
            let same_incarnation = live.incarnation == hello.incarnation;
            if same_incarnation {
                // Two connections between the same pair (both sides dialled at once, or one side
                // twice): both sides keep the same one — dialled by the smaller id, then the
                // larger nonce — whatever order they saw them in.
                let preferred = node.id().min(peer);
                let rank = |dialer: NodeId, nonce: u64| (dialer == preferred, nonce);
                if rank(live.dialer, live.nonce) > rank(dialer, hello.nonce) {
                    self.drain(ctx, conn, &net);
                    return Ok(());
                }
            } else {
                self.lose(&node, &net, "the peer restarted (new incarnation)");
            }
        }
        self.link.max_frame.store(
            net.config.max_frame.min(hello.max_frame as usize),
            Ordering::Relaxed,
        );
        let mut tasks = Vec::with_capacity(LANES + 2);
        tasks.push(tokio::spawn(write_replies(
            conn.clone(),
            self.link.replies.clone(),
        )));
        for lane in &self.link.receivers {
            tasks.push(tokio::spawn(write_lane(
                conn.clone(),
                lane.clone(),
                self.link.clone(),
            )));
        }
        tasks.push(tokio::spawn(accept_streams(
            conn.clone(),
            self.node.clone(),
            peer,
            net.config.max_frame,
        )));
        let me = ctx.addr();
        let watched = conn.clone();
        tasks.push(tokio::spawn(async move {
            let reason = watched.closed().await;
            let _ = me.send(LinkMsg::Lost(watched.stable_id(), reason.to_string()));
        }));
        self.link.set_connection(Some(conn.clone()));
        let replaced = self.live.replace(Live {
            conn,
            dialer,
            nonce: hello.nonce,
            incarnation: hello.incarnation,
            tasks,
            close_on_drop: true,
        });
        if let Some(mut old) = replaced {
            let conn = old.conn.clone();
            // Stop writing on it now (its tasks are aborted), keep reading it for a while.
            old.close_on_drop = false;
            drop(old);
            self.drain(ctx, conn, &net);
        }
        self.attempt = 0;
        net.learn(&hello, true);
        tracing::info!(node = %node.name(), %peer, peer_name = %hello.name, "link up");
        net.emit(PeerEvent::Up {
            node: peer,
            incarnation: hello.incarnation,
            name: hello.name,
            addr: hello.listen,
        });
        Ok(())
    }

    /// Keeps reading a connection that lost the dedupe for [`DRAIN`], then closes it.
    fn drain(&mut self, ctx: &Context<Self>, conn: quinn::Connection, net: &Net) {
        let reader = tokio::spawn(accept_streams(
            conn.clone(),
            self.node.clone(),
            self.link.peer,
            net.config.max_frame,
        ));
        let stable_id = conn.stable_id();
        self.draining.push(Draining { conn, reader });
        let me = ctx.addr();
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN).await;
            let _ = me.send(LinkMsg::Retire(stable_id));
        });
    }

    /// The current connection is gone: tell the node, and everyone waiting on the peer.
    fn lose(&mut self, node: &Node, net: &Net, reason: &str) {
        let peer = self.link.peer;
        if self.live.take().is_some() {
            self.link.set_connection(None);
            net.set_connected(peer, false);
            tracing::info!(node = %node.name(), %peer, %reason, "link down");
            net.emit(PeerEvent::Down {
                node: peer,
                reason: reason.to_owned(),
            });
            node.peer_lost(peer);
        }
    }

    /// Starts dialling the peer in a task; [`LinkActor::dialed`] takes the outcome.
    fn dial(&mut self, ctx: &Context<Self>) -> Result<(), Error> {
        if self.live.is_some() || self.dialing {
            return Ok(());
        }
        let (node, net) = self.net()?;
        let peer = self.link.peer;
        let Some(addr) = net.known.get(&peer).map(|info| info.addr) else {
            return Err(Error::NoRoute(peer.to_string()));
        };
        self.dialing = true;
        let me = ctx.addr();
        tokio::spawn(async move {
            let outcome = net.dial(&node, addr).await;
            // If the link actor stopped meanwhile, the connection is dropped here: closed.
            let _ = me.send(LinkMsg::Dialed(Box::new((outcome, addr))));
        });
        Ok(())
    }

    async fn dialed(
        &mut self,
        ctx: &Context<Self>,
        outcome: DialOutcome,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        self.dialing = false;
        let (node, net) = self.net()?;
        let peer = self.link.peer;
        match outcome {
            // (If the peer dialled us meanwhile, `attach` keeps the same one of the two
            // connections that the peer keeps.)
            Ok((conn, hello)) if hello.node == peer => {
                self.attach(
                    ctx,
                    Attach {
                        conn,
                        hello,
                        dialer: node.id(),
                    },
                )
                .await
            }
            Ok((conn, hello)) => {
                conn.close(CLOSE_SHUTDOWN.into(), b"not the node dialled");
                Err(Error::Protocol(format!(
                    "{addr} is now node {}, not {peer}",
                    hello.node
                )))
            }
            Err(err @ Error::Untrusted { .. }) => {
                tracing::error!(%peer, %addr, error = %err, "peer refused: not redialling");
                self.unreachable(&node);
                self.attempt = net.config.redial_attempts;
                Err(err)
            }
            Err(err) => {
                self.unreachable(&node);
                self.schedule_redial(ctx, &net);
                Err(err)
            }
        }
    }

    /// A dial failed: what was queued for the peer was never sent. Drop it, and fail the asks
    /// waiting on it with [`Error::NoRoute`] (never sent, so a caller may safely try elsewhere)
    /// rather than letting them wait for their timeouts.
    fn unreachable(&self, node: &Node) {
        let peer = self.link.peer;
        let dropped = self.link.discard_queued();
        node.fail_waiting(peer, &Error::NoRoute(peer.to_string()));
        if dropped > 0 {
            tracing::debug!(%peer, dropped, "dropped frames queued for an unreachable peer");
        }
    }

    fn schedule_redial(&mut self, ctx: &Context<Self>, net: &Net) {
        if self.attempt >= net.config.redial_attempts {
            tracing::info!(peer = %self.link.peer, "giving up on the link until the next send");
            net.links.remove(&self.link.peer);
            ctx.stop();
            return;
        }
        let delay = net.config.redial.delay(self.attempt);
        self.attempt += 1;
        let me = ctx.addr();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.send(LinkMsg::Dial);
        });
    }
}

impl Actor for LinkActor {
    type Msg = LinkMsg;

    async fn handle(&mut self, ctx: &mut Context<Self>, msg: LinkMsg) -> Result<(), ActorError> {
        match msg {
            LinkMsg::Attach(attach, reply) => {
                let result = self.attach(ctx, *attach).await;
                let _ = reply.send(());
                if let Err(err) = result {
                    tracing::warn!(peer = %self.link.peer, error = %err, "could not attach a connection");
                }
            }
            LinkMsg::Dial => {
                if let Err(err) = self.dial(ctx) {
                    tracing::debug!(peer = %self.link.peer, error = %err, "cannot dial");
                }
            }
            LinkMsg::Dialed(dialed) => {
                let (outcome, addr) = *dialed;
                if let Err(err) = self.dialed(ctx, outcome, addr).await {
                    tracing::debug!(peer = %self.link.peer, error = %err, "dial failed");
                }
            }
            LinkMsg::Retire(stable_id) => {
                self.draining.retain(|d| d.conn.stable_id() != stable_id);
            }
            LinkMsg::Lost(stable_id, reason) => {
                let current = self
                    .live
                    .as_ref()
                    .is_some_and(|live| live.conn.stable_id() == stable_id);
                if !current {
                    return Ok(());
                }
                let (node, net) = self.net()?;
                let graceful = self
                    .live
                    .as_ref()
                    .and_then(|live| live.conn.close_reason())
                    .is_some_and(|r| {
                        matches!(r, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == CLOSE_SHUTDOWN.into())
                    });
                self.lose(&node, &net, &reason);
                if graceful {
                    net.links.remove(&self.link.peer);
                    ctx.stop();
                } else {
                    self.schedule_redial(ctx, &net);
                }
            }
        }
        Ok(())
    }
}

/// Writes one lane's frames to one stream of `conn`, batching what is queued.
async fn write_lane(conn: quinn::Connection, lane: Lane, link: Arc<Link>) {
    let mut rx = lane.lock_owned().await;
    let mut stream: Option<quinn::SendStream> = None;
    // Frames queued together are written together, through one buffer kept from write to write.
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let bytes: &[u8] = if rx.is_empty() {
            &first
        } else {
            if batch.capacity() > 2 * BATCH {
                // A huge frame went through: give its room back.
                batch = Vec::new();
            }
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            &batch
        };
        link.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        let send = match &mut stream {
            Some(send) => send,
            None => match open_frames_stream(&conn).await {
                Ok(send) => stream.insert(send),
                Err(err) => {
                    tracing::debug!(peer = %link.peer, error = %err, bytes = bytes.len(), "lost frames: no stream");
                    return;
                }
            },
        };
        if let Err(err) = send.write_all(bytes).await {
            tracing::debug!(peer = %link.peer, error = %err, bytes = bytes.len(), "lost frames: write failed");
            return;
        }
    }
}

pub(crate) async fn open_frames_stream(
    conn: &quinn::Connection,
) -> Result<quinn::SendStream, Error> {
    let mut send = conn
        .open_uni()
        .await
        .map_err(|e| Error::NodeLost(e.to_string()))?;
    send.write_all(&[STREAM_FRAMES])
        .await
        .map_err(|e| Error::NodeLost(e.to_string()))?;
    Ok(send)
}

/// Accepts the peer's streams and reads each in its own task. The streams of one connection
/// share one [`ReadBudget`].
async fn accept_streams(conn: quinn::Connection, node: WeakNode, peer: NodeId, max_frame: usize) {
    let budget = ReadBudget::new(max_frame.saturating_mul(INCOMPLETE_FRAMES), node.clone());
    let mut readers = tokio::task::JoinSet::new();
    while let Ok(recv) = conn.accept_uni().await {
        readers.spawn(read_stream(
            recv,
            node.clone(),
            peer,
            max_frame,
            budget.clone(),
        ));
    }
}

/// How many bytes of frames (and typed-stream items) not yet complete one connection may hold.
///
/// A reader takes room for a frame's declared length before it reads the frame's body, and gives
/// it back once the frame is whole; memory itself is taken only as the bytes arrive. With no room
/// left the reader waits (counted in [`Node::throttled_reads`]) and reads nothing more from its
/// stream, so QUIC flow control holds that sender back. Taking the whole declared length at once
/// means frames that got room always finish: a peer's own streams cannot starve one another.
#[derive(Clone)]
pub(crate) struct ReadBudget {
    room: Arc<Semaphore>,
    node: WeakNode,
}

impl ReadBudget {
    pub(crate) fn new(limit: usize, node: WeakNode) -> ReadBudget {
        ReadBudget {
            room: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            node,
        }
    }

    /// Room for `len` bytes (never more than the limit, which is at least one largest frame),
    /// waiting for it if need be.
    async fn take(&self, len: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        match self.room.try_acquire_many(len) {
            Ok(room) => Some(room),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                if let Some(node) = self.node.upgrade() {
                    node.count_throttled_read();
                }
                tracing::debug!(
                    len,
                    "a connection holds its limit of unfinished frames: waiting"
                );
                self.room.acquire_many(len).await.ok()
            }
            Err(tokio::sync::TryAcquireError::Closed) => None,
        }
    }
}

/// Reads the body of a `len`-byte frame (or typed-stream item) that follows in `recv`.
///
/// Returns `true` when the body is whole in `recv`'s buffer: the caller reads it there
/// (`&recv.buffer()[..len]`, no copy) and then consumes it. Otherwise it is gathered into `buf`
/// (`false`), which grows only as bytes arrive, under room taken from the connection's `budget`.
pub(crate) async fn read_body(
    recv: &mut BufReader<quinn::RecvStream>,
    len: usize,
    buf: &mut Vec<u8>,
    budget: &ReadBudget,
) -> std::io::Result<bool> {
    if recv.buffer().len() >= len {
        return Ok(true);
    }
    let _room = budget.take(len).await;
    buf.clear();
    while buf.len() < len {
        let left = len - buf.len();
        let buffered = recv.buffer().len();
        if buffered > 0 {
            let take = buffered.min(left);
            grow(buf, take, len);
            buf.extend_from_slice(&recv.buffer()[..take]);
            recv.consume(take);
            continue;
        }
        // Nothing buffered: take what arrived straight from QUIC (one copy, as `read_exact`).
        match recv.get_mut().read_chunk(left, true).await {
            Ok(Some(chunk)) => {
                grow(buf, chunk.bytes.len(), len);
                buf.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(false)
}

/// Makes room in `buf` for `more` bytes: doubling, but never past the frame's `len`.
fn grow(buf: &mut Vec<u8>, more: usize, len: usize) {
    if buf.capacity() - buf.len() < more {
        let want = (buf.capacity() * 2).max(buf.len() + more).min(len);
        buf.reserve_exact(want - buf.len());
    }
}

/// Gives back the room of a large frame's buffer once the frame is handled.
pub(crate) fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > READ_BUFFER {
        *buf = Vec::new();
    }
}

/// Reads frames from one stream. A frame over the limit is skipped whole and one that does not
/// decode is refused; the stream goes on either way (the length prefix keeps it in step).
async fn read_stream(
    recv: quinn::RecvStream,
    node: WeakNode,
    peer: NodeId,
    max_frame: usize,
    budget: ReadBudget,
) {
    use tokio::io::AsyncReadExt;
    // Buffered: one read takes many frames out of QUIC, not two reads per frame.
    let mut recv = BufReader::with_capacity(READ_BUFFER, recv);
    match recv.read_u8().await {
        Ok(STREAM_FRAMES) => {}
        Ok(STREAM_ITEMS) => {
            if let Some(node) = node.upgrade() {
                crate::stream::accept(&node, peer, recv, max_frame, budget).await;
            }
            return;
        }
        Ok(kind) => {
            tracing::warn!(%peer, kind, "refused a stream of unknown kind");
            if let Some(node) = node.upgrade() {
                node.count_refusal();
            }
            return;
        }
        Err(_) => return,
    }
    let mut buf = Vec::new();
    // Replies sent by handlers run inline while more frames are buffered: written together once
    // the buffer has no whole frame left (or when this task ends).
    let mut held = Held::default();
    loop {
        if !held.is_empty() && !frame_complete(recv.buffer()) {
            held.flush();
        }
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(_) => {}
            Err(err) => {
                // A clean end of stream between frames lands here too.
                tracing::debug!(%peer, error = %err, "stream ended");
                return;
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > max_frame {
            tracing::warn!(%peer, size = len, limit = max_frame, "refused an oversized frame");
            if let Some(node) = node.upgrade() {
                node.count_refusal();
            }
            if skip(&mut recv, len).await.is_err() {
                return;
            }
            continue;
        }
        let in_place = match read_body(&mut recv, len, &mut buf, &budget).await {
            Ok(in_place) => in_place,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "stream ended inside a frame");
                return;
            }
        };
        let Some(node) = node.upgrade() else { return };
        let (bytes, after) = if in_place {
            recv.buffer().split_at(len)
        } else {
            (&buf[..], recv.buffer())
        };
        match FrameView::decode(bytes) {
            // More whole frames buffered after this one: hold back its replies, to write them
            // with theirs.
            Ok(frame) if !held.is_empty() || frame_complete(after) => {
                held.holding(|| node.deliver_view(peer, frame))
            }
            Ok(frame) => node.deliver_view(peer, frame),
            Err(err) => {
                tracing::warn!(%peer, error = %err, "refused a malformed frame");
                node.count_refusal();
            }
        }
        if in_place {
            recv.consume(len);
        } else {
            shrink(&mut buf);
        }
    }
}

/// Skips `left` bytes of the stream, through its read buffer (nothing allocated).
async fn skip(recv: &mut BufReader<quinn::RecvStream>, mut left: usize) -> std::io::Result<()> {
    while left > 0 {
        let n = match recv.fill_buf().await? {
            [] => return Ok(()),
            arrived => arrived.len().min(left),
        };
        recv.consume(n);
        left -= n;
    }
    Ok(())
}
