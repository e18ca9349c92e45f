//! Auth on services end to end: rules checked where a call is accepted (401/403, public
//! endpoints, `Debug.Health` public by default), the caller's account in the handler, a client
//! that carries and refreshes its token, and a handler calling on behalf of its caller.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::auth::{Auth, AuthActor, AuthConfig, Credentials, GenerateOptions, Resource, Rule};
use micro::registry::{MemoryRegistry, Registry};
use micro::{
    CallContext, CallOptions, Client, Endpoint, HEALTH_ENDPOINT, Health, Service, ServiceError,
};
use micro_store::{MemoryStore, Store, StoreConfig};
use micro_testkit::{TestCluster, within};

fn fast(config: AuthConfig) -> AuthConfig {
    let mut config = config;
    config.hash_iterations = 1_000;
    config
}

/// Node 0: registry, store, the issuing auth and the clients. Node 1: its own auth (verifying
/// in place) and the services.
struct Setup {
    nodes: TestCluster,
    registry: Registry,
    issuer: Auth,
    replica_auth: Auth,
}

async fn setup(access_ttl: Duration) -> Setup {
    let nodes = TestCluster::start(2).await;
    let (client_node, replica) = (nodes.node(0), nodes.node(1));
    let registry = Registry::new(client_node.spawn(MemoryRegistry::spec()).await.unwrap());
    let store = MemoryStore::start(client_node, StoreConfig::default())
        .await
        .unwrap();
    let issuer = AuthActor::start(
        client_node,
        fast(AuthConfig::new(store)).access_ttl(access_ttl),
    )
    .await
    .unwrap();
    let remote_store = Store::remote(replica, client_node.id()).await.unwrap();
    let replica_auth = AuthActor::start(replica, fast(AuthConfig::new(remote_store)))
        .await
        .unwrap();
    Setup {
        nodes,
        registry,
        issuer,
        replica_auth,
    }
}

/// Answers the caller's account id ("" without one).
fn whoami(name: &str) -> Endpoint {
    Endpoint::unary(name, |ctx: CallContext, _: ()| async move {
        Ok::<_, ServiceError>(ctx.account().map(|a| a.id.clone()).unwrap_or_default())
    })
}

