//! [`Body`]: an encoded request or response body as the service layer carries it. Small bodies —
//! most RPC messages — are held in place, so a unary call allocates nothing for its bodies on
//! either node; larger ones are shared [`Bytes`], so a retry resends without copying.
//!
//! On the wire a body is a plain byte string, the same as a `Bytes` field.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use micro_runtime::ContentType;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// Bodies up to this many bytes are held in place.
const INLINE: usize = 62;

/// An encoded body: in place when small, shared when not. Cloning never allocates.
#[derive(Clone)]
pub(crate) enum Body {
    Inline { len: u8, data: [u8; INLINE] },
    Shared(Bytes),
}

impl Body {
    /// `value` encoded in `content_type`: in place when it fits, else in a buffer of its own.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        content_type: ContentType,
        value: &T,
    ) -> Result<Body, micro_runtime::Error> {
        let mut data = [0; INLINE];
        match content_type.encode_into_slice(value, &mut data)? {
            // At most INLINE (62), so it fits a u8.
            Some(len) => Ok(Body::Inline {
                len: len as u8,
                data,
            }),
            None => Ok(Body::Shared(Bytes::from(content_type.encode(value)?))),
        }
    }

    /// A copy of `bytes`, in place when it fits.
    pub(crate) fn copy_from_slice(bytes: &[u8]) -> Body {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut data = [0; INLINE];
                data[..bytes.len()].copy_from_slice(bytes);
                Body::Inline { len, data }
            }
            _ => Body::Shared(Bytes::copy_from_slice(bytes)),
        }
    }

    /// The body as `Bytes` (a copy only when it is held in place).
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            Body::Shared(bytes) => bytes,
            inline => Bytes::copy_from_slice(&inline),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Shared(bytes)
    }
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Inline { len, data } => &data[..usize::from(*len)],
            Body::Shared(bytes) => bytes,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({} bytes)", self.len())
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        **self == **other
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_bytes(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Body, E> {
        Ok(Body::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Body, E> {
        if v.len() <= INLINE {
            return Ok(Body::copy_from_slice(&v));
        }
        Ok(Body::Shared(Bytes::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Body, E> {
        Ok(Body::copy_from_slice(v.as_bytes()))
    }

    /// Self-describing formats without a byte type (JSON) write bytes as a list of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        self.visit_byte_buf(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_stay_in_place_and_large_ones_spill() {
        let small = Body::encode(ContentType::Bincode, &(7u64, "sixteen-byte-nam")).unwrap();
        assert!(matches!(small, Body::Inline { .. }));
        let back: (u64, String) = ContentType::Bincode.decode(&small).unwrap();
        assert_eq!(back, (7, "sixteen-byte-nam".to_owned()));

        let text = "x".repeat(1000);
        let large = Body::encode(ContentType::Json, &text).unwrap();
        assert!(matches!(large, Body::Shared(_)));
        let back: String = ContentType::Json.decode(&large).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn a_body_spills_exactly_at_the_inline_room() {
        for n in [INLINE - 1, INLINE, INLINE + 1] {
            let bytes: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let body = Body::encode(ContentType::Bincode, &bytes).unwrap();
            let back: Vec<u8> = ContentType::Bincode.decode(&body).unwrap();
            assert_eq!(back, bytes, "{n} bytes");
        }
    }

    #[test]
    fn on_the_wire_a_body_is_the_same_byte_string_as_bytes() {
        for n in [0, 5, INLINE, 300] {
            let raw: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let as_bytes = Bytes::from(raw.clone());
            let body = Body::copy_from_slice(&raw);
            for ct in [ContentType::Bincode, ContentType::Json] {
                let encoded = ct.encode(&body).unwrap();
                assert_eq!(encoded, ct.encode(&as_bytes).unwrap(), "{ct} {n}");
                let decoded: Body = ct.decode(&encoded).unwrap();
                assert_eq!(&*decoded, &raw[..], "{ct} {n}");
            }
        }
    }
}
