//! The [`Auth`] handle.

use std::sync::Arc;
use std::time::Duration;

use micro_runtime::{Addr, Node, NodeId};

use crate::actor::{Shared, now_ms};
use crate::protocol::{Command, command};
use crate::rules::{Denied, verify};
use crate::{AUTH_NAME, Account, AuthError, AuthMsg, GenerateOptions, Resource, Rule, Token};

const ASK: Duration = Duration::from_secs(5);

/// A handle on an auth actor, on this node or another (Go Micro's `auth.Auth`). A local handle
/// ([`Auth::local`]) inspects tokens and verifies rules in place, with no message and no round
/// trip: the node's auth actor keeps its keys, revocations and rules in step with the store.
///
/// ```no_run
/// use micro_auth::{AuthActor, AuthConfig, GenerateOptions, Resource, Rule};
/// use micro_store::{MemoryStore, StoreConfig};
/// use micro_runtime::Node;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().start().await?;
/// let store = MemoryStore::start(&node, StoreConfig::default()).await?;
/// let auth = AuthActor::start(&node, AuthConfig::new(store)).await?;
/// auth.grant(Rule::grant("staff", "staff", Resource::service("shop", "*"))).await?;
/// let ada = auth.generate("ada", GenerateOptions::new().scopes(["staff"]).secret("s3cret")).await?;
/// let token = auth.token("ada", "s3cret").await?;
/// assert_eq!(auth.inspect(&token.access_token).await?.id, ada.id);
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Auth {
    addr: Addr<AuthMsg>,
    shared: Option<Arc<Shared>>,
    timeout: Duration,
}

impl Auth {
    /// A handle for the auth actor at `addr` (every operation a message).
    pub fn new(addr: Addr<AuthMsg>) -> Self {
        Auth {
            addr,
            shared: None,
            timeout: ASK,
        }
    }

    /// The auth actor running on `node` (named `"auth"`), verifying in place.
    pub async fn local(node: &Node) -> Result<Self, AuthError> {
        let addr = node.lookup::<AuthMsg>(AUTH_NAME)?;
        let shared = addr
            .ask(|reply| command(Command::Shared(reply)), ASK)
            .await?;
        let mut auth = Auth::new(addr);
        auth.shared = Some(shared);
        Ok(auth)
    }

    /// The auth actor exposed by node `peer`, reached from `node`.
    pub async fn remote(node: &Node, peer: NodeId) -> Result<Self, AuthError> {
        Ok(Auth::new(
            node.lookup_remote::<AuthMsg>(peer, AUTH_NAME).await?,
        ))
    }

    /// The auth actor's address.
    pub fn addr(&self) -> &Addr<AuthMsg> {
        &self.addr
    }

    /// Whether tokens and rules are checked in place (a local handle).
    pub fn is_local(&self) -> bool {
        self.shared.is_some()
    }

    /// The same handle with another timeout per request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates an account; answers it with its secret in clear (a random one if none was given).
    pub async fn generate(&self, id: &str, options: GenerateOptions) -> Result<Account, AuthError> {
        let id = id.to_owned();
        self.addr
            .ask(
                |reply| AuthMsg::Generate { id, options, reply },
                self.timeout,
            )
            .await?
    }

    /// Access and refresh tokens for the account `id` with `secret`.
    pub async fn token(&self, id: &str, secret: &str) -> Result<Token, AuthError> {
        let (id, secret) = (id.to_owned(), secret.to_owned());
        self.addr
            .ask(|reply| AuthMsg::Token { id, secret, reply }, self.timeout)
            .await?
    }

    /// New tokens for a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Token, AuthError> {
        let refresh_token = refresh_token.to_owned();
        self.addr
            .ask(
                |reply| AuthMsg::Refresh {
                    refresh_token,
                    reply,
                },
                self.timeout,
            )
            .await?
    }

    /// The account an access token names: in place on a local handle, else asked.
    /// A missing, malformed, tampered, expired, foreign-signed or revoked token is
    /// [`AuthError::InvalidToken`].
    pub async fn inspect(&self, token: &str) -> Result<Account, AuthError> {
        if self.shared.is_some() {
            return self.inspect_local(token).ok_or(AuthError::InvalidToken);
        }
        let token = token.to_owned();
        self.addr
            .ask(|reply| AuthMsg::Inspect { token, reply }, self.timeout)
            .await?
    }

    /// The account an access token names, checked in place (`None` on a remote handle, or for
    /// any bad token). What services call for every request.
    pub fn inspect_local(&self, token: &str) -> Option<Account> {
        let shared = self.shared.as_ref()?;
        shared.verifier.lock().ok()?.inspect(token, now_ms())
    }

    /// Go Micro's `Verify` over the rules this node knows (a local handle; a remote one knows
    /// none, so only denies).
    pub fn verify(&self, account: Option<&Account>, resource: &Resource) -> Result<(), Denied> {
        let Some(shared) = &self.shared else {
            return verify(&[], account, resource);
        };
        match shared.verifier.lock() {
            Ok(verifier) => verify(&verifier.rules, account, resource),
            Err(_) => verify(&[], account, resource),
        }
    }

    /// Deletes an account and revokes the tokens issued to it so far, on every node within
    /// the sync period.
    pub async fn revoke_account(&self, id: &str) -> Result<bool, AuthError> {
        let id = id.to_owned();
        self.addr
            .ask(|reply| AuthMsg::RevokeAccount { id, reply }, self.timeout)
            .await?
    }

    /// Adds (or replaces, by id) a rule.
    pub async fn grant(&self, rule: Rule) -> Result<(), AuthError> {
        self.addr
            .ask(|reply| AuthMsg::Grant { rule, reply }, self.timeout)
            .await?
    }

    /// Removes the rule `id`.
    pub async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let id = id.to_owned();
        self.addr
            .ask(|reply| AuthMsg::Revoke { id, reply }, self.timeout)
            .await?
    }

    /// Every rule.
    pub async fn rules(&self) -> Result<Vec<Rule>, AuthError> {
        self.addr
            .ask(|reply| AuthMsg::Rules { reply }, self.timeout)
            .await?
    }
}
