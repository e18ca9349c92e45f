//! Shape ids: a compact, stable id of a message type, for the contract check on the wire.
//!
//! bincode carries no schema, so a look-alike struct would decode as the type an endpoint
//! expects. Each call in a binary codec carries the id of its request's type in the envelope's
//! call data, and the endpoint compares it with its own before decoding.
//!
//! The id is a 64-bit FNV-1a hash over the type's serde *shape* at its top level: its kind
//! (struct, tuple struct, newtype struct, unit struct, enum, or a primitive), its name as serde
//! has it (no module path: the same struct moved to another module keeps its id) and, for a
//! struct, its field names in order. It is read from the type's own `Serialize` (the caller's
//! value) or `Deserialize` (the endpoint's type), through a serializer or deserializer that only
//! records the first call and stops: no new derive, no allocation, and nothing that depends on
//! the compiler (unlike `TypeId` or `type_name`). Types of other shapes (sequences, maps,
//! options, `flatten`ed structs, self-describing types) have no id and are not checked; field
//! types are not part of the id.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{self, Impossible, Serialize, Serializer};

/// The shape id of `T`, from its `Deserialize`; `None` for a type of a shape that has none.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct ReserveRequest { item: String, count: u32 }
///
/// #[derive(serde::Deserialize)]
/// struct LookAlike { name: String, count: u32 }
///
/// let expected = micro_service::shape_id::<ReserveRequest>();
/// assert!(expected.is_some());
/// assert_ne!(expected, micro_service::shape_id::<LookAlike>());
/// ```
pub fn shape_id<'de, T: Deserialize<'de>>() -> Option<u64> {
    let mut recorder = Recorder::new();
    // The recorder always refuses once it has seen the type's first request.
    let _ = T::deserialize(&mut recorder);
    recorder.id
}

/// The shape id of `value`'s type, from its `Serialize`: the same as [`shape_id`] for a type
/// whose `Serialize` and `Deserialize` have the same shape (every derived pair without
/// `flatten`, `from`/`into` or a name that differs between the two).
pub fn shape_id_of<T: Serialize + ?Sized>(value: &T) -> Option<u64> {
    let mut recorder = Recorder::new();
    let _ = value.serialize(&mut recorder);
    recorder.id
}

/// [`shape_id_of`] for a call's request, with the struct case (the usual request, and the only
/// one that costs more than hashing a name) cached per thread: the first call of a request type
/// hashes its field names, later ones find the id by the type's name and the struct's serde
/// name (both `&'static str`, compared by address) and stop there, before any field. Keyed by
/// the serde name too, so a type whose `Serialize` writes another struct depending on the value
/// (an untagged enum) gets each struct's own id; `dyn` types are not cached.
pub(crate) fn request_id_of<T: Serialize + ?Sized>(value: &T) -> Option<u64> {
    let type_name = std::any::type_name::<T>();
    let key = (!type_name.contains("dyn ")).then_some(type_name);
    let mut recorder = Recorder { id: None, key };
    let _ = value.serialize(&mut recorder);
    recorder.id
}

/// How many struct ids each thread keeps ([`request_id_of`]); a program calls few types.
const CACHED: usize = 16;

/// One cached struct id: the Rust type's name and the struct's serde name (by address and
/// length), and the id.
#[derive(Clone, Copy)]
struct Cached {
    type_name: (usize, usize),
    name: (usize, usize),
    id: u64,
}

impl Cached {
    const EMPTY: Cached = Cached {
        type_name: (0, 0),
        name: (0, 0),
        id: 0,
    };
}

thread_local! {
    static STRUCT_IDS: [std::cell::Cell<Cached>; CACHED] =
        const { [const { std::cell::Cell::new(Cached::EMPTY) }; CACHED] };
}

fn address(text: &str) -> (usize, usize) {
    (text.as_ptr() as usize, text.len())
}

/// The slot of a type in the cache.
fn slot(type_name: (usize, usize), name: (usize, usize)) -> usize {
    let mixed = (type_name.0 ^ name.0.rotate_left(17) ^ type_name.1 ^ name.1.rotate_left(7))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize);
    (mixed >> 16) % CACHED
}

fn cached_struct_id(type_name: &'static str, name: &'static str) -> Option<u64> {
    let (type_name, name) = (address(type_name), address(name));
    STRUCT_IDS.with(|slots| {
        let entry = slots[slot(type_name, name)].get();
        (entry.type_name == type_name && entry.name == name).then_some(entry.id)
    })
}

fn cache_struct_id(type_name: &'static str, name: &'static str, id: u64) {
    let (type_name, name) = (address(type_name), address(name));
    STRUCT_IDS.with(|slots| {
        slots[slot(type_name, name)].set(Cached {
            type_name,
            name,
            id,
        });
    });
}

