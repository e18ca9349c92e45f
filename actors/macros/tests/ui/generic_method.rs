use micro_service::{CallContext, ServiceError};

#[micro_service::service(crate = "::micro_service")]
trait Greeter {
    async fn hello<T>(&self, ctx: CallContext, name: T) -> Result<String, ServiceError>;
}

fn main() {}
