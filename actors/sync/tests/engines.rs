//! Engine tests: the PostgreSQL backend when `MICRO_TEST_POSTGRES_URL` is set, the etcd backend
//! when `MICRO_TEST_ETCD_URL` is set (and the crate's features are on). They run outside the
//! network namespace (`cargo test -p micro-sync --all-features --test engines`), each on a
//! table or key prefix of its own that it removes.

#![allow(clippy::unwrap_used)]

#[cfg(any(feature = "postgres", feature = "etcd"))]
mod common {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use micro_runtime::Node;
    use micro_sync::{Sync as Locks, SyncError};

    /// A resource that refuses stale fencing tokens and counts overlaps.
    #[derive(Default)]
    pub(crate) struct Fenced {
        state: Mutex<(u64, usize)>,
        pub(crate) violations: AtomicUsize,
        pub(crate) writes: AtomicUsize,
    }

    impl Fenced {
        pub(crate) fn enter(&self, token: u64) {
            let mut state = self.state.lock().unwrap();
            if token < state.0 || state.1 > 0 {
                self.violations.fetch_add(1, Ordering::SeqCst);
            }
            state.0 = state.0.max(token);
            state.1 += 1;
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        pub(crate) fn leave(&self) {
            self.state.lock().unwrap().1 -= 1;
        }
    }

    /// Two nodes, each with its own backend actor on the same engine, 4 tasks each, 200
    /// acquisitions in all: no stale token, no overlap.
    pub(crate) async fn contention(a: &Locks, b: &Locks) {
        let resource = std::sync::Arc::new(Fenced::default());
        let taken = std::sync::Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for sync in [a, b] {
            for _ in 0..4 {
                let (sync, resource, taken) = (sync.clone(), resource.clone(), taken.clone());
                tasks.push(tokio::spawn(async move {
                    while taken.fetch_add(1, Ordering::SeqCst) < 200 {
                        let guard = sync
                            .lock("counter", Duration::from_secs(5), Duration::from_secs(60))
                            .await
                            .unwrap();
                        resource.enter(guard.token());
                        tokio::task::yield_now().await;
                        resource.leave();
                        guard.unlock().await.unwrap();
                    }
                }));
            }
        }
        micro_testkit::within_for(Duration::from_secs(120), "200 acquisitions", async {
            for task in tasks {
                task.await.unwrap();
            }
        })
        .await;
        assert_eq!(resource.writes.load(Ordering::SeqCst), 200);
        assert_eq!(resource.violations.load(Ordering::SeqCst), 0);
    }