/// How the detail of an endpoint's 400 for a request of another type ends: `got type <id in
/// hex>`; the client puts its type's name in place of it.
pub(crate) fn mismatch_tail(got: u64) -> String {
    format!("got type {got:016x}")
}

/// How the detail of a handler's 400 for a stream whose caller reads another response type
/// ends: `not type <id in hex>` (the caller's id); the caller puts its type's name in its place.
pub(crate) fn response_tail(expected: u64) -> String {
    format!("not type {expected:016x}")
}

/// FNV-1a, 64 bits: fixed constants, so ids are the same on every build.
struct Fnv(u64);

impl Fnv {
    fn new(kind: &str) -> Self {
        let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
        hash.write(kind);
        hash
    }

    fn write(&mut self, text: &str) {
        for byte in text.bytes().chain(std::iter::once(0)) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn named(kind: &str, name: &str) -> u64 {
    let mut hash = Fnv::new(kind);
    hash.write(name);
    hash.0
}

fn structure(name: &str, fields: &[&str]) -> u64 {
    let mut hash = Fnv::new("struct");
    hash.write(name);
    for field in fields {
        hash.write(field);
    }
    hash.0
}

/// Records the first thing a type asks of it (or gives it), then stops with [`Stop`].
struct Recorder {
    id: Option<u64>,
    /// The Rust type's name, to cache a struct's id under ([`request_id_of`]).
    key: Option<&'static str>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            id: None,
            key: None,
        }
    }

    fn stop<T, E: From<Stop>>(&mut self, id: Option<u64>) -> Result<T, E> {
        self.id = id;
        Err(E::from(Stop))
    }
}

/// The recorder's way out, as an error: it has what it needs.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shape recorded")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

macro_rules! deserialize_primitives {
    ($($method:ident => $kind:literal),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            self.stop(Some(named("primitive", $kind)))
        })*
    };
}

macro_rules! deserialize_unchecked {
    ($($method:ident),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            self.stop(None)
        })*
    };
}

impl<'de> Deserializer<'de> for &mut Recorder {
    type Error = Stop;

    deserialize_primitives! {
        deserialize_bool => "bool",
        deserialize_i8 => "i8",
        deserialize_i16 => "i16",
        deserialize_i32 => "i32",
        deserialize_i64 => "i64",
        deserialize_i128 => "i128",
        deserialize_u8 => "u8",
        deserialize_u16 => "u16",
        deserialize_u32 => "u32",
        deserialize_u64 => "u64",
        deserialize_u128 => "u128",
        deserialize_f32 => "f32",
        deserialize_f64 => "f64",
        deserialize_char => "char",
        deserialize_str => "string",
        deserialize_string => "string",
        deserialize_unit => "unit",
    }

