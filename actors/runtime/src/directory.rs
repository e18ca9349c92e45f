//! A node's name directory: name → running actor, private to the node.
//!
//! ractor's own name registry is process-global, so two nodes in one process could not both have
//! an actor called "cache". micro never passes names to ractor; each node keeps its own map.

use std::sync::Arc;

use dashmap::mapref::entry::Entry as MapEntry;
use ractor::{ActorCell, ActorStatus};

use crate::FastMap;
use crate::mailbox::MailboxBound;
use crate::{ActorId, Error};

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) cell: ActorCell,
    pub(crate) bound: Arc<MailboxBound>,
}

#[derive(Default)]
pub(crate) struct Directory {
    names: FastMap<Arc<str>, Entry>,
}

fn alive(cell: &ActorCell) -> bool {
    cell.get_status() <= ActorStatus::Upgrading
}

impl Directory {
    /// Fails when a running actor holds `name`.
    pub(crate) fn check_free(&self, name: &str) -> Result<(), Error> {
        match self.names.get(name) {
            Some(entry) if alive(&entry.cell) => Err(Error::NameTaken(name.to_owned())),
            _ => Ok(()),
        }
    }

    /// Binds `name` to `cell`, replacing a dead holder.
    pub(crate) fn register(
        &self,
        name: &Arc<str>,
        cell: ActorCell,
        bound: Arc<MailboxBound>,
    ) -> Result<(), Error> {
        match self.names.entry(name.clone()) {
            MapEntry::Occupied(held) if alive(&held.get().cell) => {
                Err(Error::NameTaken(name.to_string()))
            }
            MapEntry::Occupied(mut held) => {
                held.insert(Entry { cell, bound });
                Ok(())
            }
            MapEntry::Vacant(free) => {
                free.insert(Entry { cell, bound });
                Ok(())
            }
        }
    }

    /// Unbinds `name` if it still points at incarnation `id` (a newer one keeps it).
    pub(crate) fn remove_if(&self, name: &str, id: ActorId) {
        self.names
            .remove_if(name, |_, entry| ActorId::of(&entry.cell) == id);
    }

    /// The running actor called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Entry> {
        self.names
            .get(name)
            .map(|e| e.value().clone())
            .filter(|e| alive(&e.cell))
    }
}
