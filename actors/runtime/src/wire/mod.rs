//! Everything that lets handles and messages leave their node: codecs, the wire context, frames,
//! exports and links.

mod call;
mod codec;
pub(crate) mod context;
pub(crate) mod exports;
pub(crate) mod frame;
pub(crate) mod loopback;

pub use call::CallData;
pub use codec::{Codec, ContentType, CustomCodec, register_codec};
pub use exports::RemoteMessage;
pub use frame::Down;
