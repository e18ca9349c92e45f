//! The node's QUIC endpoint: listening, dialling, the hello exchange, and the table of links.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::config::{NetConfig, PeerEvent, PeerInfo};
use super::link::Link;
use super::tls::{self, NodeCredentials};
use crate::FastMap;
use crate::node::WeakNode;
use crate::{Error, Node, NodeId};

/// The protocol version in the hello; ALPN `micro/1` already agreed on the major version.
const VERSION: u16 = 1;
/// Largest hello accepted.
const MAX_HELLO: usize = 64 * 1024;

/// Unidirectional streams a peer may have open at once (frame lanes and typed streams).
const MAX_UNI_STREAMS: u32 = 1024;
/// Bidirectional streams a peer may have open at once: only the hello uses one.
const MAX_BIDI_STREAMS: u32 = 8;
/// Bytes QUIC buffers unread on one stream (a typed stream whose receiver is behind holds this
/// much before its sender waits).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Bytes QUIC buffers unread on one connection, over all its streams.
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Application close codes.
pub(crate) const CLOSE_SHUTDOWN: u32 = 0;
pub(crate) const CLOSE_DUPLICATE: u32 = 1;
pub(crate) const CLOSE_PROTOCOL: u32 = 2;

/// What two nodes tell each other first, on the connection's first bidirectional stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) version: u16,
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) name: String,
    pub(crate) listen: SocketAddr,
    pub(crate) max_frame: u64,
    /// Chosen by the dialler for this connection and echoed by the acceptor, so both sides can
    /// tell two connections between the same pair apart the same way.
    pub(crate) nonce: u64,
}

pub(crate) struct Net {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) local_addr: SocketAddr,
    pub(crate) credentials: NodeCredentials,
    pub(crate) config: NetConfig,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) incarnation: u64,
    pub(crate) links: FastMap<NodeId, Arc<Link>>,
    pub(crate) known: FastMap<NodeId, PeerInfo>,
    /// Nodes this node has no address for, and the peer that passed on a handle naming each:
    /// the one to ask where it listens before dialling it.
    pub(crate) routes: FastMap<NodeId, NodeId>,
    pub(crate) events: broadcast::Sender<PeerEvent>,
}

impl Net {
    /// Binds the endpoint. Credentials come from the config or the development CA.
    pub(crate) fn bind(config: NetConfig, credentials: NodeCredentials) -> Result<Net, Error> {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(config.keep_alive));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout)
                .map_err(|e| Error::Identity(format!("idle timeout: {e}")))?,
        ));
        // Streams a peer may have open at once: frame lanes and typed streams are
        // unidirectional; only the hello is bidirectional.
        transport.max_concurrent_uni_streams(MAX_UNI_STREAMS.into());
        transport.max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into());
        // What QUIC itself holds unread for a peer (unbounded for a connection by default).
        transport.stream_receive_window(STREAM_WINDOW.into());
        transport.receive_window(CONNECTION_WINDOW.into());
        let transport = Arc::new(transport);
        let server = credentials.server_config(transport.clone())?;
        let client_config = credentials.client_config(transport)?;
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|e| Error::Io {
            context: format!("binding {}", config.listen),
            detail: e.to_string(),
        })?;
        let local_addr = endpoint.local_addr().map_err(|e| Error::Io {
            context: "reading the bound address".to_owned(),
            detail: e.to_string(),
        })?;
        let (events, _) = broadcast::channel(256);
        Ok(Net {
            endpoint,
            local_addr,
            credentials,
            config,
            client_config,
            incarnation: rand::random(),
            links: FastMap::default(),
            known: FastMap::default(),
            routes: FastMap::default(),
            events,
        })
    }

    pub(crate) fn hello(&self, node: &Node) -> Hello {
        Hello {
            version: VERSION,
            node: node.id(),
            incarnation: self.incarnation,
            name: node.name().to_owned(),
            listen: self.local_addr,
            max_frame: self.config.max_frame as u64,
            nonce: rand::random(),
        }
    }

    pub(crate) fn emit(&self, event: PeerEvent) {
        let _ = self.events.send(event);
    }

    /// Dials `addr`: TLS (checked against the cluster, not the address), then the hello.
    pub(crate) async fn dial(
        &self,
        node: &Node,
        addr: SocketAddr,
    ) -> Result<(quinn::Connection, Hello), Error> {
        let attempt = async {
            let connecting = self
                .endpoint
                .connect_with(
                    self.client_config.clone(),
                    addr,
                    &tls::server_name(self.credentials.cluster()),
                )
                .map_err(|e| Error::Io {
                    context: format!("dialling {addr}"),
                    detail: e.to_string(),
                })?;
            let conn = connecting
                .await
                .map_err(|e| connection_error(&addr.to_string(), e))?;
            let hello = exchange_as_dialer(&conn, &self.hello(node)).await?;
            check_hello(&conn, &hello)?;
            Ok((conn, hello))
        };
        tokio::time::timeout(self.config.connect_timeout, attempt)
            .await
            .map_err(|_| Error::Timeout(self.config.connect_timeout))?
    }

    /// Records what a hello told about a peer. `connected: false` only says this hello did not
    /// bring a link up (yet): a link already up to the peer stays recorded as up — a second
    /// connection that loses the dedupe leaves the surviving one working. Only the link actor
    /// records a link as down ([`Net::set_connected`]).
    pub(crate) fn learn(&self, hello: &Hello, connected: bool) {
        let info = PeerInfo {
            node: hello.node,
            name: hello.name.clone(),
            incarnation: hello.incarnation,
            addr: hello.listen,
            connected,
        };
        match self.known.entry(hello.node) {
            dashmap::Entry::Occupied(mut known) => {
                let connected = connected || known.get().connected;
                *known.get_mut() = PeerInfo { connected, ..info };
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(info);
            }
        }
    }

    /// `via` passed on a handle naming `node`; kept only while `node`'s address is unknown.
    pub(crate) fn note_route(&self, node: NodeId, via: NodeId) {
        if !self.known.contains_key(&node) {
            self.routes.insert(node, via);
        }
    }

    pub(crate) fn set_connected(&self, peer: NodeId, connected: bool) {
        if let Some(mut info) = self.known.get_mut(&peer) {
            info.connected = connected;
        }
    }
}

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, node: WeakNode) {
    while let Some(incoming) = endpoint.accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            if let Err(err) = accept_one(incoming, &node).await {
                tracing::warn!(%from, error = %err, "refused an incoming connection");
            }
        });
    }
}

