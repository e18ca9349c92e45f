//! The etcd backend: each grant is an etcd lease with the caller's TTL, held through etcd's Lock
//! API (locks) or Election API (elections); renewal is a keep-alive of that lease, release its
//! revocation. The actor is glue: each request runs in a task it owns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, LockOptions};
use micro_runtime::{AbortOnDrop, Actor, ActorError, ChildSpec, Context, Node, StreamSender};
use tokio::time::Instant;

use crate::{Lease, SYNC_NAME, Sync, SyncError, SyncMsg};

const ENGINE: &str = "etcd";

fn etcd(e: impl std::fmt::Display) -> SyncError {
    SyncError::backend(ENGINE, e)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where the etcd backend keeps its keys.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    prefix: String,
}

impl EtcdConfig {
    /// The etcd cluster at `endpoint` (`http://127.0.0.1:2379`), keys under `micro/sync/`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        EtcdConfig {
            endpoints: vec![endpoint.into()],
            prefix: "micro/sync/".to_owned(),
        }
    }

    /// One more endpoint of the same cluster.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// The prefix of every key the backend writes (`micro/sync/` by default).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// Leases granted by this actor: (name, token) → etcd lease id.
type Granted = Arc<Mutex<HashMap<(String, u64), i64>>>;

/// The etcd sync actor. Its guarantees are in the crate docs.
pub struct EtcdSync {
    config: EtcdConfig,
    client: Option<Client>,
    granted: Granted,
    tasks: Vec<AbortOnDrop>,
}

impl std::fmt::Debug for EtcdSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSync")
            .field("endpoints", &self.config.endpoints)
            .field("prefix", &self.config.prefix)
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl EtcdSync {
    /// A sync actor on the etcd cluster `config` names (it connects when it starts).
    pub fn new(config: EtcdConfig) -> Self {
        EtcdSync {
            config,
            client: None,
            granted: Granted::default(),
            tasks: Vec::new(),
        }
    }

    /// A child spec named `"sync"`.
    pub fn spec(config: EtcdConfig) -> ChildSpec<EtcdSync> {
        ChildSpec::new(move || EtcdSync::new(config.clone())).named(SYNC_NAME)
    }

    /// Starts an etcd sync actor on `node` (supervised, named and exposed as `"sync"`); fails
    /// if etcd cannot be reached.
    pub async fn start(node: &Node, config: EtcdConfig) -> Result<Sync, SyncError> {
        let addr = node.spawn(EtcdSync::spec(config)).await?;
        node.expose::<SyncMsg>(SYNC_NAME)?;
        Ok(Sync::new(addr))
    }

    fn run(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(AbortOnDrop::spawn(task));
    }
}

/// Acquires `key` (a lock, or an election when `election`), keeping the lease alive while it
/// waits; `received` is when the request arrived.
#[allow(clippy::too_many_arguments)]
async fn acquire(
    mut client: Client,
    granted: Granted,
    name: String,
    key: String,
    holder: String,
    ttl_ms: u64,
    wait_ms: u64,
    received: Instant,
) -> Result<Lease, SyncError> {
    if name.is_empty() || ttl_ms == 0 {
        return Err(SyncError::Invalid(
            "a lease needs a name and a TTL above zero".to_owned(),
        ));
    }
    let election = name.starts_with("election/");
    let timeout = |waited: Duration| SyncError::Timeout {
        name: name.clone(),
        waited_ms: millis(waited),
    };
    if wait_ms == 0 && leader(&mut client, &key).await?.is_some() {
        return Err(timeout(Duration::ZERO));
    }
    // etcd counts TTLs in whole seconds (and may raise a short one to its minimum): never
    // shorter than asked.
    let ttl_s = i64::try_from(ttl_ms.div_ceil(1000))
        .unwrap_or(i64::MAX)
        .max(1);
    let mut refreshed = Instant::now();
    let id = client.lease_grant(ttl_s, None).await.map_err(etcd)?.id();
    // A try that raced with another holder still gives up quickly.
    let deadline = received + Duration::from_millis(wait_ms.max(1000));
    let (mut keeper, mut alive) = client.lease_keep_alive(id).await.map_err(etcd)?;
    let mut other = client.clone();
    let won = async move {
        if election {
            let mut resp = other.campaign(key, holder.clone(), id).await?;
            Ok::<_, etcd_client::Error>((resp.take_leader().map_or(0, |l| l.rev()), holder))
        } else {
            let resp = other
                .lock(key, Some(LockOptions::new().with_lease(id)))
                .await?;
            Ok((resp.header().map_or(0, |h| h.revision()), holder))
        }
    };
    tokio::pin!(won);
    let every = Duration::from_millis(ttl_ms / 3).max(Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            result = &mut won => break result.map_err(etcd),
            () = tokio::time::sleep_until(refreshed + every) => {
                let sent = Instant::now();
                if keeper.keep_alive().await.is_ok() && alive.message().await.is_ok_and(|m| m.is_some_and(|m| m.ttl() > 0)) {
                    refreshed = sent;
                }
            }
            () = tokio::time::sleep_until(deadline) => break Err(timeout(received.elapsed())),
        }
    };
    match outcome {
        Ok((revision, holder)) => {
            let token = u64::try_from(revision).map_err(etcd)?;
            granted
                .lock()
                .map_err(etcd)?
                .insert((name.clone(), token), id);
            Ok(Lease {
                name,
                holder,
                token,
                ttl_ms,
                // The caller's lower bound of the lease's last refresh.
                waited_ms: millis(refreshed.saturating_duration_since(received)),
            })
        }
        Err(e) => {
            // Revoking the lease removes the waiting key too.
            let _ = client.lease_revoke(id).await;
            Err(e)
        }
    }
}

