//! Auth on services: the check where an endpoint accepts a call ([`Service::auth`]), the
//! caller's account in its [`CallContext`], and the client side ([`Credentials`], a wrapper
//! that carries an account's token and refreshes it before it expires;
//! [`CallOptions::on_behalf_of`] to pass a caller's token on).
//!
//! The token travels as Go Micro's: a header `Authorization: Bearer <token>` in the call's
//! metadata, which is the envelope's per-call data on the wire.
//!
//! [`Service::auth`]: crate::Service::auth

use std::sync::Arc;
use std::time::Duration;

use micro_auth::{Account, Auth, Denied, Resource, Token};
use tokio::sync::Mutex;

use crate::wrapper::{BoxFuture, Next, Request, Response, Wrapper};
use crate::{CallContext, CallOptions, Metadata, ServiceError};

/// The header that carries a call's token: `Bearer <access token>`.
pub const AUTHORIZATION_HEADER: &str = "Authorization";

const BEARER: &str = "Bearer ";

/// The access token a call carries, if any.
pub(crate) fn token_of(metadata: &Metadata) -> Option<&str> {
    metadata
        .get(AUTHORIZATION_HEADER)
        .and_then(|value| value.strip_prefix(BEARER))
}

/// Checks a call against the node's rules: its account (from a valid token; a bad token is no
/// account), or 401 without an account / 403 with one, in Go Micro's words, naming no rule.
pub(crate) fn authorize(
    auth: &Auth,
    service: &str,
    endpoint: &str,
    metadata: &Metadata,
) -> Result<Option<Arc<Account>>, ServiceError> {
    let account = token_of(metadata).and_then(|token| auth.inspect_local(token));
    match auth.verify(account.as_ref(), &Resource::service(service, endpoint)) {
        Ok(()) => Ok(account.map(Arc::new)),
        Err(Denied::Unauthorized) => Err(ServiceError::unauthorized(
            service,
            format!("Unauthorized call made to {service}:{endpoint}"),
        )),
        Err(Denied::Forbidden) => Err(ServiceError::forbidden(
            service,
            format!(
                "Forbidden call made to {service}:{endpoint} by {}",
                account.map_or_else(String::new, |a| a.id)
            ),
        )),
    }
}

/// A client [`Wrapper`] that logs in as an account and puts its access token on every unary
/// call, refreshing it (or logging in again) before it expires.
///
/// ```no_run
/// use micro_service::{Client, Credentials};
/// # async fn demo(node: &micro_runtime::Node, auth: micro_auth::Auth) -> Result<(), micro_service::ServiceError> {
/// let client = Client::builder(node)
///     .wrap(Credentials::new(auth, "ada", "s3cret"))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Credentials {
    auth: Auth,
    id: String,
    secret: String,
    margin: Duration,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Logs in as `id` with `secret` through `auth` (any node's) at the first call.
    pub fn new(auth: Auth, id: impl Into<String>, secret: impl Into<String>) -> Self {
        Credentials {
            auth,
            id: id.into(),
            secret: secret.into(),
            margin: Duration::from_secs(30),
            token: Mutex::new(None),
        }
    }

    /// Renews the token this long before it expires (default 30 s; capped at half its life).
    #[must_use]
    pub fn refresh_before(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The current access token, renewed first if it is about to expire.
    pub async fn access_token(&self) -> Result<String, ServiceError> {
        let mut slot = self.token.lock().await;
        let now = now_ms();
        if let Some(token) = slot.as_ref() {
            let life = token.expiry_ms.saturating_sub(token.created_ms);
            let margin = u64::try_from(self.margin.as_millis())
                .unwrap_or(u64::MAX)
                .min(life / 2);
            if !token.expires_within(now, margin) {
                return Ok(token.access_token.clone());
            }
            if let Ok(renewed) = self.auth.refresh(&token.refresh_token).await {
                let access = renewed.access_token.clone();
                *slot = Some(renewed);
                return Ok(access);
            }
        }
        let token = self
            .auth
            .token(&self.id, &self.secret)
            .await
            .map_err(|e| ServiceError::unauthorized("micro.auth", e.to_string()))?;
        let access = token.access_token.clone();
        *slot = Some(token);
        Ok(access)
    }
}

impl Wrapper for Credentials {
    fn call<'a>(
        &'a self,
        mut request: Request,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Response, ServiceError>> {
        Box::pin(async move {
            let token = self.access_token().await?;
            request
                .metadata
                .insert(AUTHORIZATION_HEADER.to_owned(), format!("{BEARER}{token}"));
            next.run(request).await
        })
    }
}

impl CallOptions {
    /// Delegation: the call carries the token of the call `ctx` serves, so the next service
    /// sees the original caller's account.
    #[must_use]
    pub fn on_behalf_of(self, ctx: &CallContext) -> Self {
        match ctx.header(AUTHORIZATION_HEADER) {
            Some(value) => self.header(AUTHORIZATION_HEADER, value),
            None => self,
        }
    }

    /// The call carries this access token.
    #[must_use]
    pub fn token(self, access_token: &str) -> Self {
        self.header(AUTHORIZATION_HEADER, format!("{BEARER}{access_token}"))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