/// Answers the calling node's id, as the link proved it.
fn which_node(name: &str) -> Endpoint {
    Endpoint::unary(name, |ctx: CallContext, _: ()| async move {
        Ok::<_, ServiceError>(ctx.peer().map(|n| n.to_string()).unwrap_or_default())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_checked_against_the_rules() {
    let s = setup(Duration::from_secs(60)).await;
    for rule in [
        Rule::grant("staff", "staff", Resource::service("shop", "*")),
        Rule::deny(
            "no-delete",
            "staff",
            Resource::service("shop", "Orders.Delete"),
        )
        .priority(10),
        Rule::grant("catalog", "", Resource::service("shop", "Catalog.*")),
    ] {
        s.issuer.grant(rule).await.unwrap();
    }
    s.issuer
        .generate("ada", GenerateOptions::new().scopes(["staff"]).secret("a"))
        .await
        .unwrap();
    s.issuer
        .generate("guest", GenerateOptions::new().secret("g"))
        .await
        .unwrap();
    let shop = Service::new("shop")
        .endpoint(whoami("Orders.List"))
        .endpoint(whoami("Orders.Delete"))
        .endpoint(whoami("Catalog.List"))
        .endpoint(which_node("Catalog.Caller"))
        .auth(s.replica_auth.clone())
        .registry(s.registry.clone())
        .start(s.nodes.node(1))
        .await
        .unwrap();
    let client_node = s.nodes.node(0);
    let anonymous = Client::builder(client_node)
        .registry(s.registry.clone())
        .build()
        .await
        .unwrap();
    let ada = Client::builder(client_node)
        .registry(s.registry.clone())
        .wrap(Credentials::new(s.issuer.clone(), "ada", "a"))
        .build()
        .await
        .unwrap();
    let guest = Client::builder(client_node)
        .registry(s.registry.clone())
        .wrap(Credentials::new(s.issuer.clone(), "guest", "g"))
        .build()
        .await
        .unwrap();

    // The replica's auth learns the rules and the issuer's key from the store.
    within("ada is let in", async {
        loop {
            let answer: Result<String, _> = ada.call("shop", "Orders.List", &()).await;
            if answer.as_deref() == Ok("ada") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Public: no account needed; the handler sees none.
    let who: String = anonymous.call("shop", "Catalog.List", &()).await.unwrap();
    assert_eq!(who, "");
    // The handler knows the calling node from its link's certificate.
    let node: String = anonymous.call("shop", "Catalog.Caller", &()).await.unwrap();
    assert_eq!(node, client_node.id().to_string());
    // Debug.Health is public by default.
    let health: Health = anonymous.call("shop", HEALTH_ENDPOINT, &()).await.unwrap();
    assert_eq!(health.service, "shop");
    // No account: 401, Go Micro's words, naming no rule.
    let err = anonymous
        .call::<_, String>("shop", "Orders.List", &())
        .await
        .unwrap_err();
    assert_eq!((err.code, err.id.as_str()), (401, "shop"));
    assert_eq!(err.detail, "Unauthorized call made to shop:Orders.List");
    // A bad token is no account: 401 too.
    let err = anonymous
        .call_with::<_, String>(
            "shop",
            "Orders.List",
            &(),
            CallOptions::new().token("not-a-token"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 401);
    // A deny above a grant: 403 with an account.
    let err = ada
        .call::<_, String>("shop", "Orders.Delete", &())
        .await
        .unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(
        err.detail,
        "Forbidden call made to shop:Orders.Delete by ada"
    );
    assert!(!err.detail.contains("no-delete"));
    // An account without the scope: 403.
    let err = guest
        .call::<_, String>("shop", "Orders.List", &())
        .await
        .unwrap_err();
    assert_eq!(err.code, 403);
    // Revoking the account shuts ada out within 2 s (its cached token and its refresh).
    s.issuer.revoke_account("ada").await.unwrap();
    micro_testkit::within_for(Duration::from_secs(2), "ada is shut out", async {
        loop {
            let answer: Result<String, ServiceError> = ada.call("shop", "Orders.List", &()).await;
            if answer.is_err_and(|e| e.code == 401) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    shop.stop().await.unwrap();
    s.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_calls_on_behalf_of_its_caller() {
    let s = setup(Duration::from_secs(60)).await;
    s.issuer
        .grant(Rule::grant("any", "*", Resource::service("*", "*")))
        .await
        .unwrap();
    s.issuer
        .generate("ada", GenerateOptions::new().secret("a"))
        .await
        .unwrap();
    let replica = s.nodes.node(1);
    let backend = Service::new("backend")
        .endpoint(whoami("Who.Am"))
        .auth(s.replica_auth.clone())
        .registry(s.registry.clone())
        .start(replica)
        .await
        .unwrap();
    let inner = Client::builder(replica)
        .registry(s.registry.clone())
        .build()
        .await
        .unwrap();
    let front = Service::new("front")
        .endpoint(Endpoint::unary(
            "Front.Who",
            move |ctx: CallContext, delegate: bool| {
                let inner = inner.clone();
                async move {
                    let options = if delegate {
                        CallOptions::new().on_behalf_of(&ctx)
                    } else {
                        CallOptions::new()
                    };
                    let answer = inner
                        .call_with::<_, String>("backend", "Who.Am", &(), options)
                        .await?;
                    Ok::<_, ServiceError>(answer.message)
                }
            },
        ))
        .auth(s.replica_auth.clone())
        .registry(s.registry.clone())
        .start(replica)
        .await
        .unwrap();
    let ada = Client::builder(s.nodes.node(0))
        .registry(s.registry.clone())
        .wrap(Credentials::new(s.issuer.clone(), "ada", "a"))
        .build()
        .await
        .unwrap();
    let seen = within("the nested call sees ada", async {
        loop {
            if let Ok(who) = ada.call::<_, String>("front", "Front.Who", &true).await {
                break who;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(seen, "ada");
    // Without delegation the nested call has no account: the backend says 401.
    let err = ada
        .call::<_, String>("front", "Front.Who", &false)
        .await
        .unwrap_err();
    assert_eq!(err.code, 401);
    front.stop().await.unwrap();
    backend.stop().await.unwrap();
    s.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refreshes_its_token_before_it_expires() {
    // Access tokens live 1.2 s; the client renews at half their life.
    let s = setup(Duration::from_millis(1200)).await;
    s.issuer
        .grant(Rule::grant("any", "*", Resource::service("*", "*")))
        .await
        .unwrap();
    s.issuer
        .generate("svc", GenerateOptions::new().service().secret("x"))
        .await
        .unwrap();
    let tokens = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = tokens.clone();
    let echo = Service::new("echo")
        .endpoint(Endpoint::unary(
            "Echo.Token",
            move |ctx: CallContext, _: ()| {
                let seen = seen.clone();
                async move {
                    if let Some(t) = ctx.header(micro::auth::AUTHORIZATION_HEADER) {
                        seen.lock().unwrap().insert(t.to_owned());
                    }
                    Ok::<_, ServiceError>(ctx.account().is_some())
                }
            },
        ))
        .auth(s.replica_auth.clone())
        .registry(s.registry.clone())
        .start(s.nodes.node(1))
        .await
        .unwrap();
    let client = Client::builder(s.nodes.node(0))
        .registry(s.registry.clone())
        .wrap(Credentials::new(s.issuer.clone(), "svc", "x"))
        .build()
        .await
        .unwrap();
    within("the first call", async {
        while client.call::<_, bool>("echo", "Echo.Token", &()).await != Ok(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Three token lifetimes of calls: every one carries a valid token.
    let until = tokio::time::Instant::now() + Duration::from_millis(3600);
    while tokio::time::Instant::now() < until {
        let ok: bool = client.call("echo", "Echo.Token", &()).await.unwrap();
        assert!(ok, "every call carries a valid token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tokens.lock().unwrap().len() >= 3, "renewed before expiry");
    echo.stop().await.unwrap();
    s.nodes.shutdown().await;
}
