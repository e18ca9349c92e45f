//! The runtime's error type.

use std::time::Duration;

/// Everything that can go wrong in the runtime, with enough context to act on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// An `ask` got no reply within its timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The actor is not running (it stopped, or is between incarnations while it restarts).
    #[error("actor {0} is not running")]
    ActorStopped(String),
    /// The actor's mailbox is at its configured capacity; the message was not queued.
    #[error("mailbox of actor {actor} is full ({capacity} messages)")]
    MailboxFull {
        /// The actor whose mailbox is full.
        actor: String,
        /// The configured capacity.
        capacity: usize,
    },
    /// The receiver dropped the [`Reply`](crate::Reply) without answering.
    #[error("the reply port was dropped without an answer")]
    ReplyDropped,
    /// The asker is no longer waiting for this reply (it timed out or went away).
    #[error("the asker is no longer waiting for the reply")]
    AskerGone,
    /// A [`Reply`](crate::Reply) was used (sent, forwarded or encoded) twice.
    #[error("the reply port was already used")]
    ReplyUsed,
    /// No actor of that name is registered on the node.
    #[error("no actor named {0:?} on this node")]
    NotFound(String),
    /// The name is already taken on this node by a running actor.
    #[error("an actor named {0:?} is already running on this node")]
    NameTaken(String),
    /// The actor exists but takes another message type.
    #[error("actor {actor} does not take messages of type {expected}")]
    WrongMessageType {
        /// The actor looked up.
        actor: String,
        /// The message type the caller asked for.
        expected: String,
    },
    /// An actor or supervisor failed to start; the reason says why.
    #[error("{child} failed to start: {reason}")]
    StartFailed {
        /// The child that failed (its name or id).
        child: String,
        /// What its start returned or panicked with.
        reason: String,
    },
    /// A supervisor exceeded its restart intensity and gave up.
    #[error("supervisor {supervisor} gave up: {reason}")]
    SupervisorFailed {
        /// The supervisor that failed.
        supervisor: String,
        /// Why it failed.
        reason: String,
    },
    /// The node is stopping or stopped; nothing more can be started on it.
    #[error("node {0} is not running")]
    NodeStopped(String),
    /// A value could not be encoded or decoded.
    #[error("codec {content_type}: {detail}")]
    Codec {
        /// The content type in use.
        content_type: String,
        /// What the codec said.
        detail: String,
    },
    /// An [`Addr`](crate::Addr) or [`Reply`](crate::Reply) was encoded or decoded outside a node's
    /// wire context (use [`Node::encode`](crate::Node::encode) / [`Node::decode`](crate::Node::decode)).
    #[error("no node wire context is set: encode and decode through Node::encode / Node::decode")]
    NoWireContext,
    /// There is no link to the node a remote handle points at.
    #[error("no route to node {0}")]
    NoRoute(String),
    /// Credentials could not be made, read or used (bad PEM, a certificate without a node id…).
    #[error("identity: {0}")]
    Identity(String),
    /// A peer was refused, or refused us: it is not of this cluster or not signed by its CA.
    #[error("peer {peer} is not trusted: {reason}")]
    Untrusted {
        /// The peer's address or node id.
        peer: String,
        /// Why the handshake failed.
        reason: String,
    },
    /// An I/O operation failed (files, sockets).
    #[error("{context}: {detail}")]
    Io {
        /// What was being done.
        context: String,
        /// What the OS said.
        detail: String,
    },
    /// The actor (or its node) cannot take more right now; retry later or elsewhere.
    #[error("{0} is unavailable (overloaded)")]
    Unavailable(String),
    /// The actor exists but is not exposed to other nodes.
    #[error("actor {0:?} is not exposed to other nodes")]
    NotExposed(String),
    /// The link to the node was lost before the answer came.
    #[error("lost the link to node {0}")]
    NodeLost(String),
    /// A frame was larger than the limit; it was refused whole.
    #[error("frame of {size} bytes is over the limit of {limit}")]
    FrameTooLarge {
        /// The size the frame declared.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The other end of a typed stream is gone (receiver dropped, or the stream already ended).
    #[error("stream closed: {0}")]
    StreamClosed(String),
    /// The sender cancelled a typed stream.
    #[error("stream cancelled: {0}")]
    StreamCancelled(String),
    /// A peer broke the protocol (garbage, truncated frames, wrong handshake…).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The content type is not one this node knows.
    #[error("unknown content type {0:?}")]
    UnknownContentType(String),
    /// An [`ask_until`](crate::Addr::ask_until) got no reply before its deadline. (Last, as
    /// errors travel in frames by variant index: a new variant goes at the end.)
    #[error("no reply before the deadline")]
    DeadlinePassed,
}

impl Error {
    pub(crate) fn codec(content_type: &str, detail: impl std::fmt::Display) -> Self {
        Error::Codec {
            content_type: content_type.to_owned(),
            detail: detail.to_string(),
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
