use micro_service::{CallContext, ServiceError};

#[micro_service::service(crate = "::micro_service")]
trait Greeter {
    async fn new(&self, ctx: CallContext, name: String) -> Result<String, ServiceError>;
}

fn main() {}
