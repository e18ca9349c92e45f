//! Codecs, chosen per message by content type.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::context;
use crate::Error;

/// Upper bound on what one decoded value may claim to allocate (guards against garbage lengths).
const BINCODE_LIMIT: usize = 16 * 1024 * 1024;

/// How a message body is encoded. The content type travels with every frame, so any caller can
/// talk to any server in the encoding it prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ContentType {
    /// `application/bincode`: compact and fast (bincode 2, standard configuration). The default.
    #[default]
    Bincode,
    /// `application/json`: readable, and spoken by any language.
    Json,
}

impl ContentType {
    /// The MIME name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Bincode => "application/bincode",
            ContentType::Json => "application/json",
        }
    }

    /// The content type with this MIME name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "application/bincode" => Ok(ContentType::Bincode),
            "application/json" => Ok(ContentType::Json),
            other => Err(Error::UnknownContentType(other.to_owned())),
        }
    }

    /// Encodes a value. Values holding an [`Addr`](crate::Addr) or a [`Reply`](crate::Reply)
    /// must be encoded through [`Node::encode`](crate::Node::encode), which sets the node context.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        context::clear_missing();
        let result = match self {
            ContentType::Bincode => bincode::serde::encode_to_vec(value, config())
                .map_err(|e| Error::codec(self.as_str(), e)),
            ContentType::Json => {
                serde_json::to_vec(value).map_err(|e| Error::codec(self.as_str(), e))
            }
        };
        result.map_err(context::explain)
    }

    /// Decodes a value; trailing bytes are an error. See [`ContentType::encode`] for values
    /// holding handles.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        context::clear_missing();
        let result = match self {
            ContentType::Bincode => {
                match bincode::serde::decode_from_slice::<T, _>(bytes, config()) {
                    Ok((value, used)) if used == bytes.len() => Ok(value),
                    Ok((_, used)) => Err(Error::codec(
                        self.as_str(),
                        format!("{} trailing bytes after the value", bytes.len() - used),
                    )),
                    Err(e) => Err(Error::codec(self.as_str(), e)),
                }
            }
            ContentType::Json => {
                serde_json::from_slice(bytes).map_err(|e| Error::codec(self.as_str(), e))
            }
        };
        result.map_err(context::explain)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}
