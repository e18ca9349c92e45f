//! Auth for micro, as Go Micro's: accounts (users and services, with scopes and metadata),
//! access and refresh tokens, and rules checked by [`verify`] — plus what a cluster needs:
//! tokens are JWTs signed with Ed25519 by the issuing node's key (kept in a file of its own,
//! mode 0600), whose public key is published in the store, so any node verifies any token in
//! place, with no round trip, through a bounded cache that honours expiry and revocation.
//!
//! The auth actor (exposed as `"auth"`, supervised under the node's root) keeps accounts
//! (secrets hashed with PBKDF2-HMAC-SHA256), rules, public keys and revocations in the store
//! (database `auth`), and reads keys, revocations and rules back every `sync_every` (250 ms),
//! so a revoked account or rule takes effect on every node within that period.
//!
//! ```no_run
//! use micro_auth::{AuthActor, AuthConfig, GenerateOptions, Resource, Rule, Denied};
//! use micro_store::{MemoryStore, StoreConfig};
//! use micro_runtime::Node;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().start().await?;
//! let store = MemoryStore::start(&node, StoreConfig::default()).await?;
//! let auth = AuthActor::start(&node, AuthConfig::new(store)).await?;
//! auth.grant(Rule::grant("health", "", Resource::service("*", "Debug.Health"))).await?;
//! auth.grant(Rule::grant("staff", "staff", Resource::service("shop", "*"))).await?;
//! auth.generate("ada", GenerateOptions::new().scopes(["staff"]).secret("s3cret")).await?;
//! let token = auth.token("ada", "s3cret").await?;
//! let ada = auth.inspect_local(&token.access_token);
//! assert_eq!(auth.verify(ada.as_ref(), &Resource::service("shop", "Orders.List")), Ok(()));
//! assert_eq!(auth.verify(None, &Resource::service("shop", "Orders.List")), Err(Denied::Unauthorized));
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

// Layers: error, account, rules → token → protocol → actor → handle.
mod account;
mod actor;
mod error;
mod handle;
mod protocol;
mod rules;
mod token;

pub use account::{Account, AccountType, GenerateOptions};
pub use actor::{AUTH_DATABASE, AuthActor, AuthConfig};
pub use error::AuthError;
pub use handle::Auth;
pub use protocol::{AUTH_NAME, AuthCommand, AuthMsg};
pub use rules::{
    Access, Denied, HEALTH_RULE, Resource, Rule, SCOPE_ACCOUNT, SCOPE_PUBLIC, TYPE_SERVICE,
    TYPE_TOPIC, default_rules, verify,
};
pub use token::Token;
