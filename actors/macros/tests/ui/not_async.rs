use micro_service::{CallContext, ServiceError};

#[micro_service::service(crate = "::micro_service")]
trait Greeter {
    fn hello(&self, ctx: CallContext, name: String) -> Result<String, ServiceError>;
}

fn main() {}
