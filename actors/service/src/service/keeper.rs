//! The registration keeper: an actor in each service's tree that refreshes the registration
//! before its TTL runs out.

use std::time::Duration;

use micro_registry::Registry;
use micro_runtime::{Actor, ActorError, Context};

#[derive(Clone)]
pub(crate) struct Keeper {
    registry: Registry,
    registration: micro_registry::ServiceRecord,
    ttl: Duration,
    interval: Duration,
}

pub(crate) enum KeeperMsg {
    Refresh,
}

impl Keeper {
    pub(crate) fn new(
        registry: Registry,
        registration: micro_registry::ServiceRecord,
        ttl: Duration,
        interval: Duration,
    ) -> Self {
        Keeper {
            registry,
            registration,
            ttl,
            interval,
        }
    }
}

impl Actor for Keeper {
    type Msg = KeeperMsg;

    async fn started(&mut self, ctx: &mut Context<Self>) -> Result<(), ActorError> {
        // The first refresh is one interval from now: the service registered itself.
        ctx.tick(self.interval, || KeeperMsg::Refresh);
        Ok(())
    }

    /// A graceful stop of the node (or of the service's tree) withdraws the registration, so
    /// callers stop choosing this node at once rather than when the TTL runs out. The keeper is
    /// the last child of its service, so it stops first, before the endpoints.
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let registry = self.registry.clone().with_timeout(Duration::from_secs(1));
        if let Err(err) = registry.deregister(&self.registration).await {
            tracing::debug!(service = %self.registration.name, error = %err, "deregistering on stop failed; the registration will expire");
        }
    }

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: KeeperMsg) -> Result<(), ActorError> {
        match msg {
            KeeperMsg::Refresh => {
                if let Err(err) = self
                    .registry
                    .register(&self.registration, Some(self.ttl))
                    .await
                {
                    tracing::warn!(service = %self.registration.name, error = %err, "refreshing the registration failed");
                }
            }
        }
        Ok(())
    }
}
