//! Streaming calls of each shape with 10,000 messages, and early ends from either side: nothing
//! is left running on the server, and no reply is left waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use micro::{CallContext, CallOptions, Endpoint, Incoming, Outgoing, Service, ServiceError};
use micro_testkit::{eventually, within};

use crate::common::Cluster;

const N: u64 = 10_000;

/// Counters the handlers leave behind, to check how they ended.
#[derive(Default)]
struct Seen {
    received: AtomicU64,
    ended_with_error: AtomicBool,
    ended_cleanly: AtomicBool,
}

fn counter(seen: Arc<Seen>) -> Service {
    let (sum_seen, echo_seen) = (seen.clone(), seen.clone());
    Service::new("counter")
        .endpoint(Endpoint::server_stream(
            "Counter.Count",
            |_: CallContext, up_to: u64, mut out: Outgoing<u64>| async move {
                for i in 0..up_to {
                    out.send(&i).await?;
                }
                Ok(())
            },
        ))
        .endpoint(Endpoint::client_stream(
            "Counter.Sum",
            move |_: CallContext, mut numbers: Incoming<u64>| {
                let seen = sum_seen.clone();
                async move {
                    let mut sum = 0;
                    while let Some(n) = numbers.recv().await {
                        let n = n?;
                        seen.received.fetch_add(1, Ordering::SeqCst);
                        if n == u64::MAX {
                            // Told to stop early: answer now, without reading the rest.
                            return Ok(sum);
                        }
                        sum += n;
                    }
                    Ok::<_, ServiceError>(sum)
                }
            },
        ))
        .endpoint(Endpoint::bidi_stream(
            "Counter.Echo",
            move |_: CallContext, mut input: Incoming<String>, mut out: Outgoing<String>| {
                let seen = echo_seen.clone();
                async move {
                    while let Some(item) = input.recv().await {
                        match item {
                            Ok(text) => out.send(&text.to_uppercase()).await?,
                            Err(err) => {
                                seen.ended_with_error.store(true, Ordering::SeqCst);
                                return Err(err);
                            }
                        }
                    }
                    seen.ended_cleanly.store(true, Ordering::SeqCst);
                    Ok(())
                }
            },
        ))
}

