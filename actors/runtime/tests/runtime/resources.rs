//! An actor that owns an OS resource releases it when it panics or is killed, when its `stopped`
//! hook does not run: the resource lives in a field and is released by `Drop`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use micro_runtime::{
    Actor, ActorError, ChildSpec, Context, Node, Reply, Restart, SupervisionEvent,
};
use micro_testkit::{eventually, next_event};

enum Msg {
    Where(Reply<SocketAddr>),
    Panic,
    Hang,
}

/// Holds a listening socket and a helper thread; both are released in `Drop`.
struct Listener {
    socket: TcpListener,
    _worker: Worker,
}

/// A thread that runs until its guard is dropped.
struct Worker {
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(alive: Arc<AtomicBool>) -> Worker {
        alive.store(true, Ordering::SeqCst);
        let running = alive.clone();
        let thread = std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Worker {
            running: alive,
            thread: Some(thread),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Actor for Listener {
    type Msg = Msg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Where(reply) => {
                let _ = reply.send(self.socket.local_addr()?);
            }
            Msg::Panic => panic!("listener crashed"),
            Msg::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        }
        Ok(())
    }
}

fn spec(alive: &Arc<AtomicBool>) -> ChildSpec<Listener> {
    let alive = alive.clone();
    ChildSpec::new(move || Listener {
        socket: TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"),
        _worker: Worker::start(alive.clone()),
    })
    .named("listener")
    .restart(Restart::Temporary)
    .shutdown(Duration::from_millis(50))
}

#[tokio::test]
async fn a_panicking_actor_releases_its_socket_and_thread() {
    let node = Node::builder().start().await.unwrap();
    let alive = Arc::new(AtomicBool::new(false));
    let listener = node.spawn(spec(&alive)).await.unwrap();
    let port = listener
        .ask(Msg::Where, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        TcpListener::bind(port).is_err(),
        "the port is held while the actor runs"
    );

    let mut events = node.supervision_events();
    listener.send(Msg::Panic).unwrap();
    next_event(&mut events, "the listener exited", |e| {
        matches!(e, SupervisionEvent::ChildExited { .. })
    })
    .await;

    eventually("the port is free again", || async {
        TcpListener::bind(port).is_ok()
    })
    .await;
    eventually("the worker thread ended", || async {
        !alive.load(Ordering::SeqCst)
    })
    .await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_killed_actor_releases_its_socket_and_thread() {
    let node = Node::builder().start().await.unwrap();
    let alive = Arc::new(AtomicBool::new(false));
    let listener = node.spawn(spec(&alive)).await.unwrap();
    let port = listener
        .ask(Msg::Where, Duration::from_secs(5))
        .await
        .unwrap();

    // It hangs in a handler, so stopping it times out and it is killed.
    listener.send(Msg::Hang).unwrap();
    node.root()
        .unwrap()
        .stop_child(listener.id().unwrap())
        .await
        .unwrap();

    eventually("the port is free again", || async {
        TcpListener::bind(port).is_ok()
    })
    .await;
    eventually("the worker thread ended", || async {
        !alive.load(Ordering::SeqCst)
    })
    .await;
    node.shutdown().await.unwrap();
}
