//! The config actor as users meet it: sources merged in order, typed reads and their errors,
//! watches, hot reload through each way editors and Kubernetes change files, an invalid file
//! then fixed, and another node reading and watching the same config.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use micro_config::{Config, ConfigError, Source, Watch};
use micro_runtime::Node;
use micro_testkit::{TestCluster, within};
use serde::Deserialize;
use serde_json::json;

const DEBOUNCE: Duration = Duration::from_millis(50);

/// Long enough for a second, wrong, update to arrive if there were one.
const QUIET: Duration = Duration::from_millis(400);

#[derive(Debug, Deserialize, PartialEq)]
struct Db {
    host: String,
    port: u16,
}

fn db(host: &str, port: u16) -> Db {
    Db {
        host: host.to_owned(),
        port,
    }
}

fn toml(host: &str, port: u16) -> String {
    format!("log = \"info\"\n[db]\nhost = \"{host}\"\nport = {port}\n")
}

async fn node() -> Node {
    micro_testkit::init_tracing();
    Node::builder().start().await.unwrap()
}

/// The next value of a watch, within the test bound.
async fn next<T: serde::de::DeserializeOwned>(watch: &mut Watch<T>) -> T {
    within("a config update", watch.next())
        .await
        .expect("the watch ended")
        .unwrap()
}

/// Asserts a watch stays quiet (no second update for one change).
async fn quiet<T: serde::de::DeserializeOwned + std::fmt::Debug>(watch: &mut Watch<T>) {
    if let Ok(item) = tokio::time::timeout(QUIET, watch.next()).await {
        panic!("unexpected update: {item:?}");
    }
}

/// A file-backed config on a fresh node, watched at `db`.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    node: Node,
    config: Config,
    db: Watch<Db>,
}

impl Fixture {
    /// `file` is the path the config reads, relative to the temp dir, written by `setup`.
    async fn new(file: &str, setup: impl FnOnce(&Path)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        setup(&root);
        let node = node().await;
        let config = Config::builder()
            .defaults(json!({"db": {"host": "localhost", "port": 1}}))
            .file(root.join(file))
            .debounce(DEBOUNCE)
            .start(&node)
            .await
            .unwrap();
        assert_eq!(config.get::<Db>("db").await.unwrap(), db("a", 1000));
        let db = config.watch::<Db>("db").await.unwrap();
        Fixture {
            _dir: dir,
            root,
            node,
            config,
            db,
        }
    }

    async fn sees(&mut self, expected: Db) {
        assert_eq!(next(&mut self.db).await, expected);
        quiet(&mut self.db).await;
        assert_eq!(self.config.get::<Db>("db").await.unwrap(), expected);
    }

    async fn shutdown(self) {
        self.node.shutdown().await.unwrap();
    }
}

fn write_app(root: &Path) {
    std::fs::write(root.join("app.toml"), toml("a", 1000)).unwrap();
}

