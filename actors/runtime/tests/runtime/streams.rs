//! Typed streams: on one node, and across nodes over QUIC, with backpressure, a clean end from
//! either side, and cancellation from either side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro_runtime::{
    Actor, ActorError, ChildSpec, Context, Error, Node, RemoteMessage, Reply, StreamSender,
    stream_channel,
};
use micro_testkit::{eventually, within};
use serde::{Deserialize, Serialize};

const ITEMS: u64 = 10_000;

#[tokio::test]
async fn a_local_stream_delivers_in_order_and_holds_the_sender_back() {
    let (mut tx, mut rx) = stream_channel::<u64>(4);
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let producer = tokio::spawn(async move {
        for i in 0..ITEMS {
            tx.send(i).await?;
            counter.fetch_add(1, Ordering::SeqCst);
        }
        tx.finish().await
    });
    // Nothing is read yet: the sender stops at the capacity.
    eventually("the sender fills the queue", || async {
        sent.load(Ordering::SeqCst) == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        4,
        "backpressure holds the sender"
    );

    let mut expected = 0;
    while let Some(item) = rx.recv().await {
        assert_eq!(item, Ok(expected));
        expected += 1;
    }
    assert_eq!(expected, ITEMS);
    producer.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_the_receiver_stops_the_sender_and_cancel_reaches_the_receiver() {
    let (mut tx, rx) = stream_channel::<u64>(4);
    drop(rx);
    assert!(matches!(tx.send(1).await, Err(Error::StreamClosed(_))));

    let (mut tx, mut rx) = stream_channel::<u64>(4);
    tx.send(1).await.unwrap();
    tx.cancel("changed my mind");
    assert_eq!(rx.recv().await, Some(Ok(1)));
    assert!(matches!(
        rx.recv().await,
        Some(Err(Error::StreamCancelled(_)))
    ));
}

/// Streams numbers into the sender it is given, as told.
#[derive(Serialize, Deserialize)]
enum ProducerMsg {
    /// Send `count` items, then finish; answers how many were sent, or the error that stopped it.
    Produce {
        count: u64,
        into: StreamSender<u64>,
        done: Reply<Result<u64, Error>>,
    },
    /// Send `count` items, then cancel.
    ProduceThenCancel { count: u64, into: StreamSender<u64> },
    /// Doubles every item it receives on `from` into a new stream, whose sender is the answer.
    Double {
        from: StreamSender<u64>,
        back: Reply<StreamSender<u64>>,
    },
}

impl RemoteMessage for ProducerMsg {
    const TYPE_NAME: &'static str = "test.streams.Producer";
}

struct Producer;

impl Actor for Producer {
    type Msg = ProducerMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: ProducerMsg) -> Result<(), ActorError> {
        // Each stream runs in its own task, so the actor keeps serving.
        match msg {
            ProducerMsg::Produce {
                count,
                mut into,
                done,
            } => {
                tokio::spawn(async move {
                    let mut sent = 0;
                    let outcome = loop {
                        if sent == count {
                            break into.finish().await.map(|()| sent);
                        }
                        if let Err(err) = into.send(sent).await {
                            break Err(err);
                        }
                        sent += 1;
                    };
                    let _ = done.send(outcome);
                });
            }
            ProducerMsg::ProduceThenCancel { count, mut into } => {
                tokio::spawn(async move {
                    for i in 0..count {
                        if into.send(i).await.is_err() {
                            return;
                        }
                    }
                    into.cancel("producer gave up");
                });
            }
            ProducerMsg::Double { from, back } => {
                // `from` is the client's sender of inputs: make the input stream here and hand
                // the client the sender for it; answer on `from`'s... (see the test).
                let (tx, mut rx) = stream_channel::<u64>(64);
                let mut outputs = from;
                let _ = back.send(tx);
                tokio::spawn(async move {
                    while let Some(Ok(item)) = rx.recv().await {
                        if outputs.send(item * 2).await.is_err() {
                            return;
                        }
                    }
                    let _ = outputs.finish().await;
                });
            }
        }
        Ok(())
    }
}

async fn pair() -> (Node, Node, micro_runtime::Addr<ProducerMsg>) {
    micro_testkit::init_tracing();
    let server = micro_testkit::test_node("server").start().await.unwrap();
    server
        .spawn(ChildSpec::new(|| Producer).named("producer"))
        .await
        .unwrap();
    server.expose::<ProducerMsg>("producer").unwrap();
    let client = micro_testkit::test_node("client").start().await.unwrap();
    let peer = client.connect(server.local_addr().unwrap()).await.unwrap();
    let producer = client
        .lookup_remote::<ProducerMsg>(peer, "producer")
        .await
        .unwrap();
    (server, client, producer)
}

#[tokio::test]
async fn a_server_streams_ten_thousand_items_to_another_node() {
    let (server, client, producer) = pair().await;
    let (tx, mut rx) = stream_channel::<u64>(16);
    let done = producer.ask(
        |done| ProducerMsg::Produce {
            count: ITEMS,
            into: tx,
            done,
        },
        Duration::from_secs(30),
    );
    let received = async {
        let mut expected = 0;
        while let Some(item) = rx.recv().await {
            assert_eq!(item, Ok(expected), "in order, none lost");
            expected += 1;
        }
        expected
    };
    let (done, received) = within("the stream completes", async {
        tokio::join!(done, received)
    })
    .await;
    assert_eq!(done, Ok(Ok(ITEMS)));
    assert_eq!(received, ITEMS, "then a clean end");
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_receiver_that_closes_early_stops_the_remote_sender() {
    let (server, client, producer) = pair().await;
    let (tx, mut rx) = stream_channel::<u64>(4);
    let done = tokio::spawn({
        let producer = producer.clone();
        async move {
            producer
                .ask(
                    |done| ProducerMsg::Produce {
                        count: 1_000_000,
                        into: tx,
                        done,
                    },
                    Duration::from_secs(30),
                )
                .await
        }
    });
    for expected in 0..100 {
        assert_eq!(rx.recv().await, Some(Ok(expected)));
    }
    drop(rx);
    let outcome = within("the producer notices", done).await.unwrap();
    assert!(
        matches!(outcome, Ok(Err(Error::StreamClosed(_)))),
        "{outcome:?}"
    );
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_remote_sender_that_cancels_ends_the_stream_with_an_error() {
    let (server, client, producer) = pair().await;
    let (tx, mut rx) = stream_channel::<u64>(64);
    producer
        .send(ProducerMsg::ProduceThenCancel {
            count: 50,
            into: tx,
        })
        .unwrap();
    let mut got = 0;
    let end = within("the stream ends", async {
        loop {
            match rx.recv().await {
                Some(Ok(_)) => got += 1,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(end, Some(Err(Error::StreamCancelled(_)))),
        "{end:?}"
    );
    assert_eq!(got, 50, "items sent before the cancel are delivered");
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bidirectional_stream_doubles_ten_thousand_items() {
    let (server, client, producer) = pair().await;
    // The client's receiver of results; the server gets its sender and answers with the sender
    // of its own input stream.
    let (results_tx, mut results) = stream_channel::<u64>(64);
    let mut inputs = producer
        .ask(
            |back| ProducerMsg::Double {
                from: results_tx,
                back,
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let feeding = tokio::spawn(async move {
        for i in 0..ITEMS {
            inputs.send(i).await?;
        }
        inputs.finish().await
    });
    let mut expected = 0;
    while let Some(item) = within("the next result", results.recv()).await {
        assert_eq!(item, Ok(expected * 2));
        expected += 1;
    }
    assert_eq!(expected, ITEMS);
    feeding.await.unwrap().unwrap();
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