async fn settled(cluster: &Cluster) {
    eventually("no call is left running on the server", || {
        let stats = cluster.services[0].stats();
        async move { stats.in_flight == 0 }
    })
    .await;
    eventually("no reply is left waiting", || {
        let waiting =
            cluster.client_node().waiting_replies() + cluster.replica(0).waiting_replies();
        async move { waiting == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_client_and_bidirectional_streams_carry_ten_thousand_messages() {
    let seen = Arc::new(Seen::default());
    let cluster = Cluster::start(1, |_| counter(seen.clone())).await;
    let client = cluster.client().build().await.unwrap();

    // Server streaming.
    let counted = client
        .server_stream::<u64, u64>("counter", "Counter.Count", &N, CallOptions::new())
        .await
        .unwrap();
    let all = within("10,000 responses", counted.collect()).await.unwrap();
    assert_eq!(all, (0..N).collect::<Vec<_>>());

    // Client streaming.
    let mut sum = client
        .client_stream::<u64, u64>("counter", "Counter.Sum", CallOptions::new())
        .await
        .unwrap();
    for i in 0..N {
        sum.send(&i).await.unwrap();
    }
    assert_eq!(
        within("the sum", sum.finish()).await.unwrap(),
        N * (N - 1) / 2
    );

    // Bidirectional: write and read at once.
    let (mut out, mut input) = client
        .stream::<String, String>("counter", "Counter.Echo", CallOptions::new())
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            out.send(&format!("m{i}")).await.unwrap();
        }
        out.finish().await.unwrap();
    });
    let mut got = 0;
    while let Some(item) = within("an echo", input.recv()).await {
        assert_eq!(item.unwrap(), format!("M{got}"));
        got += 1;
    }
    writer.await.unwrap();
    assert_eq!(got, N);
    eventually("the echo handler saw the clean end", || {
        let clean = seen.ended_cleanly.load(Ordering::SeqCst);
        async move { clean }
    })
    .await;
    settled(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_dropping_a_response_stream_stops_the_server_handler() {
    let cluster = Cluster::start(1, |_| counter(Arc::default())).await;
    let client = cluster.client().build().await.unwrap();

    // An endless count: the client reads a few, then drops the stream.
    let mut counted = client
        .server_stream::<u64, u64>("counter", "Counter.Count", &u64::MAX, CallOptions::new())
        .await
        .unwrap();
    // `Incoming` is a `futures::Stream`.
    let first: Vec<u64> = counted
        .by_ref()
        .take(10)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    drop(counted);
    settled(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_ending_a_client_stream_early_answers_and_stops_the_sender() {
    let seen = Arc::new(Seen::default());
    let cluster = Cluster::start(1, |_| counter(seen.clone())).await;
    let client = cluster.client().build().await.unwrap();

    let mut sum = client
        .client_stream::<u64, u64>("counter", "Counter.Sum", CallOptions::new())
        .await
        .unwrap();
    for i in 1..=3 {
        sum.send(&i).await.unwrap();
    }
    sum.send(&u64::MAX).await.unwrap();
    // The handler answered after the stop mark; later sends fail once its end is seen.
    let mut refused = None;
    for i in 0..N {
        if let Err(err) = within("a send", sum.send(&i)).await {
            refused = Some(err);
            break;
        }
    }
    let refused = refused.expect("sends fail after the server ended the stream");
    assert_eq!(refused.code, 499, "{refused}");
    assert_eq!(seen.received.load(Ordering::SeqCst), 4);
    settled(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_or_dropping_the_request_side_of_a_bidi_stream_ends_the_handler() {
    let seen = Arc::new(Seen::default());
    let cluster = Cluster::start(1, |_| counter(seen.clone())).await;
    let client = cluster.client().build().await.unwrap();

    // Cancel: the handler's requests end with an error, which it returns; the client sees it.
    let (mut out, mut input) = client
        .stream::<String, String>("counter", "Counter.Echo", CallOptions::new())
        .await
        .unwrap();
    out.send(&"a".to_owned()).await.unwrap();
    assert_eq!(input.recv().await.unwrap().unwrap(), "A");
    out.cancel("changed my mind").await;
    let err = within("the error", input.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, 499, "{err}");
    assert!(err.detail.contains("changed my mind"), "{err}");
    assert!(seen.ended_with_error.load(Ordering::SeqCst));
    assert!(within("the end", input.recv()).await.is_none());

    // Drop: the handler sees a clean end of requests and finishes the responses.
    let (mut out, mut input) = client
        .stream::<String, String>("counter", "Counter.Echo", CallOptions::new())
        .await
        .unwrap();
    out.send(&"b".to_owned()).await.unwrap();
    drop(out);
    assert_eq!(input.recv().await.unwrap().unwrap(), "B");
    assert!(within("the clean end", input.recv()).await.is_none());
    assert!(seen.ended_cleanly.load(Ordering::SeqCst));

    // Dropping both ends at once.
    let (out, input) = client
        .stream::<String, String>("counter", "Counter.Echo", CallOptions::new())
        .await
        .unwrap();
    drop((out, input));
    settled(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_its_deadline_ends_with_408_on_both_sides() {
    let cluster = Cluster::start(1, |_| counter(Arc::default())).await;
    let client = cluster.client().build().await.unwrap();

    let (mut out, mut input) = client
        .stream::<String, String>(
            "counter",
            "Counter.Echo",
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    out.send(&"x".to_owned()).await.unwrap();
    assert_eq!(input.recv().await.unwrap().unwrap(), "X");
    // Nothing more is sent: the deadline passes.
    let err = within("the deadline", input.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, 408, "{err}");
    drop(out);
    settled(&cluster).await;

    // A stream with no time at all is not even opened.
    let none = client
        .stream::<String, String>(
            "counter",
            "Counter.Echo",
            CallOptions::new().timeout(Duration::ZERO),
        )
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(none.code, 408, "{none}");
    cluster.shutdown().await;
}