    deserialize_unchecked! {
        deserialize_any,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.stop(Some(named("unit struct", name)))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.stop(Some(named("newtype struct", name)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Stop> {
        self.stop(None)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Stop> {
        self.stop(Some(named("tuple struct", name)))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.stop(Some(structure(name, fields)))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.stop(Some(named("enum", name)))
    }
}

macro_rules! serialize_primitives {
    ($($method:ident($ty:ty) => $kind:literal),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Stop> {
            self.stop(Some(named("primitive", $kind)))
        })*
    };
}

impl<'a> Serializer for &'a mut Recorder {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Impossible<(), Stop>;

    serialize_primitives! {
        serialize_bool(bool) => "bool",
        serialize_i8(i8) => "i8",
        serialize_i16(i16) => "i16",
        serialize_i32(i32) => "i32",
        serialize_i64(i64) => "i64",
        serialize_i128(i128) => "i128",
        serialize_u8(u8) => "u8",
        serialize_u16(u16) => "u16",
        serialize_u32(u32) => "u32",
        serialize_u64(u64) => "u64",
        serialize_u128(u128) => "u128",
        serialize_f32(f32) => "f32",
        serialize_f64(f64) => "f64",
        serialize_char(char) => "char",
        serialize_str(&str) => "string",
    }

    fn serialize_unit(self) -> Result<(), Stop> {
        self.stop(Some(named("primitive", "unit")))
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), Stop> {
        self.stop(None)
    }

    fn serialize_none(self) -> Result<(), Stop> {
        self.stop(None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Stop> {
        self.stop(None)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<(), Stop> {
        self.stop(Some(named("unit struct", name)))
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Stop> {
        self.stop(Some(named("enum", name)))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        self.stop(Some(named("newtype struct", name)))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        self.stop(Some(named("enum", name)))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        self.stop(None)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
        self.stop(None)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        self.stop(Some(named("tuple struct", name)))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        self.stop(Some(named("enum", name)))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        self.stop(None)
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        if let Some(key) = self.key
            && let Some(id) = cached_struct_id(key, name)
        {
            return self.stop(Some(id));
        }
        let mut hash = Fnv::new("struct");
        hash.write(name);
        Ok(Fields {
            recorder: self,
            hash,
            name,
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        self.stop(Some(named("enum", name)))
    }
}

/// A struct's field names, in order (skipped ones included, as `Deserialize` lists them).
struct Fields<'a> {
    recorder: &'a mut Recorder,
    hash: Fnv,
    name: &'static str,
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = Stop;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        self.hash.write(key);
        Ok(())
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Stop> {
        self.hash.write(key);
        Ok(())
    }

    fn end(self) -> Result<(), Stop> {
        if let Some(key) = self.recorder.key {
            cache_struct_id(key, self.name, self.hash.0);
        }
        self.recorder.id = Some(self.hash.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::{request_id_of, shape_id, shape_id_of};

    #[derive(Serialize, Deserialize)]
    struct ReserveRequest {
        item: String,
        count: u32,
    }

    mod elsewhere {
        /// The same name and fields in another module.
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct ReserveRequest {
            pub(super) item: String,
            pub(super) count: u32,
        }
    }

    /// Same fields, another name.
    #[derive(Serialize, Deserialize)]
    struct LookAlike {
        item: String,
        count: u32,
    }

    /// Same name as `ReserveRequest`'s, one field renamed (in another module, to compile).
    mod renamed_field {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct ReserveRequest {
            pub(super) name: String,
            pub(super) count: u32,
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Sparse {
        a: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<u32>,
    }

    #[derive(Serialize, Deserialize)]
    enum Command {
        Stop,
        Go(u32),
    }

    #[test]
    fn the_id_of_a_fixed_type_is_pinned() {
        // FNV-1a 64 over "struct\0ReserveRequest\0item\0count\0". If this changes, nodes
        // built before and after no longer agree: never change it.
        assert_eq!(shape_id::<ReserveRequest>(), Some(0xb1be_f663_bc47_5f91));
    }

    #[test]
    fn serialize_and_deserialize_agree() {
        let request = ReserveRequest {
            item: "pear".into(),
            count: 1,
        };
        assert_eq!(shape_id_of(&request), shape_id::<ReserveRequest>());
        assert_eq!(shape_id_of("ada"), shape_id::<String>());
        assert_eq!(shape_id_of(&7u32), shape_id::<u32>());
        assert_eq!(shape_id_of(&()), shape_id::<()>());
        assert_eq!(shape_id_of(&Command::Stop), shape_id::<Command>());
        assert_eq!(shape_id_of(&Command::Go(1)), shape_id::<Command>());
        // A field skipped when empty still counts.
        let sparse = Sparse { a: 1, b: None };
        assert_eq!(shape_id_of(&sparse), shape_id::<Sparse>());
    }

    #[test]
    fn names_and_field_names_tell_types_apart_module_paths_do_not() {
        let id = shape_id::<ReserveRequest>();
        assert_eq!(id, shape_id::<elsewhere::ReserveRequest>());
        assert_ne!(id, shape_id::<LookAlike>());
        assert_ne!(id, shape_id::<renamed_field::ReserveRequest>());
        assert_ne!(shape_id::<String>(), shape_id::<u32>());
    }

    /// Serializes as whichever struct it holds.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Either {
        Request(ReserveRequest),
        LookAlike(LookAlike),
    }

    #[test]
    fn the_cached_id_of_a_request_is_its_shape_id_every_time() {
        let request = ReserveRequest {
            item: "pear".into(),
            count: 1,
        };
        for _ in 0..3 {
            assert_eq!(request_id_of(&request), shape_id::<ReserveRequest>());
            assert_eq!(request_id_of("ada"), shape_id::<String>());
            let sparse = Sparse { a: 1, b: Some(2) };
            assert_eq!(request_id_of(&sparse), shape_id::<Sparse>());
        }
        // A type that writes another struct depending on the value gets each one's id.
        let look_alike = LookAlike {
            item: "pear".into(),
            count: 1,
        };
        for _ in 0..2 {
            assert_eq!(
                request_id_of(&Either::Request(ReserveRequest {
                    item: "pear".into(),
                    count: 1,
                })),
                shape_id::<ReserveRequest>()
            );
            assert_eq!(
                request_id_of(&Either::LookAlike(LookAlike {
                    item: "pear".into(),
                    count: 1,
                })),
                shape_id::<LookAlike>()
            );
        }
        assert_eq!(request_id_of(&look_alike), shape_id::<LookAlike>());
        // The same name and fields elsewhere: the same id, cached or not.
        let copy = elsewhere::ReserveRequest {
            item: "pear".into(),
            count: 1,
        };
        assert_eq!(request_id_of(&copy), shape_id::<ReserveRequest>());
    }

    #[test]
    fn shapes_without_an_id_are_not_checked() {
        assert_eq!(shape_id::<Vec<u32>>(), None);
        assert_eq!(shape_id::<Option<ReserveRequest>>(), None);
        assert_eq!(shape_id_of(&vec![1u32]), None);
        assert_eq!(shape_id_of(&Some(1u32)), None);
    }
}
