//! Frames: what peer links carry between nodes, and the link seam they travel through.
//!
//! This links are in-process (see [`super::loopback`]); the QUIC link lays the same frames
//! out on the wire. Bodies are always bytes from a codec, so a frame that crosses an in-process
//! link has been through exactly the encoding a network would impose.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ContentType;
use crate::{ActorId, Error};

/// The actor a frame is for, on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Target {
    /// One incarnation, by id.
    Id(ActorId),
    /// Whatever incarnation holds the name when the frame arrives.
    Name(Arc<str>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Id(id) => write!(f, "{id}"),
            Target::Name(name) => write!(f, "{name:?}"),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Frame {
    /// A message for an actor.
    Deliver {
        to: Target,
        /// The message's declared, stable type name, checked before decoding.
        type_name: &'static str,
        content_type: ContentType,
        body: Vec<u8>,
    },
    /// The answer to a [`Reply`](crate::Reply) that travelled, for the asker's node.
    Reply {
        request: u64,
        outcome: Result<(ContentType, Vec<u8>), Error>,
    },
}

/// A way to get frames to one peer node.
pub(crate) trait PeerLink: Send + Sync {
    fn send(&self, frame: Frame) -> Result<(), Error>;
}
