//! Layered, hot-reloaded config: built-in defaults, a TOML file, environment variables and
//! command-line overrides, merged in that order (later wins), read as typed structs and watched.
//!
//! The example writes its file in a temporary directory, reads the merged config, then edits
//! the file the way editors do (a new file renamed over the old one) and waits for the watch
//! to see the change. It exits by itself.
//!
//! Run it with `cargo run --example config`; try `APP_HTTP__WORKERS=16 cargo run --example
//! config` or `cargo run --example config -- http.port=9000` to see the layers above the file.

use std::time::Duration;

use micro::Node;
use micro::config::Config;
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[derive(Debug, Serialize, Deserialize)]
struct AppConfig {
    http: Http,
    database: Database,
}

#[derive(Debug, Serialize, Deserialize)]
struct Http {
    port: u16,
    workers: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Database {
    url: String,
    pool: u32,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            http: Http {
                port: 8080,
                workers: 4,
            },
            database: Database {
                // Filled from the environment when it is set: `${VAR:-default}`.
                url: "postgres://${DB_HOST:-localhost}/app".to_owned(),
                pool: 8,
            },
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    micro::logging::init();
    let node = Node::builder().name("config-demo").start().await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.toml");
    std::fs::write(&file, "[http]\nport = 8081\n")?;

    let config = Config::builder()
        .defaults(AppConfig::default())
        .file(&file)
        .env("APP")
        .overrides(std::env::args().skip(1))
        .start(&node)
        .await?;

    let app: AppConfig = config.scan().await?;
    println!("config: {app:?}");
    let port = config.entry("http.port").await?;
    println!(
        "http.port = {} (from {})",
        port.value.as_deref().unwrap_or("-"),
        port.source_of("http.port")
    );

    // Watch the http section, then edit the file as an editor would.
    let mut http = config.watch::<Http>("http").await?;
    let tmp = dir.path().join(".app.toml.swp");
    std::fs::write(&tmp, "[http]\nport = 8082\nworkers = 2\n")?;
    std::fs::rename(&tmp, &file)?;

    match tokio::time::timeout(Duration::from_secs(10), http.next()).await {
        Ok(Some(Ok(http))) => println!("http changed: {http:?}"),
        Ok(Some(Err(err))) => println!("http no longer reads: {err}"),
        Ok(None) => println!("the config actor went away"),
        Err(_) => return Err("the change was not seen within 10 s".into()),
    }

    node.shutdown().await?;
    Ok(())
}
