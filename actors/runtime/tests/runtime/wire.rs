//! Handles that travel: codecs, the wire context, and `Addr`/`Reply` carried between nodes of one
//! process through in-process links, exactly as a network link will carry them.

use std::collections::HashMap;
use std::time::Duration;

use micro_runtime::{
    Actor, ActorError, Addr, CallData, ChildSpec, ContentType, Context, Error, RemoteMessage, Reply,
};
use micro_testkit::{TestCluster, eventually};
use serde::{Deserialize, Serialize};

const ASK: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
enum KvMsg {
    Put(String, u64),
    Get(String, Reply<Option<u64>>),
    /// Answers by dropping the port.
    Drop(Reply<Option<u64>>),
}

impl RemoteMessage for KvMsg {
    const TYPE_NAME: &'static str = "test.Kv";
}

#[derive(Default)]
struct Kv(HashMap<String, u64>);

impl Actor for Kv {
    type Msg = KvMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: KvMsg) -> Result<(), ActorError> {
        match msg {
            KvMsg::Put(k, v) => {
                self.0.insert(k, v);
            }
            KvMsg::Get(k, reply) => {
                let _ = reply.send(self.0.get(&k).copied());
            }
            KvMsg::Drop(reply) => drop(reply),
        }
        Ok(())
    }
}

/// Forwards every request to a store on (possibly) another node, reply port included.
#[derive(Serialize, Deserialize)]
enum FrontMsg {
    Route(Addr<KvMsg>),
    Get(String, Reply<Option<u64>>),
}

impl RemoteMessage for FrontMsg {
    const TYPE_NAME: &'static str = "test.Front";
}

#[derive(Default)]
struct Front(Option<Addr<KvMsg>>);

impl Actor for Front {
    type Msg = FrontMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: FrontMsg) -> Result<(), ActorError> {
        match msg {
            FrontMsg::Route(store) => self.0 = Some(store),
            FrontMsg::Get(k, reply) => match &self.0 {
                Some(store) => store.send(KvMsg::Get(k, reply))?,
                None => drop(reply),
            },
        }
        Ok(())
    }
}

/// Hands an address from one node to another the way a message would carry it.
fn carry<M: RemoteMessage>(
    addr: &Addr<M>,
    from: &micro_runtime::Node,
    to: &micro_runtime::Node,
) -> Addr<M> {
    let bytes = from.encode(ContentType::Bincode, addr).unwrap();
    to.decode(ContentType::Bincode, &bytes).unwrap()
}

#[test]
fn codecs_round_trip_and_refuse_garbage() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: u64,
        label: String,
    }
    let point = Point {
        x: 7,
        label: "seven".into(),
    };
    for ct in [ContentType::Bincode, ContentType::Json] {
        let bytes = ct.encode(&point).unwrap();
        assert_eq!(ct.decode::<Point>(&bytes).unwrap(), point);
        assert_eq!(ContentType::parse(ct.as_str()).unwrap(), ct);
        assert!(matches!(
            ct.decode::<Point>(&[0xff, 0x01]),
            Err(Error::Codec { .. })
        ));
    }
    let mut bytes = ContentType::Bincode.encode(&point).unwrap();
    bytes.push(0);
    assert!(
        matches!(
            ContentType::Bincode.decode::<Point>(&bytes),
            Err(Error::Codec { .. })
        ),
        "trailing bytes"
    );
    // A length prefix that claims far more than the limit is refused, not allocated.
    assert!(
        ContentType::Bincode
            .decode::<Vec<u8>>(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
            .is_err()
    );
    assert_eq!(
        ContentType::parse("text/xml"),
        Err(Error::UnknownContentType("text/xml".into()))
    );
}

