//! The auth's typed protocol (`micro.auth.v1`): what the auth actor answers, on its node or
//! across nodes. Callers use the [`Auth`](crate::Auth) handle.

use std::sync::Arc;

use micro_runtime::{RemoteMessage, Reply};
use serde::{Deserialize, Serialize};

use crate::actor::Shared;
use crate::{Account, AuthError, GenerateOptions, Rule, Token};

/// The name of a node's auth actor (exposed to other nodes).
pub const AUTH_NAME: &str = "auth";

/// What an auth actor takes. Variants travel by index: new ones go last.
#[derive(Debug, Serialize, Deserialize)]
pub enum AuthMsg {
    /// Creates an account (its secret hashed in the store); answers it with the secret in clear.
    Generate {
        /// The account's id.
        id: String,
        /// Type, scopes, metadata, secret.
        options: GenerateOptions,
        /// The account.
        reply: Reply<Result<Account, AuthError>>,
    },
    /// Tokens for an account, given its id and secret.
    Token {
        /// The account's id.
        id: String,
        /// Its secret.
        secret: String,
        /// Access and refresh tokens.
        reply: Reply<Result<Token, AuthError>>,
    },
    /// New tokens for a valid refresh token.
    Refresh {
        /// The refresh token.
        refresh_token: String,
        /// Access and refresh tokens.
        reply: Reply<Result<Token, AuthError>>,
    },
    /// The account an access token names.
    Inspect {
        /// The access token.
        token: String,
        /// The account (without secret).
        reply: Reply<Result<Account, AuthError>>,
    },
    /// Deletes an account and revokes every token issued to it so far, on every node.
    RevokeAccount {
        /// The account's id.
        id: String,
        /// Whether it existed.
        reply: Reply<Result<bool, AuthError>>,
    },
    /// Adds or replaces a rule (by id).
    Grant {
        /// The rule.
        rule: Rule,
        /// Done.
        reply: Reply<Result<(), AuthError>>,
    },
    /// Removes a rule by id.
    Revoke {
        /// The rule's id.
        id: String,
        /// Whether it existed.
        reply: Reply<Result<bool, AuthError>>,
    },
    /// Every rule.
    Rules {
        /// The rules, by id.
        reply: Reply<Result<Vec<Rule>, AuthError>>,
    },
    /// The auth actor's messages to itself and from a local handle. Never travels.
    #[serde(skip)]
    #[doc(hidden)]
    Local(AuthCommand),
}

impl RemoteMessage for AuthMsg {
    const TYPE_NAME: &'static str = "micro.auth.v1";
}

/// An auth actor's command from its own node: opaque outside the crate.
pub struct AuthCommand(pub(crate) Command);

impl std::fmt::Debug for AuthCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AuthCommand").field(&self.0).finish()
    }
}

#[derive(Debug)]
pub(crate) enum Command {
    /// Time to read keys, revocations and rules from the store.
    Sync,
    /// The shared verifier, for a local handle.
    Shared(Reply<Arc<Shared>>),
}

pub(crate) fn command(command: Command) -> AuthMsg {
    AuthMsg::Local(AuthCommand(command))
}
