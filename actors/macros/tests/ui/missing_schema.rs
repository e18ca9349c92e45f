// Request and response types of a typed service need a JSON Schema (`schemars::JsonSchema`).
use micro_service::{CallContext, ServiceError};

#[derive(serde::Serialize, serde::Deserialize)]
struct Name(String);

#[micro_service::service(crate = "::micro_service")]
trait Greeter {
    async fn hello(&self, ctx: CallContext, name: Name) -> Result<String, ServiceError>;
}

fn main() {}
