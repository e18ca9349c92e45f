//! Identities of nodes and actors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity: 128 random bits chosen when the node starts, so every start of a process is
/// a new incarnation with a new id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(u128);

impl NodeId {
    /// A fresh random id.
    pub fn random() -> Self {
        NodeId(rand::random())
    }

    /// The id as a number (for wire formats and logs).
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// An id from its numeric form.
    pub fn from_u128(raw: u128) -> Self {
        NodeId(raw)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 48 bits are plenty to tell nodes apart in logs.
        write!(f, "{:012x}", self.0 >> 80)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:032x})", self.0)
    }
}

/// An actor's identity within its node: unique per incarnation, never reused while the process
/// lives. A restarted actor gets a new id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorId(pub(crate) u64);

impl ActorId {
    pub(crate) fn of(cell: &ractor::ActorCell) -> Self {
        ActorId(cell.get_id().pid())
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({})", self.0)
    }
}