async fn accept_one(incoming: quinn::Incoming, node: &WeakNode) -> Result<(), Error> {
    let from = incoming.remote_address().to_string();
    let conn = incoming.await.map_err(|e| connection_error(&from, e))?;
    let Some(node) = node.upgrade() else {
        return Ok(());
    };
    let net = node.net()?;
    let hello = tokio::time::timeout(
        net.config.connect_timeout,
        exchange_as_acceptor(&conn, &net.hello(&node)),
    )
    .await
    .map_err(|_| Error::Timeout(net.config.connect_timeout))
    .and_then(|hello| hello)
    .and_then(|hello| check_hello(&conn, &hello).map(|()| hello));
    let hello = match hello {
        Ok(hello) => hello,
        Err(err) => {
            conn.close(CLOSE_PROTOCOL.into(), b"bad hello");
            return Err(err);
        }
    };
    let peer = hello.node;
    super::link::attach(&node, &net, conn, hello, peer).await
}

/// The hello's node must be the one the certificate names, and speak our version.
fn check_hello(conn: &quinn::Connection, hello: &Hello) -> Result<(), Error> {
    let certified = tls::peer_node_id(conn)?;
    if certified != hello.node {
        return Err(Error::Protocol(format!(
            "hello names node {} but the certificate names {}",
            hello.node, certified
        )));
    }
    if hello.version != VERSION {
        return Err(Error::Protocol(format!(
            "peer speaks protocol version {}, this node {VERSION}",
            hello.version
        )));
    }
    Ok(())
}

pub(crate) async fn exchange_as_dialer(
    conn: &quinn::Connection,
    mine: &Hello,
) -> Result<Hello, Error> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(conn, e))?;
    write_hello(&mut send, mine).await?;
    read_hello(&mut recv).await
}

async fn exchange_as_acceptor(conn: &quinn::Connection, mine: &Hello) -> Result<Hello, Error> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| lost(conn, e))?;
    let theirs = read_hello(&mut recv).await?;
    let mine = Hello {
        nonce: theirs.nonce,
        ..mine.clone()
    };
    write_hello(&mut send, &mine).await?;
    Ok(theirs)
}

async fn write_hello(send: &mut quinn::SendStream, hello: &Hello) -> Result<(), Error> {
    let body = crate::ContentType::Bincode.encode(hello)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    send.write_all(&frame)
        .await
        .map_err(|e| Error::Protocol(format!("writing the hello: {e}")))?;
    send.finish()
        .map_err(|e| Error::Protocol(format!("finishing the hello: {e}")))
}

async fn read_hello(recv: &mut quinn::RecvStream) -> Result<Hello, Error> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| Error::Protocol(format!("reading the hello: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO {
        return Err(Error::FrameTooLarge {
            size: len,
            limit: MAX_HELLO,
        });
    }
    let mut body = vec![0; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| Error::Protocol(format!("reading the hello: {e}")))?;
    crate::ContentType::Bincode.decode(&body)
}

fn lost(conn: &quinn::Connection, err: quinn::ConnectionError) -> Error {
    connection_error(&conn.remote_address().to_string(), err)
}

/// Tells a refused handshake (another cluster or CA) from a lost connection.
pub(crate) fn connection_error(peer: &str, err: quinn::ConnectionError) -> Error {
    use quinn::ConnectionError as E;
    match &err {
        E::TransportError(t) if is_crypto(t.code) => Error::Untrusted {
            peer: peer.to_owned(),
            reason: err.to_string(),
        },
        E::ConnectionClosed(c) if is_crypto(c.error_code) => Error::Untrusted {
            peer: peer.to_owned(),
            reason: err.to_string(),
        },
        _ => Error::NodeLost(format!("{peer}: {err}")),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100–0x1ff.
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// How long [`Node::shutdown`] waits for the endpoint to tell peers it closes.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_millis(500);
