//! The auth actor: accounts and rules in the store, its node's signing key, and the shared
//! [`Verifier`] it keeps in step with the store (keys, revocations, rules) so that any handle on
//! the node verifies tokens and rules without a round trip.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micro_runtime::{Actor, ActorError, ChildSpec, Context, Node};
use micro_store::{Query, Record, Store};

use crate::account::{check_secret, default_iterations, hash_secret, random_secret};
use crate::protocol::{AuthCommand, Command, command};
use crate::token::{ACCESS, CACHE_CAPACITY, PublicKey, REFRESH, Signer, Verifier, claims_for};
use crate::{AUTH_NAME, Account, Auth, AuthError, AuthMsg, GenerateOptions, Rule, Token};

/// The store database the auth keeps its tables in.
pub const AUTH_DATABASE: &str = "auth";
const ACCOUNTS: &str = "accounts";
const RULES: &str = "rules";
const KEYS: &str = "keys";
const REVOKED: &str = "revoked";

/// How an auth actor behaves.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where accounts, rules and public keys live (any node's store; one for the cluster).
    pub store: Store,
    /// The issuer named in accounts and tokens.
    pub issuer: String,
    /// The signing key's file (PKCS#8, made with mode 0600 if absent). `None`: a key in memory,
    /// new at every start (tokens it signed stay valid while its public key is in the store).
    pub key_file: Option<PathBuf>,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// How often keys, revocations and rules are read from the store.
    pub sync_every: Duration,
    /// Verified tokens cached per node.
    pub cache_capacity: usize,
    /// PBKDF2 iterations for secrets (600,000 by default).
    pub hash_iterations: u32,
}

impl AuthConfig {
    /// Defaults: issuer `"micro"`, a key in memory, access tokens for 15 minutes, refresh tokens
    /// for a day, a sync every 250 ms.
    pub fn new(store: Store) -> Self {
        AuthConfig {
            store,
            issuer: "micro".into(),
            key_file: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(24 * 3600),
            sync_every: Duration::from_millis(250),
            cache_capacity: CACHE_CAPACITY,
            hash_iterations: default_iterations(),
        }
    }

    /// With the signing key in this file.
    #[must_use]
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// With another access token lifetime.
    #[must_use]
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// With another issuer name.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }
}

/// What the auth actor shares with local handles.
pub(crate) struct Shared {
    pub(crate) verifier: Mutex<Verifier>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The auth actor (see the crate docs). Start it with [`AuthActor::start`].
#[derive(Debug)]
pub struct AuthActor {
    config: AuthConfig,
    shared: Arc<Shared>,
    signer: Option<Signer>,
}

impl AuthActor {
    /// A child spec named `"auth"`. The verifier is shared by every incarnation.
    pub fn spec(config: AuthConfig) -> ChildSpec<AuthActor> {
        let shared = Arc::new(Shared {
            verifier: Mutex::new(Verifier::new(config.cache_capacity)),
        });
        ChildSpec::new(move || AuthActor {
            config: config.clone(),
            shared: shared.clone(),
            signer: None,
        })
        .named(AUTH_NAME)
    }

    /// Starts the auth actor on `node` (supervised under its root, exposed as `"auth"`) and
    /// returns a local handle.
    pub async fn start(node: &Node, config: AuthConfig) -> Result<Auth, AuthError> {
        node.spawn(AuthActor::spec(config)).await?;
        node.expose::<AuthMsg>(AUTH_NAME)?;
        Auth::local(node).await
    }

    fn table(&self, table: &str) -> Store {
        self.config.store.database(AUTH_DATABASE).table(table)
    }

    /// Reads keys, revocations and rules and hands them to the verifier.
    async fn sync(&self) -> Result<(), AuthError> {
        let keys: Vec<(String, Vec<u8>)> = self
            .table(KEYS)
            .scan(&Query::all())
            .await?
            .into_iter()
            .filter_map(|r| {
                let key: PublicKey = serde_json::from_slice(&r.value).ok()?;
                Some((r.key, unhex(&key.key)?))
            })
            .collect();
        let revoked: HashMap<String, u64> = self
            .table(REVOKED)
            .scan(&Query::all())
            .await?
            .into_iter()
            .filter_map(|r| Some((r.key, serde_json::from_slice(&r.value).ok()?)))
            .collect();
        let mut rules = self.rules().await?;
        rules.extend(crate::rules::default_rules());
        if let Ok(mut verifier) = self.shared.verifier.lock() {
            verifier.set_keys(keys);
            verifier.set_revoked(revoked);
            verifier.rules = rules;
        }
        Ok(())
    }

    async fn rules(&self) -> Result<Vec<Rule>, AuthError> {
        Ok(self
            .table(RULES)
            .scan(&Query::all())
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_slice(&r.value).ok())
            .collect())
    }

