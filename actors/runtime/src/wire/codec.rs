//! Codecs, chosen per message by content type: bincode and JSON built in, others pluggable.

use std::fmt;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context;
use crate::Error;

/// Upper bound on what one decoded value may claim to allocate (guards against garbage lengths).
const BINCODE_LIMIT: usize = 16 * 1024 * 1024;
/// Initial room for an encoded value.
const ENCODE_CAPACITY: usize = 128;

/// How a message body is encoded. The content type travels with every frame (by its MIME name),
/// so any caller can talk to any server in the encoding it prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContentType {
    /// `application/bincode`: compact and fast (bincode 2, standard configuration). The default.
    #[default]
    Bincode,
    /// `application/json`: readable, and spoken by any language.
    Json,
    /// A codec added with [`register_codec`].
    Custom(CustomCodec),
}

/// A handle to a codec added with [`register_codec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomCodec(usize);

/// A pluggable codec: serde in some format, object-safe through `erased-serde`.
///
/// ```
/// use micro_runtime::{Codec, ContentType, register_codec};
///
/// /// JSON with pretty printing, under its own MIME name.
/// struct PrettyJson;
///
/// impl Codec for PrettyJson {
///     fn name(&self) -> &'static str {
///         "application/x-pretty-json"
///     }
///     fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
///         serde_json::to_vec_pretty(value).map_err(|e| e.to_string())
///     }
///     fn decode<'de>(
///         &self,
///         bytes: &'de [u8],
///         visit: &mut dyn FnMut(&mut dyn erased_serde::Deserializer<'de>) -> Result<(), erased_serde::Error>,
///     ) -> Result<(), String> {
///         let mut json = serde_json::Deserializer::from_slice(bytes);
///         visit(&mut <dyn erased_serde::Deserializer>::erase(&mut json)).map_err(|e| e.to_string())?;
///         json.end().map_err(|e| e.to_string())
///     }
/// }
///
/// let pretty = register_codec(PrettyJson);
/// let bytes = pretty.encode(&vec![1, 2]).unwrap();
/// assert_eq!(pretty.decode::<Vec<u32>>(&bytes).unwrap(), [1, 2]);
/// assert_eq!(ContentType::parse("application/x-pretty-json").unwrap(), pretty);
/// ```
pub trait Codec: Send + Sync + 'static {
    /// The MIME name carried in frames, e.g. `application/cbor`.
    fn name(&self) -> &'static str;

    /// Encodes a value.
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String>;

    /// Makes a deserializer over `bytes` and hands it to `visit`, which decodes the value; then
    /// checks nothing is left over.
    fn decode<'de>(
        &self,
        bytes: &'de [u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'de>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), String>;
}

/// The codecs added at run time, in registration order (never removed).
static CODECS: RwLock<Vec<Arc<dyn Codec>>> = RwLock::new(Vec::new());

/// Adds a codec for the whole process and returns its content type. Registering a codec whose
/// name is taken returns the existing one. Both ends of a link must register it; a frame in a
/// content type a node does not know is refused with [`Error::UnknownContentType`].
pub fn register_codec(codec: impl Codec) -> ContentType {
    if let Ok(found) = ContentType::parse(codec.name()) {
        return found;
    }
    match CODECS.write() {
        Ok(mut codecs) => {
            codecs.push(Arc::new(codec));
            ContentType::Custom(CustomCodec(codecs.len() - 1))
        }
        // A poisoned registry still holds the codecs registered so far.
        Err(poisoned) => {
            let mut codecs = poisoned.into_inner();
            codecs.push(Arc::new(codec));
            ContentType::Custom(CustomCodec(codecs.len() - 1))
        }
    }
}

fn custom(codec: CustomCodec) -> Option<Arc<dyn Codec>> {
    let codecs = CODECS.read().unwrap_or_else(|p| p.into_inner());
    codecs.get(codec.0).cloned()
}

