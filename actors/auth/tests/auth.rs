//! Auth across nodes: one store (node 0), an issuing auth (node 1) and a verifying auth
//! (node 2) that never links to the issuer; tokens good and bad, refresh, revocation, rules.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use micro_auth::{Auth, AuthActor, AuthConfig, AuthError, Denied, GenerateOptions, Resource, Rule};
use micro_runtime::Node;
use micro_store::{MemoryStore, Store, StoreConfig};
use micro_testkit::{TestCluster, eventually, within_for};

/// Fast hashing for tests (the default is 600,000 iterations).
fn config(store: Store) -> AuthConfig {
    let mut config = AuthConfig::new(store);
    config.hash_iterations = 1_000;
    config
}

struct Setup {
    cluster: TestCluster,
    issuer: Auth,
    verifier: Auth,
}

/// Node 0 holds the store; nodes 1 and 2 link to node 0 only.
async fn setup(issuer_config: impl Fn(AuthConfig) -> AuthConfig) -> Setup {
    let cluster = TestCluster::builder(3).link(false).start().await;
    let store_node = cluster.node(0);
    MemoryStore::start(store_node, StoreConfig::default())
        .await
        .unwrap();
    let addr = store_node.local_addr().unwrap();
    let mut handles = Vec::new();
    for i in [1, 2] {
        let node = cluster.node(i);
        node.connect(addr).await.unwrap();
        let store = Store::remote(node, store_node.id()).await.unwrap();
        let config = if i == 1 {
            issuer_config(config(store))
        } else {
            config(store)
        };
        handles.push(AuthActor::start(node, config).await.unwrap());
    }
    let verifier = handles.pop().unwrap();
    let issuer = handles.pop().unwrap();
    Setup {
        cluster,
        issuer,
        verifier,
    }
}