    async fn generate(&self, id: String, options: GenerateOptions) -> Result<Account, AuthError> {
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(AuthError::InvalidId(id));
        }
        let secret = if options.secret.is_empty() {
            random_secret()
        } else {
            options.secret
        };
        let mut account = Account {
            id: id.clone(),
            kind: options.kind,
            issuer: self.config.issuer.clone(),
            metadata: options.metadata,
            scopes: options.scopes,
            secret: hash_secret(&secret, self.config.hash_iterations),
        };
        let value = json(&account)?;
        match self
            .table(ACCOUNTS)
            .write_if(Record::new(&id, value), 0)
            .await
        {
            Ok(_) => {}
            Err(micro_store::StoreError::Conflict { .. }) => return Err(AuthError::Exists(id)),
            Err(e) => return Err(e.into()),
        }
        // Made again after a revocation: tokens from now on are valid (the old ones stay
        // revoked: they were issued before).
        account.secret = secret;
        Ok(account)
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, AuthError> {
        Ok(self
            .table(ACCOUNTS)
            .read(id)
            .await?
            .and_then(|r| serde_json::from_slice(&r.value).ok()))
    }

    fn tokens(&self, account: &Account) -> Result<Token, AuthError> {
        let signer = self.signer.as_ref().ok_or_else(|| AuthError::Key {
            path: "memory".into(),
            detail: "no signing key".into(),
        })?;
        let now = now_ms();
        let access_ms = millis(self.config.access_ttl);
        Ok(Token {
            access_token: signer.sign(&claims_for(account, ACCESS, now, access_ms))?,
            refresh_token: signer.sign(&claims_for(
                account,
                REFRESH,
                now,
                millis(self.config.refresh_ttl),
            ))?,
            created_ms: now,
            expiry_ms: now.saturating_add(access_ms),
        })
    }

    async fn token(&self, id: &str, secret: &str) -> Result<Token, AuthError> {
        let bad = || AuthError::InvalidCredentials(id.to_owned());
        let account = self.account(id).await?.ok_or_else(bad)?;
        if !check_secret(secret, &account.secret) {
            return Err(bad());
        }
        self.tokens(&account)
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Token, AuthError> {
        let claims = self
            .shared
            .verifier
            .lock()
            .ok()
            .and_then(|v| v.check(refresh_token, REFRESH, now_ms()))
            .ok_or(AuthError::InvalidToken)?;
        // The account must still exist (and so carries its current scopes).
        let account = self
            .account(&claims.sub)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        self.tokens(&account)
    }

    async fn revoke_account(&self, id: &str) -> Result<bool, AuthError> {
        let existed = self.table(ACCOUNTS).delete(id).await?;
        let at = now_ms();
        self.table(REVOKED)
            .write(Record::new(id, json(&at)?))
            .await?;
        if let Ok(mut verifier) = self.shared.verifier.lock() {
            let mut revoked = verifier.revoked().clone();
            revoked.insert(id.to_owned(), at);
            verifier.set_revoked(revoked);
        }
        Ok(existed)
    }

    async fn grant(&self, rule: Rule) -> Result<(), AuthError> {
        self.table(RULES)
            .write(Record::new(&rule.id, json(&rule)?))
            .await?;
        self.sync().await
    }

    async fn revoke_rule(&self, id: &str) -> Result<bool, AuthError> {
        let existed = self.table(RULES).delete(id).await?;
        self.sync().await?;
        Ok(existed)
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(value).map_err(|e| AuthError::Store(e.to_string()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Actor for AuthActor {
    type Msg = AuthMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        let signer = match &self.config.key_file {
            Some(path) => Signer::load_or_create(path)?,
            None => Signer::generate()?,
        };
        let key = PublicKey {
            issuer: self.config.issuer.clone(),
            key: crate::account::hex(&signer.public),
        };
        self.table(KEYS)
            .write(Record::new(&signer.kid, json(&key)?))
            .await?;
        self.signer = Some(signer);
        self.sync().await?;
        ctx.tick(self.config.sync_every, || command(Command::Sync));
        Ok(())
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: AuthMsg) -> Result<(), ActorError> {
        match msg {
            AuthMsg::Generate { id, options, reply } => {
                let _ = reply.send(self.generate(id, options).await);
            }
            AuthMsg::Token { id, secret, reply } => {
                let _ = reply.send(self.token(&id, &secret).await);
            }
            AuthMsg::Refresh {
                refresh_token,
                reply,
            } => {
                let _ = reply.send(self.refresh(&refresh_token).await);
            }
            AuthMsg::Inspect { token, reply } => {
                let account = self
                    .shared
                    .verifier
                    .lock()
                    .ok()
                    .and_then(|mut v| v.inspect(&token, now_ms()));
                let _ = reply.send(account.ok_or(AuthError::InvalidToken));
            }
            AuthMsg::RevokeAccount { id, reply } => {
                let _ = reply.send(self.revoke_account(&id).await);
            }
            AuthMsg::Grant { rule, reply } => {
                let _ = reply.send(self.grant(rule).await);
            }
            AuthMsg::Revoke { id, reply } => {
                let _ = reply.send(self.revoke_rule(&id).await);
            }
            AuthMsg::Rules { reply } => {
                let _ = reply.send(self.rules().await);
            }
            AuthMsg::Local(AuthCommand(Command::Sync)) => {
                if let Err(error) = self.sync().await {
                    tracing::warn!(%error, "auth: cannot read keys, revocations and rules");
                }
            }
            AuthMsg::Local(AuthCommand(Command::Shared(reply))) => {
                let _ = reply.send(self.shared.clone());
            }
        }
        Ok(())
    }
}