#[tokio::test]
async fn sources_merge_in_the_order_added_and_reads_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(
        &file,
        "db:\n  host: file-host\n  port: 2\n  user: ${NO_SUCH_VAR_I18:-app}\nlog: info\n",
    )
    .unwrap();
    let node = node().await;
    let config = Config::builder()
        .defaults(json!({"db": {"host": "localhost", "port": 1, "pool": 4}, "log": "warn"}))
        .file(&file)
        .source(Source::env_vars(
            "APP",
            [("APP_DB__PORT", "3"), ("APP_LOG", "debug"), ("OTHER", "x")],
        ))
        .overrides(["db.port=4"])
        .start(&node)
        .await
        .unwrap();

    #[derive(Debug, Deserialize, PartialEq)]
    struct App {
        db: Full,
        log: String,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    struct Full {
        host: String,
        port: u16,
        pool: u32,
        user: String,
    }
    let app: App = config.scan().await.unwrap();
    assert_eq!(
        app,
        App {
            db: Full {
                host: "file-host".into(), // the file over the defaults
                port: 4,                  // overrides over env over the file
                pool: 4,                  // only the defaults set it
                user: "app".into(),       // ${VAR:-default}, unset
            },
            log: "debug".into(), // env over the file
        }
    );
    assert_eq!(config.get::<u16>("db.port").await.unwrap(), 4);
    assert_eq!(config.get::<Option<u16>>("db.nope").await.unwrap(), None);
    assert_eq!(
        config.get::<u16>("db.nope").await,
        Err(ConfigError::NotFound {
            path: "db.nope".into()
        })
    );

    // A value of the wrong type: the error names the path, the type and the source.
    let err = config.get::<u16>("db.host").await.unwrap_err();
    match &err {
        ConfigError::Decode {
            path,
            expected,
            source_name,
            ..
        } => {
            assert_eq!(path, "db.host");
            assert_eq!(expected, "u16");
            assert_eq!(source_name, &format!("file:{}", file.display()));
        }
        other => panic!("{other:?}"),
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Strict {
        port: String,
    }
    let err = config.get::<Strict>("db").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("db.port") && text.contains("overrides") && text.contains("Strict"),
        "{text}"
    );

    let sources = config.sources().await.unwrap();
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names[0], "defaults");
    assert_eq!(names[2..], ["env:APP", "overrides"]);
    assert!(sources.iter().all(|s| s.loaded && s.error.is_none()));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_source_fails_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = node().await;
    let missing = dir.path().join("missing.json");
    let err = Config::builder()
        .file(&missing)
        .start(&node)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Source { source_name, .. } if source_name.ends_with("missing.json")),
        "{err:?}"
    );
    let err = Config::builder()
        .file(dir.path().join("app.ini"))
        .start(&node)
        .await
        .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    let err = Config::builder()
        .overrides(["no-equals-sign"])
        .start(&node)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Source { source_name, .. } if source_name == "overrides"),
        "{err:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_file_written_in_place_fires_the_watch_once() {
    let mut fx = Fixture::new("app.toml", write_app).await;
    std::fs::write(fx.root.join("app.toml"), toml("b", 2000)).unwrap();
    fx.sees(db("b", 2000)).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn an_unrelated_change_fires_nothing_and_a_related_one_fires_once() {
    let mut fx = Fixture::new("app.toml", write_app).await;
    let mut log = fx.config.watch::<String>("log").await.unwrap();
    std::fs::write(
        fx.root.join("app.toml"),
        toml("a", 1000).replace("info", "debug"),
    )
    .unwrap();
    assert_eq!(next(&mut log).await, "debug");
    quiet(&mut fx.db).await;

    // Rewriting the same contents is no change at all.
    std::fs::write(
        fx.root.join("app.toml"),
        toml("a", 1000).replace("info", "debug"),
    )
    .unwrap();
    quiet(&mut log).await;

    std::fs::write(fx.root.join("app.toml"), toml("c", 3000)).unwrap();
    assert_eq!(next(&mut log).await, "info");
    fx.sees(db("c", 3000)).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn an_editor_write_then_rename_is_seen() {
    // vim (`backupcopy=no`) and most IDEs: write a new file, rename it over the old one.
    let mut fx = Fixture::new("app.toml", write_app).await;
    let tmp = fx.root.join(".app.toml.swp");
    std::fs::write(&tmp, toml("b", 2000)).unwrap();
    std::fs::rename(&tmp, fx.root.join("app.toml")).unwrap();
    fx.sees(db("b", 2000)).await;
    // And again: the new file (a new inode) is still watched.
    std::fs::write(&tmp, toml("c", 3000)).unwrap();
    std::fs::rename(&tmp, fx.root.join("app.toml")).unwrap();
    fx.sees(db("c", 3000)).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn truncate_then_write_is_seen_once_even_when_read_in_between() {
    use std::io::Write;
    let mut fx = Fixture::new("app.toml", write_app).await;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(fx.root.join("app.toml"))
        .unwrap();
    file.sync_all().unwrap();
    // Long enough for the empty file to be read: it is taken for a write in progress.
    tokio::time::sleep(DEBOUNCE * 4).await;
    file.write_all(toml("b", 2000).as_bytes()).unwrap();
    drop(file);
    fx.sees(db("b", 2000)).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn delete_then_recreate_is_seen_and_the_gap_keeps_the_last_contents() {
    let mut fx = Fixture::new("app.toml", write_app).await;
    let mut errors = fx.config.errors().await.unwrap();
    std::fs::remove_file(fx.root.join("app.toml")).unwrap();
    let error = within("the missing file reported", errors.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(error.source_name.ends_with("app.toml"), "{error:?}");
    assert_eq!(fx.config.get::<Db>("db").await.unwrap(), db("a", 1000));
    quiet(&mut fx.db).await;
    std::fs::write(fx.root.join("app.toml"), toml("b", 2000)).unwrap();
    fx.sees(db("b", 2000)).await;
    let status = &fx.config.sources().await.unwrap()[1];
    assert_eq!(status.error, None, "a good read clears the error");
    fx.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    // A ConfigMap volume: app.yaml → ..data/app.yaml, ..data → ..2026_01 (a timestamped dir).
    let mut fx = Fixture::new("app.yaml", |root| {
        std::fs::create_dir(root.join("..2026_01")).unwrap();
        std::fs::write(
            root.join("..2026_01/app.yaml"),
            "db:\n  host: a\n  port: 1000\n",
        )
        .unwrap();
        symlink("..2026_01", root.join("..data")).unwrap();
        symlink("..data/app.yaml", root.join("app.yaml")).unwrap();
    })
    .await;
    // The kubelet's update: a new dir, a new link, renamed over ..data, the old dir removed.
    let root = fx.root.clone();
    std::fs::create_dir(root.join("..2026_02")).unwrap();
    std::fs::write(
        root.join("..2026_02/app.yaml"),
        "db:\n  host: b\n  port: 2000\n",
    )
    .unwrap();
    symlink("..2026_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    // Seen from the swap alone (the file's own inode did not change)…
    fx.sees(db("b", 2000)).await;
    // …and the old dir's removal is no change.
    std::fs::remove_dir_all(root.join("..2026_01")).unwrap();
    quiet(&mut fx.db).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_keeps_the_last_good_config_until_fixed() {
    let mut fx = Fixture::new("app.toml", write_app).await;
    let mut errors = fx.config.errors().await.unwrap();
    std::fs::write(fx.root.join("app.toml"), "[db\nhost = ").unwrap();
    let error = within("the parse error reported", errors.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(error.source_name.ends_with("app.toml"), "{error:?}");
    assert_eq!(fx.config.get::<Db>("db").await.unwrap(), db("a", 1000));
    let status = &fx.config.sources().await.unwrap()[1];
    assert!(status.error.is_some());
    quiet(&mut fx.db).await;

    std::fs::write(fx.root.join("app.toml"), toml("b", 2000)).unwrap();
    fx.sees(db("b", 2000)).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_value_that_no_longer_decodes_is_an_error_item_and_the_watch_goes_on() {
    let mut fx = Fixture::new("app.toml", write_app).await;
    std::fs::write(
        fx.root.join("app.toml"),
        "[db]\nhost = \"a\"\nport = \"high\"\n",
    )
    .unwrap();
    let item = within("an update", fx.db.next()).await.unwrap();
    assert!(
        matches!(&item, Err(ConfigError::Decode { path, .. }) if path == "db.port"),
        "{item:?}"
    );
    std::fs::write(fx.root.join("app.toml"), toml("b", 2000)).unwrap();
    fx.sees(db("b", 2000)).await;
    fx.shutdown().await;
}

#[tokio::test]
async fn another_node_reads_and_watches_the_same_config() {
    micro_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"db": {"host": "a", "port": 1000}}"#).unwrap();
    let cluster = TestCluster::start(2).await;
    let (owner, reader) = (cluster.node(0), cluster.node(1));
    let local = Config::builder()
        .file(&file)
        .debounce(DEBOUNCE)
        .start(owner)
        .await
        .unwrap();
    let remote = Config::remote(reader, owner.id()).await.unwrap();
    assert_eq!(remote.get::<Db>("db").await.unwrap(), db("a", 1000));
    let mut remote_db = remote.watch::<Db>("db").await.unwrap();
    let mut local_db = local.watch::<Db>("db").await.unwrap();

    std::fs::write(&file, r#"{"db": {"host": "b", "port": 2000}}"#).unwrap();
    assert_eq!(next(&mut remote_db).await, db("b", 2000));
    assert_eq!(next(&mut local_db).await, db("b", 2000));
    quiet(&mut remote_db).await;
    assert_eq!(
        remote.entry("db.port").await.unwrap().source_of("db.port"),
        format!("file:{}", file.display())
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn two_nodes_share_a_store_backed_config() {
    use micro_store::{MemoryStore, Store, StoreConfig};
    micro_testkit::init_tracing();
    let cluster = TestCluster::start(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let store = MemoryStore::start(a, StoreConfig::default()).await.unwrap();
    let settings = store.table("settings");
    settings.put("app/db/host", "shared").await.unwrap();
    settings.put("app/db/port", &5432).await.unwrap();
    settings.put("other/db/port", &1).await.unwrap();

    // Each node has its own config actor on the same store (b reaches it over QUIC).
    let start = |node: &Node, store: Store| {
        let node = node.clone();
        async move {
            Config::builder()
                .defaults(json!({"db": {"host": "localhost", "port": 1}, "log": "info"}))
                .source(Source::store(store.table("settings"), "app/"))
                .start(&node)
                .await
                .unwrap()
        }
    };
    let on_a = start(a, store.clone()).await;
    let on_b = start(b, Store::remote(b, a.id()).await.unwrap()).await;
    for config in [&on_a, &on_b] {
        assert_eq!(config.get::<Db>("db").await.unwrap(), db("shared", 5432));
        assert_eq!(
            config.entry("db.port").await.unwrap().source_of("db.port"),
            "store:app/"
        );
    }
    let mut db_a = on_a.watch::<Db>("db").await.unwrap();
    let mut db_b = on_b.watch::<Db>("db").await.unwrap();

    // One write, seen once by both; writes outside the prefix are not seen.
    settings.put("other/db/port", &2).await.unwrap();
    settings.put("app/db/port", &6543).await.unwrap();
    assert_eq!(next(&mut db_a).await, db("shared", 6543));
    assert_eq!(next(&mut db_b).await, db("shared", 6543));
    quiet(&mut db_a).await;
    quiet(&mut db_b).await;

    // A delete uncovers the default.
    settings.delete("app/db/host").await.unwrap();
    assert_eq!(next(&mut db_b).await, db("localhost", 6543));
    assert_eq!(next(&mut db_a).await, db("localhost", 6543));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_store_source_whose_watch_ends_is_read_and_watched_again() {
    use micro_store::{MemoryStore, StoreConfig};
    let node = node().await;
    let store = MemoryStore::start(&node, StoreConfig::default())
        .await
        .unwrap();
    store.put("app/db/host", "a").await.unwrap();
    store.put("app/db/port", &1000).await.unwrap();
    let config = Config::builder()
        .source(Source::store(store.clone(), "app/"))
        .start(&node)
        .await
        .unwrap();
    let mut db_watch = config.watch::<Db>("db").await.unwrap();
    let mut errors = config.errors().await.unwrap();

    // The store restarts (its memory engine keeps the records): the watch ends, is reported…
    let root = node.supervisor("root").await.unwrap();
    root.restart_child("store").await.unwrap();
    let error = within("the ended watch reported", errors.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(error.source_name, "store:app/");
    assert_eq!(config.get::<Db>("db").await.unwrap(), db("a", 1000));

    // …and the source is read and watched again: a later write is seen, once.
    micro_testkit::eventually("the store source watched again", || async {
        config.sources().await.unwrap()[0].error.is_none()
    })
    .await;
    store.put("app/db/port", &2000).await.unwrap();
    assert_eq!(next(&mut db_watch).await, db("a", 2000));
    quiet(&mut db_watch).await;
    node.shutdown().await.unwrap();
}