#[tokio::test]
async fn handles_need_a_node_context_to_travel() {
    let cluster = TestCluster::in_process(1).await;
    let node = cluster.node(0);
    let kv = node.spawn(ChildSpec::new(Kv::default)).await.unwrap();
    let bytes = node.encode(ContentType::Bincode, &kv).unwrap();
    assert_eq!(
        ContentType::Bincode
            .decode::<Addr<KvMsg>>(&bytes)
            .unwrap_err(),
        Error::NoWireContext
    );

    // A reply port cannot be encoded without a context either, and a failed attempt leaves the
    // port usable: the ask below is still answered.
    let mut outside = None;
    let got = kv
        .ask(
            |reply| {
                let msg = KvMsg::Get("k".into(), reply);
                outside = Some(ContentType::Json.encode(&msg));
                msg
            },
            ASK,
        )
        .await;
    assert_eq!(outside, Some(Err(Error::NoWireContext)));
    assert_eq!(got, Ok(None));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_remote_ask_carries_its_reply_port_across_nodes() {
    micro_testkit::init_tracing();
    let cluster = TestCluster::in_process(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let kv_on_a = a.spawn(ChildSpec::new(Kv::default)).await.unwrap();

    let kv_seen_from_b = carry(&kv_on_a, a, b);
    assert!(kv_seen_from_b.is_remote());
    assert_eq!(kv_seen_from_b.node_id(), a.id());

    for ct in [ContentType::Bincode, ContentType::Json] {
        let _ = ct;
        for i in 0..100 {
            kv_seen_from_b.send(KvMsg::Put("k".into(), i)).unwrap();
        }
        let got = kv_seen_from_b
            .ask(|r| KvMsg::Get("k".into(), r), ASK)
            .await
            .unwrap();
        assert_eq!(got, Some(99), "sends arrive in order, before the ask");
    }
    let dropped = kv_seen_from_b.ask(KvMsg::Drop, ASK).await;
    assert_eq!(
        dropped,
        Err(Error::ReplyDropped),
        "a dropped remote port answers too"
    );
    eventually("no reply is left waiting", || async {
        b.waiting_replies() == 0
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_reply_forwarded_to_a_third_node_still_answers_its_origin() {
    let cluster = TestCluster::in_process(3).await;
    let (asker, middle, owner) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let store = owner.spawn(ChildSpec::new(Kv::default)).await.unwrap();
    store.send(KvMsg::Put("answer".into(), 42)).unwrap();
    let front = middle.spawn(ChildSpec::new(Front::default)).await.unwrap();
    front
        .send(FrontMsg::Route(carry(&store, owner, middle)))
        .unwrap();

    let front_from_asker = carry(&front, middle, asker);
    let got = front_from_asker
        .ask(|r| FrontMsg::Get("answer".into(), r), ASK)
        .await
        .unwrap();
    assert_eq!(got, Some(42));
    assert_eq!(asker.waiting_replies(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_address_that_comes_home_is_local_again() {
    let cluster = TestCluster::in_process(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let kv = a
        .spawn(ChildSpec::new(Kv::default).named("kv"))
        .await
        .unwrap();
    let named = a.lookup::<KvMsg>("kv").unwrap();

    let there = carry(&kv, a, b);
    let back = carry(&there, b, a);
    assert!(!back.is_remote());
    assert_eq!(back.id(), kv.id());

    let named_there = carry(&named, a, b);
    assert_eq!(named_there.name(), Some("kv"));
    named_there.send(KvMsg::Put("x".into(), 1)).unwrap();
    assert_eq!(
        named_there
            .ask(|r| KvMsg::Get("x".into(), r), ASK)
            .await
            .unwrap(),
        Some(1)
    );
    let named_back = carry(&named_there, b, a);
    assert!(!named_back.is_remote());
    assert_eq!(named_back.name(), Some("kv"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_address_that_comes_home_after_its_actor_ended_reports_it_stopped() {
    let cluster = TestCluster::in_process(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let kv = a.spawn(ChildSpec::new(Kv::default)).await.unwrap();
    let there = carry(&kv, a, b);
    a.root()
        .unwrap()
        .stop_child(kv.id().unwrap())
        .await
        .unwrap();

    let back = carry(&there, b, a);
    assert!(!back.is_alive());
    assert_eq!(back.id(), kv.id());
    assert!(matches!(
        back.send(KvMsg::Put("k".into(), 1)),
        Err(Error::ActorStopped(_))
    ));
    assert_eq!(back.watch().await, micro_runtime::Down::NotRunning);
    cluster.shutdown().await;
}

/// Asks what call data a message brought.
#[derive(Serialize, Deserialize)]
struct Probe {
    call: CallData,
    reply: Reply<Seen>,
}

impl RemoteMessage for Probe {
    const TYPE_NAME: &'static str = "test.Probe";
}

/// What the handler saw: the trace id, the headers, and the time left before the deadline.
type Seen = (Option<u128>, Vec<(String, String)>, Option<Duration>);

struct Prober;

impl Actor for Prober {
    type Msg = Probe;
    async fn handle(&mut self, _: &mut Context<Self>, msg: Probe) -> Result<(), ActorError> {
        let left = msg
            .call
            .deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        let _ = msg.reply.send((msg.call.trace_id, msg.call.headers, left));
        Ok(())
    }
}

#[tokio::test]
async fn call_data_reaches_the_handler_locally_and_in_the_envelope_across_nodes() {
    let cluster = TestCluster::in_process(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let prober = a.spawn(ChildSpec::new(|| Prober)).await.unwrap();
    let headers = vec![("tenant".to_owned(), "acme".to_owned())];
    let call = || {
        CallData::new()
            .with_deadline(tokio::time::Instant::now() + Duration::from_secs(30))
            .with_trace_id(0xfeed_face_cafe_beef_u128 << 64)
            .with_header("tenant", "acme")
    };

    // Locally the message carries its call data as it is.
    let (trace, seen_headers, left) = prober
        .ask(
            |reply| Probe {
                call: call(),
                reply,
            },
            ASK,
        )
        .await
        .unwrap();
    assert_eq!(trace, Some(0xfeed_face_cafe_beef_u128 << 64));
    assert_eq!(seen_headers, headers);
    assert!(
        left.is_some_and(|l| l > Duration::from_secs(20)),
        "{left:?}"
    );

    // From another node, in either codec, it travels in the frame's envelope.
    for ct in [ContentType::Bincode, ContentType::Json] {
        let bytes = a.encode(ct, &prober).unwrap();
        let remote: Addr<Probe> = b.decode(ct, &bytes).unwrap();
        assert!(remote.is_remote());
        let (trace, seen_headers, left) = remote
            .ask(
                |reply| Probe {
                    call: call(),
                    reply,
                },
                ASK,
            )
            .await
            .unwrap();
        assert_eq!(trace, Some(0xfeed_face_cafe_beef_u128 << 64), "{ct}");
        assert_eq!(seen_headers, headers, "{ct}");
        assert!(
            left.is_some_and(|l| l > Duration::from_secs(20) && l <= Duration::from_secs(30)),
            "{ct}: {left:?}"
        );

        // Empty call data arrives empty.
        let seen = remote
            .ask(
                |reply| Probe {
                    call: CallData::new(),
                    reply,
                },
                ASK,
            )
            .await
            .unwrap();
        assert_eq!(seen, (None, vec![], None), "{ct}");
    }
    cluster.shutdown().await;
}
