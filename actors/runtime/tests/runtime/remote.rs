//! Remote actors over QUIC: nodes in one process on 127.0.0.1, linked through real QUIC
//! connections with mutual TLS from a CA generated for the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use micro_runtime::{
    Actor, ActorError, Addr, ChildSpec, ClusterCa, ContentType, Context, Down, Error, ExitReason,
    Node, NodeId, PeerEvent, RemoteMessage, Reply,
};
use micro_testkit::{eventually, within};
use serde::{Deserialize, Serialize};

const ASK: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn listening(name: &str) -> Node {
    micro_testkit::init_tracing();
    micro_testkit::test_node(name).start().await.unwrap()
}

#[derive(Serialize, Deserialize)]
enum KvMsg {
    Put(String, u64),
    Get(String, Reply<Option<u64>>),
    /// Forwards the request, reply port included, to another store.
    Forward(Addr<KvMsg>, String, Reply<Option<u64>>),
    Hold(u64),
    Crash,
    Stop,
    /// Drops the reply port unanswered.
    Ignore(Reply<Option<u64>>),
    /// Asks the store behind the address for a key, and answers with what it said.
    AskOn(Addr<KvMsg>, String, Reply<Option<u64>>),
}

impl RemoteMessage for KvMsg {
    const TYPE_NAME: &'static str = "test.remote.Kv";
}

#[derive(Default)]
struct Kv(HashMap<String, u64>);

impl Actor for Kv {
    type Msg = KvMsg;
    async fn handle(&mut self, ctx: &mut Context<Self>, msg: KvMsg) -> Result<(), ActorError> {
        match msg {
            KvMsg::Put(k, v) => {
                self.0.insert(k, v);
            }
            KvMsg::Get(k, reply) => {
                let _ = reply.send(self.0.get(&k).copied());
            }
            KvMsg::Forward(to, k, reply) => to.send(KvMsg::Get(k, reply))?,
            KvMsg::Hold(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            KvMsg::Crash => panic!("kv crashed"),
            KvMsg::Stop => ctx.stop(),
            KvMsg::Ignore(reply) => drop(reply),
            KvMsg::AskOn(to, k, reply) => {
                let got = to.ask(|r| KvMsg::Get(k, r), ASK).await?;
                let _ = reply.send(got);
            }
        }
        Ok(())
    }
}

/// Passes every message on to a store on another node, reply ports and addresses included.
struct Front(Addr<KvMsg>);

impl Actor for Front {
    type Msg = KvMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: KvMsg) -> Result<(), ActorError> {
        Ok(self.0.send(msg)?)
    }
}

/// Three nodes in a line: the asker is linked to the middle, the middle to the owner, and the
/// asker and the owner have never heard of each other. The middle's "front" passes everything
/// on to the owner's "store" (which holds `answer` = 42); returns the asker's handle on the front.
async fn three_nodes_in_a_line() -> (Node, Node, Node, Addr<KvMsg>) {
    let (asker, middle, owner) = (
        listening("asker").await,
        listening("middle").await,
        listening("owner").await,
    );
    kv_on(&owner, "store")
        .await
        .send(KvMsg::Put("answer".into(), 42))
        .unwrap();
    let owner_id = middle.connect(owner.local_addr().unwrap()).await.unwrap();
    let store = middle
        .lookup_remote::<KvMsg>(owner_id, "store")
        .await
        .unwrap();
    middle
        .spawn(ChildSpec::new(move || Front(store.clone())).named("front"))
        .await
        .unwrap();
    middle.expose::<KvMsg>("front").unwrap();
    let middle_id = asker.connect(middle.local_addr().unwrap()).await.unwrap();
    let front = asker
        .lookup_remote::<KvMsg>(middle_id, "front")
        .await
        .unwrap();
    assert!(!asker.peers().iter().any(|p| p.node == owner.id()));
    assert!(!owner.peers().iter().any(|p| p.node == asker.id()));
    (asker, middle, owner, front)
}

