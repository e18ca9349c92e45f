//! Sources on external servers, run outside the network namespace when their URL is set:
//! etcd when `MICRO_TEST_ETCD_URL` is (with the `etcd` feature). Each test uses a key prefix of
//! its own and removes it.

#![allow(clippy::unwrap_used)]

#[cfg(feature = "etcd")]
mod etcd {
    use std::time::Duration;

    use etcd_client::{Client, DeleteOptions};
    use micro_config::{Config, Source};
    use micro_runtime::Node;
    use micro_testkit::within;
    use serde::Deserialize;
    use serde_json::json;

    fn url() -> Option<String> {
        let url = std::env::var("MICRO_TEST_ETCD_URL").ok();
        if url.is_none() {
            println!("skipped: MICRO_TEST_ETCD_URL is not set");
        }
        url
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Db {
        host: String,
        port: u16,
    }

    #[tokio::test]
    async fn etcd_keys_under_a_prefix_are_merged_and_watched() {
        let Some(url) = url() else { return };
        micro_testkit::init_tracing();
        let prefix = format!("micro-test/config-{}/", std::process::id());
        let mut etcd = Client::connect([url.as_str()], None).await.unwrap();
        etcd.put(format!("{prefix}db/host"), "etcd-host", None)
            .await
            .unwrap();
        etcd.put(format!("{prefix}db/port"), "2379", None)
            .await
            .unwrap();

        let node = Node::builder().start().await.unwrap();
        let config = Config::builder()
            .defaults(json!({"db": {"host": "localhost", "port": 1}, "log": "info"}))
            .source(Source::etcd([url.as_str()], prefix.as_str()))
            .overrides(["log=debug"])
            .start(&node)
            .await
            .unwrap();
        assert_eq!(
            config.get::<Db>("db").await.unwrap(),
            Db {
                host: "etcd-host".into(),
                port: 2379
            }
        );
        assert_eq!(
            config.entry("db.port").await.unwrap().source_of("db.port"),
            format!("etcd:{prefix}")
        );
        let mut db = config.watch::<Db>("db").await.unwrap();
        let mut log = config.watch::<String>("log").await.unwrap();

        // A change in etcd reaches the watch once; a key elsewhere fires nothing.
        etcd.put(format!("{prefix}db/port"), "2380", None)
            .await
            .unwrap();
        let next = within("the etcd change", db.next()).await.unwrap().unwrap();
        assert_eq!(
            next,
            Db {
                host: "etcd-host".into(),
                port: 2380
            }
        );
        etcd.put(format!("{prefix}other"), "x", None).await.unwrap();
        etcd.put(format!("{prefix}log"), "warn", None)
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(400), db.next())
                .await
                .is_err(),
            "nothing more for db"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(400), log.next())
                .await
                .is_err(),
            "the override still wins over etcd"
        );

        // A deleted key uncovers the default below it.
        etcd.delete(format!("{prefix}db/host"), None).await.unwrap();
        let next = within("the etcd delete", db.next()).await.unwrap().unwrap();
        assert_eq!(
            next,
            Db {
                host: "localhost".into(),
                port: 2380
            }
        );

        etcd.delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        node.shutdown().await.unwrap();
    }
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_needs_its_feature() {
    println!("skipped: the etcd tests need --features etcd");
}