fn never_linked(a: &Node, b: &Node) -> bool {
    !a.peers().iter().any(|p| p.node == b.id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_node_is_verified_on_a_node_that_never_talked_to_the_issuer() {
    let Setup {
        cluster,
        issuer,
        verifier,
    } = setup(|c| c).await;
    let ada = issuer
        .generate(
            "ada",
            GenerateOptions::new()
                .scopes(["staff"])
                .secret("s3cret")
                .metadata("team", "ops"),
        )
        .await
        .unwrap();
    assert_eq!(ada.secret, "s3cret", "the caller gets the secret back once");
    assert!(matches!(
        issuer.generate("ada", GenerateOptions::new()).await,
        Err(AuthError::Exists(_))
    ));
    assert!(matches!(
        issuer.token("ada", "wrong").await,
        Err(AuthError::InvalidCredentials(_))
    ));
    let token = issuer.token("ada", "s3cret").await.unwrap();

    // The verifier learns the issuer's key from the store within its sync period.
    let seen = within_for(
        Duration::from_secs(5),
        "the verifier knows the key",
        async {
            loop {
                if let Some(account) = verifier.inspect_local(&token.access_token) {
                    return account;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert_eq!(seen.id, "ada");
    assert_eq!(seen.scopes, ["staff"]);
    assert_eq!(seen.metadata.get("team").map(String::as_str), Some("ops"));
    assert!(seen.secret.is_empty(), "inspect never shows a secret");
    assert!(never_linked(cluster.node(2), cluster.node(1)));

    // The same through a remote handle (a message to node 2's auth).
    let remote = Auth::remote(cluster.node(0), cluster.node(2).id())
        .await
        .unwrap();
    assert_eq!(remote.inspect(&token.access_token).await.unwrap().id, "ada");

    // Refresh gives a new pair; an access token is not a refresh token.
    let renewed = issuer.refresh(&token.refresh_token).await.unwrap();
    assert!(verifier.inspect(&renewed.access_token).await.is_ok());
    assert_eq!(
        issuer.refresh(&token.access_token).await,
        Err(AuthError::InvalidToken)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_names_no_account() {
    let Setup {
        cluster,
        issuer,
        verifier,
    } = setup(|c| c.access_ttl(Duration::from_millis(1500))).await;
    issuer
        .generate("ada", GenerateOptions::new().secret("s3cret"))
        .await
        .unwrap();
    let token = issuer.token("ada", "s3cret").await.unwrap();
    eventually("the verifier knows the key", || async {
        verifier.inspect_local(&token.access_token).is_some()
    })
    .await;

    // Missing and malformed.
    assert_eq!(verifier.inspect("").await, Err(AuthError::InvalidToken));
    assert_eq!(
        verifier.inspect("eyJhbGciOiJFZERTQSJ9.e30.AAAA").await,
        Err(AuthError::InvalidToken)
    );
    // Tampered: one character of the payload changed.
    let mut parts: Vec<String> = token.access_token.split('.').map(str::to_owned).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    assert_eq!(
        verifier.inspect(&parts.join(".")).await,
        Err(AuthError::InvalidToken)
    );
    // Foreign-signed: a token from another cluster's auth (its own store and key).
    let stranger = Node::builder().start().await.unwrap();
    let store = MemoryStore::start(&stranger, StoreConfig::default())
        .await
        .unwrap();
    let foreign = AuthActor::start(&stranger, config(store)).await.unwrap();
    foreign
        .generate("ada", GenerateOptions::new().secret("s3cret"))
        .await
        .unwrap();
    let forged = foreign.token("ada", "s3cret").await.unwrap();
    assert_eq!(
        verifier.inspect(&forged.access_token).await,
        Err(AuthError::InvalidToken)
    );
    stranger.shutdown().await.unwrap();
    // Expired (it was cached as valid: the cache honours expiry).
    eventually("the token expires", || async {
        verifier.inspect_local(&token.access_token).is_none()
    })
    .await;
    assert!(issuer.refresh(&token.refresh_token).await.is_ok());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_account_or_rule_takes_effect_on_every_node_within_two_seconds() {
    let Setup {
        cluster,
        issuer,
        verifier,
    } = setup(|c| c).await;
    let shop = Resource::service("shop", "Orders.List");
    issuer
        .grant(Rule::grant(
            "staff",
            "staff",
            Resource::service("shop", "*"),
        ))
        .await
        .unwrap();
    issuer
        .generate("ada", GenerateOptions::new().scopes(["staff"]).secret("s"))
        .await
        .unwrap();
    let token = issuer.token("ada", "s").await.unwrap();
    eventually("the verifier knows the key and the rule", || async {
        let ada = verifier.inspect_local(&token.access_token);
        ada.is_some() && verifier.verify(ada.as_ref(), &shop).is_ok()
    })
    .await;
    assert_eq!(verifier.verify(None, &shop), Err(Denied::Unauthorized));
    assert_eq!(issuer.rules().await.unwrap().len(), 1);

    // A rule revoked: within 2 s on the other node.
    assert!(issuer.revoke("staff").await.unwrap());
    within_for(
        Duration::from_secs(2),
        "the rule is gone on node 2",
        async {
            loop {
                let ada = verifier.inspect_local(&token.access_token);
                if verifier.verify(ada.as_ref(), &shop) == Err(Denied::Forbidden) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;

    // An account revoked: its token (cached as valid) fails within 2 s on the other node,
    // and it cannot refresh.
    assert!(issuer.revoke_account("ada").await.unwrap());
    within_for(
        Duration::from_secs(2),
        "the account is revoked on node 2",
        async {
            while verifier.inspect_local(&token.access_token).is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    assert!(
        issuer.inspect_local(&token.access_token).is_none(),
        "at once on the issuer"
    );
    assert_eq!(
        issuer.refresh(&token.refresh_token).await,
        Err(AuthError::InvalidToken)
    );
    assert!(matches!(
        issuer.token("ada", "s").await,
        Err(AuthError::InvalidCredentials(_))
    ));
    // Made again, the account gets tokens that work; the old ones stay revoked.
    issuer
        .generate("ada", GenerateOptions::new().secret("s2"))
        .await
        .unwrap();
    let fresh = issuer.token("ada", "s2").await.unwrap();
    eventually("the new token is valid on node 2", || async {
        verifier.inspect_local(&fresh.access_token).is_some()
    })
    .await;
    assert!(verifier.inspect_local(&token.access_token).is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_survives_a_restart_in_its_file() {
    let dir = std::env::temp_dir().join(format!("micro-auth-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = dir.join("node.key");
    let node = Node::builder().start().await.unwrap();
    let store = MemoryStore::start(&node, StoreConfig::default())
        .await
        .unwrap();
    let auth = AuthActor::start(&node, config(store.clone()).key_file(&key))
        .await
        .unwrap();
    auth.generate("svc", GenerateOptions::new().service().secret("x"))
        .await
        .unwrap();
    let token = auth.token("svc", "x").await.unwrap();
    // The auth actor restarts (same node, same key file).
    node.root().unwrap().restart_child("auth").await.unwrap();
    let again = Auth::local(&node).await.unwrap();
    assert_eq!(again.inspect(&token.access_token).await.unwrap().id, "svc");
    // One key published: the restarted actor signs with the key from its file.
    let keys = store.database(micro_auth::AUTH_DATABASE).table("keys");
    assert_eq!(
        keys.list(&micro_store::Query::all()).await.unwrap().len(),
        1
    );
    let token = again.token("svc", "x").await.unwrap();
    assert!(again.inspect(&token.access_token).await.is_ok());
    node.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