async fn kv_on(node: &Node, name: &str) -> Addr<KvMsg> {
    let addr = node
        .spawn(
            ChildSpec::new(Kv::default)
                .named(name)
                .shutdown(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    node.expose::<KvMsg>(name).unwrap();
    addr
}

#[tokio::test]
async fn a_remote_actor_answers_like_a_local_one() {
    let (a, b) = (listening("a").await, listening("b").await);
    kv_on(&a, "kv").await;

    let peer = b.connect(a.local_addr().unwrap()).await.unwrap();
    assert_eq!(peer, a.id());
    let kv = b.lookup_remote::<KvMsg>(peer, "kv").await.unwrap();
    assert!(kv.is_remote());

    for i in 0..1000 {
        kv.send(KvMsg::Put("k".into(), i)).unwrap();
    }
    assert_eq!(
        kv.ask(|r| KvMsg::Get("k".into(), r), ASK).await,
        Ok(Some(999)),
        "in order"
    );
    let json = kv.with_content_type(ContentType::Json);
    json.send(KvMsg::Put("j".into(), 7)).unwrap();
    assert_eq!(
        json.ask(|r| KvMsg::Get("j".into(), r), ASK).await,
        Ok(Some(7))
    );
    assert_eq!(b.waiting_replies(), 0);

    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reply_forwarded_over_quic_to_a_third_node_answers_its_origin() {
    let (asker, middle, owner) = (
        listening("asker").await,
        listening("middle").await,
        listening("owner").await,
    );
    kv_on(&owner, "store")
        .await
        .send(KvMsg::Put("answer".into(), 42))
        .unwrap();
    kv_on(&middle, "front").await;

    let owner_id = middle.connect(owner.local_addr().unwrap()).await.unwrap();
    let store_from_middle = middle
        .lookup_remote::<KvMsg>(owner_id, "store")
        .await
        .unwrap();
    let middle_id = asker.connect(middle.local_addr().unwrap()).await.unwrap();
    let front = asker
        .lookup_remote::<KvMsg>(middle_id, "front")
        .await
        .unwrap();

    // The asker never dialled the owner: the owner learns the way back from the reply port.
    asker.connect(owner.local_addr().unwrap()).await.unwrap();
    let got = front
        .ask(
            |r| KvMsg::Forward(store_from_middle.clone(), "answer".into(), r),
            ASK,
        )
        .await;
    assert_eq!(got, Ok(Some(42)));
    for node in [&asker, &middle, &owner] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_reply_forwarded_to_a_node_that_never_met_the_asker_answers_it() {
    let (asker, middle, owner, front) = three_nodes_in_a_line().await;

    // The owner answers ports that name the asker, a node it has no link to and no address of.
    let asks = (0..200).map(|_| front.ask(|r| KvMsg::Get("answer".into(), r), ASK));
    let answers = futures::future::join_all(asks).await;
    let answered = answers.iter().filter(|a| **a == Ok(Some(42))).count();
    assert_eq!(
        answered,
        200,
        "{:?}",
        answers.iter().find(|a| **a != Ok(Some(42)))
    );
    assert_eq!(asker.waiting_replies(), 0);
    for node in [&asker, &middle, &owner] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_forwarded_reply_dropped_on_a_node_that_never_met_the_asker_tells_it_at_once() {
    let (asker, middle, owner, front) = three_nodes_in_a_line().await;

    // The first thing the owner ever sends the asker is "dropped": it arrives well before the
    // ask's own timeout.
    let patience = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    let got = front.ask(KvMsg::Ignore, patience).await;
    assert_eq!(got, Err(Error::ReplyDropped));
    assert!(
        started.elapsed() < patience / 3,
        "told after {:?}",
        started.elapsed()
    );
    for node in [&asker, &middle, &owner] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_addr_forwarded_to_a_node_that_never_met_its_owner_works_there() {
    let (asker, middle, owner, front) = three_nodes_in_a_line().await;
    let mine = kv_on(&asker, "mine").await;
    mine.send(KvMsg::Put("k".into(), 7)).unwrap();

    // The asker's own store travels asker → middle → owner; the owner asks it for "k", and
    // (through a forwarded port) tells the asker what it heard.
    let got = front
        .ask(|r| KvMsg::AskOn(mine.clone(), "k".into(), r), ASK)
        .await;
    assert_eq!(got, Ok(Some(7)));
    // A plain send from the owner lands too: the store sends the Get, port and all, on the
    // asker's address.
    let got = front
        .ask(|r| KvMsg::Forward(mine.clone(), "k".into(), r), ASK)
        .await;
    assert_eq!(got, Ok(Some(7)));
    for node in [&asker, &middle, &owner] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn only_exposed_actors_are_reachable() {
    let (a, b) = (listening("a").await, listening("b").await);
    a.spawn(ChildSpec::new(Kv::default).named("private"))
        .await
        .unwrap();
    kv_on(&a, "public").await;
    let peer = b.connect(a.local_addr().unwrap()).await.unwrap();

    assert_eq!(
        b.lookup_remote::<KvMsg>(peer, "private").await.unwrap_err(),
        Error::NotExposed("private".into())
    );
    assert_eq!(
        b.lookup_remote::<KvMsg>(peer, "nobody").await.unwrap_err(),
        Error::NotFound("nobody".into())
    );
    #[derive(Serialize, Deserialize)]
    struct Other;
    impl RemoteMessage for Other {
        const TYPE_NAME: &'static str = "test.remote.Other";
    }
    assert!(matches!(
        b.lookup_remote::<Other>(peer, "public").await,
        Err(Error::WrongMessageType { .. })
    ));

    // Withdrawn exposure: asks are refused with a typed error, not left to time out.
    let public = b.lookup_remote::<KvMsg>(peer, "public").await.unwrap();
    a.unexpose("public");
    assert_eq!(
        public.ask(|r| KvMsg::Get("k".into(), r), ASK).await,
        Err(Error::NotExposed("public".into()))
    );
    eventually("the refusal is counted", || async {
        a.refused_messages() >= 1
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_of_another_ca_is_refused_on_both_sides() {
    micro_testkit::init_tracing();
    let a = listening("a").await;
    let stranger_ca = ClusterCa::generate("dev").unwrap();
    let stranger = Node::builder()
        .name("stranger")
        .listen(loopback())
        .credentials(stranger_ca.issue(NodeId::random()).unwrap())
        .start()
        .await
        .unwrap();

    let dialled = stranger.connect(a.local_addr().unwrap()).await;
    assert!(
        matches!(dialled, Err(Error::Untrusted { .. })),
        "{dialled:?}"
    );
    let accepted = a.connect(stranger.local_addr().unwrap()).await;
    assert!(
        matches!(accepted, Err(Error::Untrusted { .. })),
        "{accepted:?}"
    );
    assert!(a.peers().is_empty() && stranger.peers().is_empty());
    stranger.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn watching_a_remote_actor_reports_its_exit_reason() {
    let (a, b) = (listening("a").await, listening("b").await);
    kv_on(&a, "kv").await;
    let peer = b.connect(a.local_addr().unwrap()).await.unwrap();
    let kv = b.lookup_remote::<KvMsg>(peer, "kv").await.unwrap();

    let watch = kv.watch();
    kv.send(KvMsg::Crash).unwrap();
    assert_eq!(
        within("the crash is reported", watch).await,
        Down::Exited(ExitReason::Panic("kv crashed".into()))
    );

    // The named address follows the restart; watch the new incarnation stopping normally.
    eventually("kv answers again", || async {
        kv.ask(|r| KvMsg::Get("x".into(), r), ASK).await.is_ok()
    })
    .await;
    let watch = kv.watch();
    kv.send(KvMsg::Stop).unwrap();
    assert_eq!(
        within("the stop is reported", watch).await,
        Down::Exited(ExitReason::Normal)
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn losing_a_node_tells_watchers_waiters_and_peer_listeners() {
    let (a, b) = (listening("a").await, listening("b").await);
    kv_on(&a, "kv").await;
    let mut events = b.peer_events().unwrap();
    let peer = b.connect(a.local_addr().unwrap()).await.unwrap();
    let up = within("peer up", events.recv()).await.unwrap();
    assert!(matches!(up, PeerEvent::Up { node, .. } if node == peer));

    let kv = b.lookup_remote::<KvMsg>(peer, "kv").await.unwrap();
    let watch = kv.watch();
    // An ask in flight when the node goes away ends at once, not at its timeout.
    kv.send(KvMsg::Hold(60_000)).unwrap();
    let pending = tokio::spawn({
        let kv = kv.clone();
        async move {
            kv.ask(|r| KvMsg::Get("k".into(), r), Duration::from_secs(60))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.shutdown().await.unwrap();

    let down = within("the watch fires", watch).await;
    assert!(matches!(down, Down::Exited(_) | Down::NodeLost), "{down:?}");
    let answer = within("the pending ask ends", pending).await.unwrap();
    assert!(
        matches!(answer, Err(Error::NodeLost(_)) | Err(Error::ReplyDropped)),
        "{answer:?}"
    );
    let down_event = within("peer down", async {
        loop {
            if let Ok(PeerEvent::Down { node, .. }) = events.recv().await {
                return node;
            }
        }
    })
    .await;
    assert_eq!(down_event, peer);
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_nodes_dialling_each_other_at_once_end_with_one_connection() {
    let (a, b) = (listening("a").await, listening("b").await);
    kv_on(&a, "kv").await;
    kv_on(&b, "kv").await;
    let (to_b, to_a) = tokio::join!(
        a.connect(b.local_addr().unwrap()),
        b.connect(a.local_addr().unwrap())
    );
    let (to_b, to_a) = (to_b.unwrap(), to_a.unwrap());
    eventually("one connection each", || async {
        a.open_connections() == 1 && b.open_connections() == 1
    })
    .await;

    // And it carries traffic both ways.
    let kv_b = a.lookup_remote::<KvMsg>(to_b, "kv").await.unwrap();
    let kv_a = b.lookup_remote::<KvMsg>(to_a, "kv").await.unwrap();
    kv_b.send(KvMsg::Put("x".into(), 1)).unwrap();
    kv_a.send(KvMsg::Put("x".into(), 2)).unwrap();
    assert_eq!(
        kv_b.ask(|r| KvMsg::Get("x".into(), r), ASK).await,
        Ok(Some(1))
    );
    assert_eq!(
        kv_a.ask(|r| KvMsg::Get("x".into(), r), ASK).await,
        Ok(Some(2))
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn after_dialling_each_other_at_once_both_sides_say_the_link_is_up() {
    for round in 0..3 {
        let (a, b) = (listening("a").await, listening("b").await);
        kv_on(&a, "kv").await;
        kv_on(&b, "kv").await;
        let (to_b, to_a) = tokio::join!(
            a.connect(b.local_addr().unwrap()),
            b.connect(a.local_addr().unwrap())
        );
        let (to_b, to_a) = (to_b.unwrap(), to_a.unwrap());
        eventually("the duplicate connection is retired", || async {
            a.open_connections() == 1 && b.open_connections() == 1
        })
        .await;

        // Whichever connection lost the dedupe, the one that survived is a working link, and
        // both sides say so.
        let linked = |node: &Node, peer: NodeId| {
            node.peers()
                .iter()
                .any(|info| info.node == peer && info.connected)
        };
        assert!(
            linked(&a, to_b),
            "round {round}: a says b is down: {:?}",
            a.peers()
        );
        assert!(
            linked(&b, to_a),
            "round {round}: b says a is down: {:?}",
            b.peers()
        );
        let kv_b = a.lookup_remote::<KvMsg>(to_b, "kv").await.unwrap();
        let kv_a = b.lookup_remote::<KvMsg>(to_a, "kv").await.unwrap();
        kv_b.send(KvMsg::Put("x".into(), round)).unwrap();
        kv_a.send(KvMsg::Put("x".into(), round + 10)).unwrap();
        assert_eq!(
            kv_b.ask(|r| KvMsg::Get("x".into(), r), ASK).await,
            Ok(Some(round))
        );
        assert_eq!(
            kv_a.ask(|r| KvMsg::Get("x".into(), r), ASK).await,
            Ok(Some(round + 10))
        );
        // Connecting again takes the "already linked" path: no new connection.
        assert_eq!(a.connect(b.local_addr().unwrap()).await, Ok(to_b));
        assert_eq!(a.open_connections(), 1);
        b.shutdown().await.unwrap();
        a.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_restarted_peer_is_a_new_incarnation_and_is_reached_again() {
    micro_testkit::init_tracing();
    let ca = ClusterCa::generate("restarts").unwrap();
    let b_identity = ca.issue(NodeId::random()).unwrap();
    let start_b = |addr: SocketAddr| {
        let credentials = b_identity.clone();
        async move {
            let b = Node::builder()
                .name("b")
                .listen(addr)
                .credentials(credentials)
                .start()
                .await
                .unwrap();
            kv_on(&b, "kv").await;
            b
        }
    };
    let a = Node::builder()
        .name("a")
        .listen(loopback())
        .credentials(ca.issue(NodeId::random()).unwrap())
        .start()
        .await
        .unwrap();
    let b = start_b(loopback()).await;
    let b_addr = b.local_addr().unwrap();
    let first_incarnation = b.incarnation();

    let mut events = a.peer_events().unwrap();
    let peer = a.connect(b_addr).await.unwrap();
    let kv = a.lookup_remote::<KvMsg>(peer, "kv").await.unwrap();
    kv.send(KvMsg::Put("k".into(), 1)).unwrap();
    assert_eq!(
        kv.ask(|r| KvMsg::Get("k".into(), r), ASK).await,
        Ok(Some(1))
    );

    // An address by id of an actor of the first incarnation, as a message would carry it.
    let anonymous = b.spawn(ChildSpec::new(Kv::default)).await.unwrap();
    let bytes = b.encode(ContentType::Bincode, &anonymous).unwrap();
    let by_id: Addr<KvMsg> = a.decode(ContentType::Bincode, &bytes).unwrap();
    assert_eq!(
        by_id.ask(|r| KvMsg::Get("k".into(), r), ASK).await,
        Ok(None)
    );

    b.shutdown().await.unwrap();
    let b = start_b(b_addr).await;
    assert_eq!(b.id(), peer, "same certificate, same node id");
    assert_ne!(b.incarnation(), first_incarnation);

    // The same address reaches the new incarnation (dialled again on demand), with fresh state.
    eventually("kv answers from the new incarnation", || async {
        kv.ask(|r| KvMsg::Get("k".into(), r), Duration::from_millis(500))
            .await
            == Ok(None)
    })
    .await;
    let incarnations = within("two ups", async {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Ok(PeerEvent::Up { incarnation, .. }) = events.recv().await {
                seen.push(incarnation);
            }
        }
        seen
    })
    .await;
    assert_eq!(incarnations, vec![first_incarnation, b.incarnation()]);
    // Ids restart with the process: the old incarnation's address must not reach a new actor.
    b.spawn(ChildSpec::new(Kv::default)).await.unwrap();
    assert!(matches!(
        by_id.ask(|r| KvMsg::Get("k".into(), r), ASK).await,
        Err(Error::ActorStopped(_))
    ));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_overloaded_actor_refuses_remote_asks_as_unavailable() {
    micro_testkit::init_tracing();
    let a = micro_testkit::test_node("a")
        .inbound_capacity(4)
        .start()
        .await
        .unwrap();
    let b = listening("b").await;
    kv_on(&a, "kv").await;
    let peer = b.connect(a.local_addr().unwrap()).await.unwrap();
    let kv = b.lookup_remote::<KvMsg>(peer, "kv").await.unwrap();

    // Busy for a while, so what comes from the network queues up behind it.
    kv.send(KvMsg::Hold(1_000)).unwrap();
    let asks = (0..20).map(|_| kv.ask(|r| KvMsg::Get("k".into(), r), ASK));
    let answers = futures::future::join_all(asks).await;
    let unavailable = answers
        .iter()
        .filter(|a| matches!(a, Err(Error::Unavailable(_))))
        .count();
    let answered = answers.iter().filter(|a| matches!(a, Ok(None))).count();
    assert!(
        unavailable >= 10,
        "most asks are refused at once: {answers:?}"
    );
    assert_eq!(
        unavailable + answered,
        20,
        "the rest are answered: {answers:?}"
    );
    // Fire-and-forget sends past the bound are dropped and counted.
    let before = a.refused_messages();
    for _ in 0..10 {
        kv.send(KvMsg::Hold(100)).unwrap();
    }
    eventually("dropped sends are counted", || async {
        a.refused_messages() > before
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// JSON under another name, standing in for any codec a user plugs in.
struct TestCodec;

impl micro_runtime::Codec for TestCodec {
    fn name(&self) -> &'static str {
        "application/x-micro-test"
    }
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }
    fn decode<'de>(
        &self,
        bytes: &'de [u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'de>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), String> {
        let mut json = serde_json::Deserializer::from_slice(bytes);
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut json))
            .map_err(|e| e.to_string())?;
        json.end().map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn a_plugged_in_codec_carries_messages_and_replies() {
    let custom = micro_runtime::register_codec(TestCodec);
    let (a, b) = (listening("a").await, listening("b").await);
    kv_on(&a, "kv").await;
    let peer = b.connect(a.local_addr().unwrap()).await.unwrap();
    let kv = b
        .lookup_remote::<KvMsg>(peer, "kv")
        .await
        .unwrap()
        .with_content_type(custom);
    kv.send(KvMsg::Put("c".into(), 3)).unwrap();
    assert_eq!(
        kv.ask(|r| KvMsg::Get("c".into(), r), ASK).await,
        Ok(Some(3))
    );
    assert_eq!(ContentType::parse("application/x-micro-test"), Ok(custom));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_without_waiting_for_a_dial_to_a_vanished_peer() {
    let a = listening("a").await;
    let b = listening("b").await;
    b.spawn(ChildSpec::new(Kv::default).named("kv"))
        .await
        .unwrap();
    b.expose::<KvMsg>("kv").unwrap();
    let peer = a.connect(b.local_addr().unwrap()).await.unwrap();
    let kv = a.lookup_remote::<KvMsg>(peer, "kv").await.unwrap();
    b.shutdown().await.unwrap();
    eventually("a sees b leave", || {
        let linked = a.peers().iter().any(|p| p.node == peer && p.connected);
        async move { !linked }
    })
    .await;

    // A send to b dials its old address again; nothing answers, so the handshake waits.
    let _ = kv.send(KvMsg::Put("k".into(), 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut events = a.supervision_events();
    within("a's shutdown", a.shutdown()).await.unwrap();
    // The link actor took its stop like any other child: nobody had to kill it.
    while let Ok(event) = events.try_recv() {
        if let (Some(child), Some(reason)) = (event.child(), event.reason()) {
            assert_ne!(*reason, ExitReason::Killed, "{child} had to be killed");
        }
    }
}

/// `listen_on` takes the address as text, a host name allowed: a literal and `localhost` both
/// listen on loopback, and the nodes they make link to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_on_takes_a_literal_or_a_host_name() {
    micro_testkit::init_tracing();
    let literal = micro_testkit::test_node("literal")
        .listen_on("127.0.0.1:0")
        .start()
        .await
        .expect("a literal address listens");
    let named = micro_testkit::test_node("named")
        .listen_on("localhost:0")
        .start()
        .await
        .expect("localhost resolves without a network");
    let literal_addr = literal.local_addr().expect("listening");
    let named_addr = named.local_addr().expect("listening");
    assert!(literal_addr.ip().is_loopback(), "{literal_addr}");
    assert!(named_addr.ip().is_loopback(), "{named_addr}");
    assert_ne!(named_addr.port(), 0, "port 0 picked a free port");
    let peer = within("the link", named.connect(literal_addr))
        .await
        .expect("a node listening on a name links to another");
    assert_eq!(peer, literal.id());
    named.shutdown().await.unwrap();
    literal.shutdown().await.unwrap();
}

/// A name that does not resolve fails `start` quickly with a typed error naming the input
/// (no network is needed: `.invalid` never resolves, and inside netns-run there is no DNS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_on_a_name_that_does_not_resolve_names_it() {
    micro_testkit::init_tracing();
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        micro_testkit::test_node("nowhere")
            .listen_on("nowhere.invalid:1")
            .start(),
    )
    .await
    .expect("resolution fails rather than hangs");
    match started {
        Err(Error::Io { context, .. }) => {
            assert!(context.contains("nowhere.invalid:1"), "{context}")
        }
        Err(other) => panic!("expected Error::Io naming the input, got {other:?}"),
        Ok(_) => panic!("a name that does not resolve must not listen"),
    }
    // `listen` after `listen_on` wins: the name is forgotten.
    let node = micro_testkit::test_node("relisten")
        .listen_on("nowhere.invalid:1")
        .listen(loopback())
        .start()
        .await
        .expect("the parsed address replaced the name");
    node.shutdown().await.unwrap();
}
