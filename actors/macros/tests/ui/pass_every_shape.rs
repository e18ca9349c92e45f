// A service of every shape compiles with the crate override, for users of `micro-service` alone.
use micro_service::{CallContext, Incoming, Outgoing, Service, ServiceError};

#[micro_service::service(crate = "::micro_service", name = "shapes")]
trait Shapes {
    #[idempotent]
    async fn unary(&self, ctx: CallContext, req: u32) -> Result<String, ServiceError>;
    async fn server(&self, ctx: CallContext, req: u32, out: Outgoing<u32>) -> Result<(), ServiceError>;
    async fn client(&self, ctx: CallContext, reqs: Incoming<u32>) -> Result<u32, ServiceError>;
    async fn bidi(&self, ctx: CallContext, reqs: Incoming<u32>, out: Outgoing<u32>) -> Result<(), ServiceError>;
}

struct Impl;

impl Shapes for Impl {
    async fn unary(&self, _: CallContext, req: u32) -> Result<String, ServiceError> {
        Ok(req.to_string())
    }
    async fn server(&self, _: CallContext, _: u32, _: Outgoing<u32>) -> Result<(), ServiceError> {
        Ok(())
    }
    async fn client(&self, _: CallContext, _: Incoming<u32>) -> Result<u32, ServiceError> {
        Ok(0)
    }
    async fn bidi(&self, _: CallContext, _: Incoming<u32>, _: Outgoing<u32>) -> Result<(), ServiceError> {
        Ok(())
    }
}

fn main() {
    let _service = Service::new(ShapesClient::SERVICE).handle(ShapesServer::new(Impl));
    assert_eq!(ShapesClient::SERVICE, "shapes");
}