/// The current holder of `key` (the owner of the lowest creation revision under it).
async fn leader(client: &mut Client, key: &str) -> Result<Option<(String, u64)>, SyncError> {
    match client.leader(key).await {
        Ok(mut resp) => Ok(resp.take_kv().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision().unsigned_abs(),
            )
        })),
        Err(e) if e.to_string().contains("no leader") => Ok(None),
        Err(e) => Err(etcd(e)),
    }
}

fn lease_of(name: &str, found: Option<(String, u64)>) -> Option<Lease> {
    found.map(|(holder, token)| Lease {
        name: name.to_owned(),
        holder,
        token,
        ttl_ms: 0,
        waited_ms: 0,
    })
}

async fn renew(
    mut client: Client,
    id: Option<i64>,
    name: String,
    token: u64,
) -> Result<(), SyncError> {
    let not_held = || SyncError::NotHeld {
        name: name.clone(),
        token,
    };
    let id = id.ok_or_else(not_held)?;
    let (mut keeper, mut alive) = client.lease_keep_alive(id).await.map_err(etcd)?;
    keeper.keep_alive().await.map_err(etcd)?;
    match alive.message().await.map_err(etcd)? {
        Some(resp) if resp.ttl() > 0 => Ok(()),
        _ => Err(not_held()),
    }
}

async fn observe(
    mut client: Client,
    name: String,
    key: String,
    mut events: StreamSender<Option<Lease>>,
) {
    let mut last = leader(&mut client, &key).await.unwrap_or_default();
    if events.send(lease_of(&name, last.clone())).await.is_err() {
        return;
    }
    let Ok(mut stream) = client.observe(key.as_str()).await else {
        return;
    };
    while let Ok(Some(mut resp)) = stream.message().await {
        let found = resp.take_kv().map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision().unsigned_abs(),
            )
        });
        if found.is_some() && found != last {
            last = found.clone();
            if events.send(lease_of(&name, found)).await.is_err() {
                return;
            }
        }
    }
    let _ = events.finish().await;
}

impl Actor for EtcdSync {
    type Msg = SyncMsg;

    async fn started(&mut self, _ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let mut client = Client::connect(&self.config.endpoints, None)
            .await
            .map_err(|e| ActorError::from(format!("etcd connect: {e}")))?;
        client
            .status()
            .await
            .map_err(|e| ActorError::from(format!("etcd status: {e}")))?;
        self.client = Some(client);
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: SyncMsg) -> Result<(), ActorError> {
        let client = self.client.clone().ok_or("etcd: not connected")?;
        let key = |name: &str| format!("{}{name}", self.config.prefix);
        match msg {
            SyncMsg::Acquire {
                name,
                holder,
                ttl_ms,
                wait_ms,
                reply,
            } => {
                let (granted, key, received) = (self.granted.clone(), key(&name), Instant::now());
                self.run(async move {
                    let outcome = acquire(
                        client.clone(),
                        granted.clone(),
                        name,
                        key,
                        holder,
                        ttl_ms,
                        wait_ms,
                        received,
                    )
                    .await;
                    let undelivered = outcome.as_ref().ok().map(|l| (l.name.clone(), l.token));
                    if reply.send(outcome).is_err()
                        && let Some(k) = undelivered
                    {
                        let id = granted.lock().ok().and_then(|mut g| g.remove(&k));
                        if let Some(id) = id {
                            let _ = client.clone().lease_revoke(id).await;
                        }
                    }
                });
            }
            SyncMsg::Renew {
                name, token, reply, ..
            } => {
                let id = self
                    .granted
                    .lock()
                    .map_err(|e| e.to_string())?
                    .get(&(name.clone(), token))
                    .copied();
                let granted = self.granted.clone();
                self.run(async move {
                    let outcome = renew(client, id, name.clone(), token).await;
                    if matches!(outcome, Err(SyncError::NotHeld { .. }))
                        && let Ok(mut g) = granted.lock()
                    {
                        g.remove(&(name, token));
                    }
                    let _ = reply.send(outcome);
                });
            }
            SyncMsg::Release { name, token, reply } => {
                let id = self
                    .granted
                    .lock()
                    .map_err(|e| e.to_string())?
                    .remove(&(name.clone(), token));
                self.run(async move {
                    let outcome = match id {
                        Some(id) => {
                            let mut client = client;
                            client.lease_revoke(id).await.map(|_| ()).map_err(|e| {
                                if e.to_string().contains("not found") {
                                    SyncError::NotHeld { name, token }
                                } else {
                                    etcd(e)
                                }
                            })
                        }
                        None => Err(SyncError::NotHeld { name, token }),
                    };
                    let _ = reply.send(outcome);
                });
            }
            SyncMsg::Holder { name, reply } => {
                let key = key(&name);
                self.run(async move {
                    let mut client = client;
                    let _ = reply.send(
                        leader(&mut client, &key)
                            .await
                            .map(|found| lease_of(&name, found)),
                    );
                });
            }
            SyncMsg::Observe { name, events } => {
                let key = key(&name);
                self.run(observe(client, name, key, events));
            }
            SyncMsg::Local(_) => {}
        }
        Ok(())
    }
}
