//! Key/value strings that travel with services and messages.

use std::collections::BTreeMap;

/// Key/value strings attached to things that travel: a registry record's metadata (services,
/// endpoints, nodes) and a broker message's headers (Go Micro's `map[string]string`).
///
/// A sorted map, so its serde form (a map of strings, in key order) is the same on every node
/// and the same bytes the registry and the broker have always sent.
pub type Metadata = BTreeMap<String, String>;