    /// The holder's node stops (no release): the other node's waiter gets the lock within TTL
    /// + 1 s, with a higher token, after the old guard reported the loss.
    pub(crate) async fn dead_holder(
        ttl: Duration,
        holder_node: &Node,
        holder: &Locks,
        other: &Locks,
    ) {
        let held = holder.lock("job", ttl, Duration::ZERO).await.unwrap();
        assert!(other.try_lock("job", ttl).await.unwrap().is_none());
        let waiter = tokio::spawn({
            let other = other.clone();
            async move {
                let guard = other
                    .lock("job", ttl, Duration::from_secs(10))
                    .await
                    .unwrap();
                (guard, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = Instant::now();
        holder_node.shutdown().await.unwrap();
        let (next, at) = micro_testkit::within("the next holder", waiter)
            .await
            .unwrap();
        let took = at - killed;
        eprintln!("holder stopped → next holder after {took:?}");
        assert!(took <= ttl + Duration::from_secs(1), "took {took:?}");
        assert!(next.token() > held.token());
        assert!(held.is_lost());
    }

    /// Campaign, observe, resign hands over at once; terms increase.
    pub(crate) async fn election(a: &Locks, b: &Locks) {
        let a = a.clone().with_election_ttl(Duration::from_secs(30));
        let b = b.clone().with_election_ttl(Duration::from_secs(30));
        let mut observed = b.observe("primary").unwrap();
        assert_eq!(observed.next().await.unwrap(), None);
        let first = a.campaign("primary", "a").await.unwrap();
        let seen = micro_testkit::within("the onlooker sees a", observed.next())
            .await
            .unwrap();
        assert_eq!(seen.unwrap().candidate, "a");
        let waiting = tokio::spawn(async move { b.campaign("primary", "b").await.unwrap() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        let term = first.term();
        first.resign().await.unwrap();
        let second = micro_testkit::within_for(Duration::from_secs(5), "b leads", waiting)
            .await
            .unwrap();
        assert!(second.term() > term);
        assert_eq!(second.candidate(), "b");
        let leader = loop {
            if let Some(l) = micro_testkit::within("the onlooker sees b", observed.next())
                .await
                .unwrap()
                && l.candidate == "b"
            {
                break l;
            }
        };
        assert_eq!(leader.term, second.term());
        assert!(matches!(
            a.lock("x", Duration::ZERO, Duration::ZERO).await,
            Err(SyncError::Invalid(_))
        ));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::Duration;

    use micro_runtime::Node;
    use micro_sync::{PostgresConfig, PostgresSync};

    fn url(test: &str) -> Option<String> {
        let url = std::env::var("MICRO_TEST_POSTGRES_URL").ok();
        if url.is_none() {
            eprintln!("skipped {test}: MICRO_TEST_POSTGRES_URL is not set");
        }
        url
    }

    /// A table of the test's own, dropped (with its sequence) at the end.
    struct Table {
        url: String,
        name: String,
    }

    impl Table {
        fn new(url: &str, test: &str) -> Table {
            Table {
                url: url.to_owned(),
                name: format!("micro_sync_test_{test}_{}", std::process::id()),
            }
        }

        fn config(&self) -> PostgresConfig {
            PostgresConfig::new(&self.url)
                .table(&self.name)
                .poll_every(Duration::from_millis(20))
        }

        /// Drops the table now (`Drop` does it on every path, a failed assertion too).
        async fn drop_it(self) {}
    }

    impl Drop for Table {
        fn drop(&mut self) {
            let (url, name) = (self.url.clone(), self.name.clone());
            // Its own thread and runtime: this may run while a test's runtime unwinds.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    let conn = tokio::spawn(conn);
                    client
                        .batch_execute(&format!(
                            "DROP TABLE IF EXISTS {name}; DROP SEQUENCE IF EXISTS {name}_token"
                        ))
                        .await
                        .unwrap();
                    drop(client);
                    let _ = conn.await;
                });
            });
            let _ = cleanup.join();
        }
    }

    async fn two(table: &Table) -> (Node, Node, micro_sync::Sync, micro_sync::Sync) {
        let n1 = Node::builder().name("pg1").start().await.unwrap();
        let n2 = Node::builder().name("pg2").start().await.unwrap();
        let a = PostgresSync::start(&n1, table.config()).await.unwrap();
        let b = PostgresSync::start(&n2, table.config()).await.unwrap();
        (n1, n2, a, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_locks_exclude_each_other() {
        let Some(url) = url("postgres_locks_exclude_each_other") else {
            return;
        };
        let table = Table::new(&url, "excl");
        let (n1, n2, a, b) = two(&table).await;
        crate::common::contention(&a, &b).await;
        n1.shutdown().await.unwrap();
        n2.shutdown().await.unwrap();
        table.drop_it().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_dead_holder_is_replaced_and_tokens_survive_restarts() {
        let Some(url) = url("postgres_dead_holder_is_replaced_and_tokens_survive_restarts") else {
            return;
        };
        let table = Table::new(&url, "dead");
        let (n1, n2, a, b) = two(&table).await;
        crate::common::dead_holder(Duration::from_secs(1), &n1, &a, &b).await;
        // A fresh actor (as after a restart) continues the sequence.
        let first = b
            .try_lock("again", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        let before = first.token();
        first.unlock().await.unwrap();
        n2.shutdown().await.unwrap();
        let n3 = Node::builder().name("pg3").start().await.unwrap();
        let c = PostgresSync::start(&n3, table.config()).await.unwrap();
        let after = c
            .lock("again", Duration::from_secs(5), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(after.token() > before);
        after.unlock().await.unwrap();
        n3.shutdown().await.unwrap();
        table.drop_it().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_elections() {
        let Some(url) = url("postgres_elections") else {
            return;
        };
        let table = Table::new(&url, "elect");
        let (n1, n2, a, b) = two(&table).await;
        crate::common::election(&a, &b).await;
        n1.shutdown().await.unwrap();
        n2.shutdown().await.unwrap();
        table.drop_it().await;
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use std::time::Duration;

    use micro_runtime::Node;
    use micro_sync::{EtcdConfig, EtcdSync};

    fn url(test: &str) -> Option<String> {
        let url = std::env::var("MICRO_TEST_ETCD_URL").ok();
        if url.is_none() {
            eprintln!("skipped {test}: MICRO_TEST_ETCD_URL is not set");
        }
        url
    }

    /// A key prefix of the test's own, deleted at the end on every path.
    struct Prefix {
        url: String,
        prefix: String,
    }

    impl Prefix {
        fn new(url: &str, test: &str) -> Prefix {
            Prefix {
                url: url.to_owned(),
                prefix: format!("micro-sync-test/{test}-{}/", std::process::id()),
            }
        }

        fn config(&self) -> EtcdConfig {
            EtcdConfig::new(&self.url).prefix(&self.prefix)
        }
    }

    impl Drop for Prefix {
        fn drop(&mut self) {
            let (url, prefix) = (self.url.clone(), self.prefix.clone());
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let mut client = etcd_client::Client::connect([url], None).await.unwrap();
                    client
                        .delete(
                            prefix,
                            Some(etcd_client::DeleteOptions::new().with_prefix()),
                        )
                        .await
                        .unwrap();
                });
            });
            let _ = cleanup.join();
        }
    }

    async fn two(prefix: &Prefix) -> (Node, Node, micro_sync::Sync, micro_sync::Sync) {
        let n1 = Node::builder().name("etcd1").start().await.unwrap();
        let n2 = Node::builder().name("etcd2").start().await.unwrap();
        let a = EtcdSync::start(&n1, prefix.config()).await.unwrap();
        let b = EtcdSync::start(&n2, prefix.config()).await.unwrap();
        (n1, n2, a, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_locks_exclude_each_other() {
        let Some(url) = url("etcd_locks_exclude_each_other") else {
            return;
        };
        let prefix = Prefix::new(&url, "excl");
        let (n1, n2, a, b) = two(&prefix).await;
        crate::common::contention(&a, &b).await;
        n1.shutdown().await.unwrap();
        n2.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_dead_holder_is_replaced() {
        let Some(url) = url("etcd_dead_holder_is_replaced") else {
            return;
        };
        let prefix = Prefix::new(&url, "dead");
        let (n1, n2, a, b) = two(&prefix).await;
        // etcd's shortest lease is about 2 s.
        crate::common::dead_holder(Duration::from_secs(2), &n1, &a, &b).await;
        n2.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_elections() {
        let Some(url) = url("etcd_elections") else {
            return;
        };
        let prefix = Prefix::new(&url, "elect");
        let (n1, n2, a, b) = two(&prefix).await;
        crate::common::election(&a, &b).await;
        n1.shutdown().await.unwrap();
        n2.shutdown().await.unwrap();
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_engine_tests_need_the_feature() {
    eprintln!("skipped the PostgreSQL engine tests: built without the `postgres` feature");
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_engine_tests_need_the_feature() {
    eprintln!("skipped the etcd engine tests: built without the `etcd` feature");
}
