use micro_service::{CallContext, ServiceError};

#[micro_service::service(crate = "::micro_service")]
trait Greeter {
    async fn hello(&self, ctx: CallContext, first: String, last: String, title: String) -> Result<String, ServiceError>;
}

fn main() {}