impl ContentType {
    /// The MIME name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Bincode => "application/bincode",
            ContentType::Json => "application/json",
            ContentType::Custom(codec) => {
                custom(codec).map_or("application/x-unknown", |c| c.name())
            }
        }
    }

    /// The content type with this MIME name: built in or registered.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "application/bincode" => Ok(ContentType::Bincode),
            "application/json" => Ok(ContentType::Json),
            other => {
                let codecs = CODECS.read().unwrap_or_else(|p| p.into_inner());
                codecs
                    .iter()
                    .position(|c| c.name() == other)
                    .map(|i| ContentType::Custom(CustomCodec(i)))
                    .ok_or_else(|| Error::UnknownContentType(other.to_owned()))
            }
        }
    }

    /// Encodes a value. Values holding an [`Addr`](crate::Addr) or a [`Reply`](crate::Reply)
    /// must be encoded through [`Node::encode`](crate::Node::encode), which sets the node context.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        context::clear_missing();
        let result = match self {
            ContentType::Bincode => {
                // Sized for a typical message up front: growing from empty costs several
                // reallocations per value.
                let mut out = Vec::with_capacity(ENCODE_CAPACITY);
                bincode::serde::encode_into_std_write(value, &mut out, config())
                    .map(|_| out)
                    .map_err(|e| Error::codec(self.as_str(), e))
            }
            ContentType::Json => {
                serde_json::to_vec(value).map_err(|e| Error::codec(self.as_str(), e))
            }
            ContentType::Custom(codec) => {
                let codec = custom(codec)
                    .ok_or_else(|| Error::UnknownContentType(self.as_str().to_owned()))?;
                codec
                    .encode(&value as &dyn erased_serde::Serialize)
                    .map_err(|e| Error::codec(codec.name(), e))
            }
        };
        result.map_err(context::explain)
    }

    /// Encodes a value into `out` when it fits: the length written, or `None` when the value
    /// needs more room (then nothing useful is in `out`). For a caller with a small buffer of
    /// its own — on the stack, say — that wants no allocation for small values. Same rules as
    /// [`ContentType::encode`].
    ///
    /// ```
    /// use micro_runtime::ContentType;
    ///
    /// let mut room = [0u8; 8];
    /// let n = ContentType::Json.encode_into_slice(&[1, 2], &mut room).unwrap();
    /// assert_eq!(n.map(|n| &room[..n]), Some(&b"[1,2]"[..]));
    /// assert_eq!(ContentType::Json.encode_into_slice(&"too long here", &mut room).unwrap(), None);
    /// ```
    pub fn encode_into_slice<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut [u8],
    ) -> Result<Option<usize>, Error> {
        context::clear_missing();
        let result = match self {
            ContentType::Bincode => match bincode::serde::encode_into_slice(value, out, config()) {
                Ok(written) => Ok(Some(written)),
                Err(bincode::error::EncodeError::UnexpectedEnd) => Ok(None),
                Err(e) => Err(Error::codec(self.as_str(), e)),
            },
            ContentType::Json => {
                let room = out.len();
                let mut cursor = std::io::Cursor::new(out);
                match serde_json::to_writer(&mut cursor, value) {
                    // At most `room`, so it fits a usize.
                    Ok(()) => Ok(Some(usize::try_from(cursor.position()).unwrap_or(room))),
                    Err(e) if e.io_error_kind() == Some(std::io::ErrorKind::WriteZero) => Ok(None),
                    Err(e) => Err(Error::codec(self.as_str(), e)),
                }
            }
            ContentType::Custom(_) => {
                let bytes = self.encode(value)?;
                match out.get_mut(..bytes.len()) {
                    Some(room) => {
                        room.copy_from_slice(&bytes);
                        Ok(Some(bytes.len()))
                    }
                    None => Ok(None),
                }
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
            ContentType::Custom(codec) => {
                let codec = custom(codec)
                    .ok_or_else(|| Error::UnknownContentType(self.as_str().to_owned()))?;
                let mut value = None;
                codec
                    .decode(bytes, &mut |de| {
                        value = Some(erased_serde::deserialize::<T>(de)?);
                        Ok(())
                    })
                    .map_err(|e| Error::codec(codec.name(), e))
                    .and_then(|()| {
                        value.ok_or_else(|| Error::codec(codec.name(), "the codec decoded nothing"))
                    })
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
