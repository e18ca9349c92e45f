//! The memory engine: every database in one process's memory. [`MemState`] is the state
//! machine (records, versions, per-database revisions, the expiry index, the change history),
//! free of I/O with time passed in; [`MemoryEngine`] shares it between the actor and local
//! handles behind a lock. It lives as long as the store's child spec, so a restarted store
//! actor finds its data again (a restarted node does not).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::RwLock;

use crate::engine::{Engine, check_version, prefix_end, select};
use crate::{EventKind, Order, Query, Record, Scope, StoreError, StoreEvent};

/// The whole memory store.
#[derive(Debug)]
pub(crate) struct MemState {
    databases: BTreeMap<String, MemDb>,
    /// (expiry, database, table, key): the records with an expiry, soonest first.
    expiry: BTreeSet<(u64, String, String, String)>,
    /// Changes kept per database for watchers that resume.
    history: usize,
}

#[derive(Debug, Default)]
struct MemDb {
    revision: u64,
    tables: BTreeMap<String, BTreeMap<String, Record>>,
    log: VecDeque<StoreEvent>,
}

impl MemState {
    /// An empty store keeping `history` changes per database.
    pub(crate) fn new(history: usize) -> Self {
        MemState {
            databases: BTreeMap::new(),
            expiry: BTreeSet::new(),
            history: history.max(1),
        }
    }

    fn table(&self, scope: &Scope) -> Option<&BTreeMap<String, Record>> {
        self.databases
            .get(&scope.database)?
            .tables
            .get(&scope.table)
    }

    pub(crate) fn read(&self, scope: &Scope, key: &str, now: u64) -> Option<Record> {
        self.table(scope)?
            .get(key)
            .filter(|r| !r.expired_at(now))
            .cloned()
    }

    pub(crate) fn scan(&self, scope: &Scope, query: &Query, now: u64) -> Vec<Record> {
        let Some(table) = self.table(scope) else {
            return Vec::new();
        };
        let prefix = query.prefix.clone().unwrap_or_default();
        let end = prefix_end(&prefix);
        let range = (
            Bound::Included(prefix),
            end.map_or(Bound::Unbounded, Bound::Excluded),
        );
        let records = table.range::<String, _>(range).map(|(_, r)| Ok(r.clone()));
        let selected = match query.order {
            Order::Ascending => select(records, query, now),
            Order::Descending => select(records.rev(), query, now),
        };
        selected.unwrap_or_default()
    }

    pub(crate) fn write(
        &mut self,
        scope: &Scope,
        mut record: Record,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<StoreEvent, StoreError> {
        let db = self.databases.entry(scope.database.clone()).or_default();
        let table = db.tables.entry(scope.table.clone()).or_default();
        let stored = table.get(&record.key).filter(|r| !r.expired_at(now));
        check_version(&record.key, stored, if_version)?;
        if let Some(old) = table.get(&record.key)
            && let Some(at) = old.expiry
        {
            self.expiry.remove(&(
                at,
                scope.database.clone(),
                scope.table.clone(),
                record.key.clone(),
            ));
        }
        db.revision += 1;
        record.version = db.revision;
        if let Some(at) = record.expiry {
            self.expiry.insert((
                at,
                scope.database.clone(),
                scope.table.clone(),
                record.key.clone(),
            ));
        }
        table.insert(record.key.clone(), record.clone());
        let event = StoreEvent {
            revision: db.revision,
            table: scope.table.clone(),
            key: record.key.clone(),
            kind: EventKind::Put,
            record,
        };
        Self::log(db, self.history, &event);
        Ok(event)
    }

    pub(crate) fn delete(
        &mut self,
        scope: &Scope,
        key: &str,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<Option<StoreEvent>, StoreError> {
        let stored = self.read(scope, key, now);
        check_version(key, stored.as_ref(), if_version)?;
        if stored.is_none() {
            return Ok(None);
        }
        Ok(self.remove(scope, key, EventKind::Delete))
    }

    /// Removes `key` at the next revision, telling how.
    fn remove(&mut self, scope: &Scope, key: &str, kind: EventKind) -> Option<StoreEvent> {
        let db = self.databases.get_mut(&scope.database)?;
        let record = db.tables.get_mut(&scope.table)?.remove(key)?;
        if let Some(at) = record.expiry {
            self.expiry.remove(&(
                at,
                scope.database.clone(),
                scope.table.clone(),
                key.to_owned(),
            ));
        }
        db.revision += 1;
        let event = StoreEvent {
            revision: db.revision,
            table: scope.table.clone(),
            key: key.to_owned(),
            kind,
            record,
        };
        Self::log(db, self.history, &event);
        Some(event)
    }

    fn log(db: &mut MemDb, history: usize, event: &StoreEvent) {
        db.log.push_back(event.clone());
        while db.log.len() > history {
            db.log.pop_front();
        }
    }

    pub(crate) fn expire(&mut self, now: u64, max: usize) -> Vec<(String, StoreEvent)> {
        let mut events = Vec::new();
        while events.len() < max {
            let Some(first) = self.expiry.first() else {
                break;
            };
            if first.0 > now {
                break;
            }
            let Some((_, database, table, key)) = self.expiry.pop_first() else {
                break;
            };
            let scope = Scope::new(database.clone(), table);
            if let Some(event) = self.remove(&scope, &key, EventKind::Expired) {
                events.push((database, event));
            }
        }
        events
    }

    pub(crate) fn changes(&self, database: &str, from: u64) -> Result<Vec<StoreEvent>, StoreError> {
        let Some(db) = self.databases.get(database) else {
            return Ok(Vec::new());
        };
        let oldest = db.log.front().map_or(db.revision + 1, |e| e.revision);
        if from < oldest && from <= db.revision && from > 0 {
            return Err(StoreError::Compacted {
                database: database.to_owned(),
                requested: from,
                oldest,
            });
        }
        Ok(db
            .log
            .iter()
            .filter(|e| e.revision >= from)
            .cloned()
            .collect())
    }

    pub(crate) fn revision(&self, database: &str) -> u64 {
        self.databases.get(database).map_or(0, |db| db.revision)
    }
}

/// The memory engine behind a lock, shared by the actor and local handles.
#[derive(Debug)]
pub(crate) struct MemoryEngine(RwLock<MemState>);

impl MemoryEngine {
    pub(crate) fn new(history: usize) -> Self {
        MemoryEngine(RwLock::new(MemState::new(history)))
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, MemState> {
        // A panic while holding the lock cannot leave a record half written (each change is
        // one insert or remove), so a poisoned lock is still usable.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, MemState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn read(&self, scope: &Scope, key: &str, now: u64) -> Result<Option<Record>, StoreError> {
        Ok(self.state().read(scope, key, now))
    }

    fn scan(&self, scope: &Scope, query: &Query, now: u64) -> Result<Vec<Record>, StoreError> {
        Ok(self.state().scan(scope, query, now))
    }

    fn write(
        &self,
        scope: &Scope,
        record: Record,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<StoreEvent, StoreError> {
        self.state_mut().write(scope, record, if_version, now)
    }

    fn delete(
        &self,
        scope: &Scope,
        key: &str,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<Option<StoreEvent>, StoreError> {
        self.state_mut().delete(scope, key, if_version, now)
    }

    fn expire(&self, now: u64, max: usize) -> Result<Vec<(String, StoreEvent)>, StoreError> {
        Ok(self.state_mut().expire(now, max))
    }

    fn changes(&self, database: &str, from: u64) -> Result<Vec<StoreEvent>, StoreError> {
        self.state().changes(database, from)
    }

    fn revision(&self, database: &str) -> Result<u64, StoreError> {
        Ok(self.state().revision(database))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::default()
    }

    #[test]
    fn versions_are_revisions_and_compare_and_set_checks_them() {
        let mut state = MemState::new(100);
        let a = state
            .write(&scope(), Record::new("a", "1"), Some(0), 0)
            .unwrap();
        assert_eq!(a.revision, 1);
        assert_eq!(a.record.version, 1);
        assert!(matches!(
            state.write(&scope(), Record::new("a", "2"), Some(0), 0),
            Err(StoreError::Conflict { found: 1, .. })
        ));
        let b = state
            .write(&scope(), Record::new("a", "2"), Some(1), 0)
            .unwrap();
        assert_eq!(b.record.version, 2);
        assert_eq!(state.revision("micro"), 2);
        // A delete is a change too; a new write of the key gets a higher version.
        assert!(state.delete(&scope(), "a", Some(2), 0).unwrap().is_some());
        let c = state
            .write(&scope(), Record::new("a", "3"), Some(0), 0)
            .unwrap();
        assert_eq!(c.record.version, 4);
    }

    #[test]
    fn expired_records_are_invisible_then_swept_through_the_index() {
        let mut state = MemState::new(100);
        state
            .write(
                &scope(),
                Record::new("soon", "x").with_expiry(1_000),
                None,
                0,
            )
            .unwrap();
        state
            .write(
                &scope(),
                Record::new("later", "x").with_expiry(5_000),
                None,
                0,
            )
            .unwrap();
        state
            .write(&scope(), Record::new("never", "x"), None, 0)
            .unwrap();
        assert!(state.read(&scope(), "soon", 999).is_some());
        assert!(
            state.read(&scope(), "soon", 1_000).is_none(),
            "expiry is inclusive"
        );
        assert_eq!(state.scan(&scope(), &Query::all(), 1_000).len(), 2);

        let swept = state.expire(1_000, 100);
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].1.kind, EventKind::Expired);
        assert_eq!(swept[0].1.key, "soon");
        assert!(state.expire(4_999, 100).is_empty());
        assert_eq!(state.expire(10_000, 100).len(), 1);
        assert_eq!(state.scan(&scope(), &Query::all(), 10_000).len(), 1);
    }

    #[test]
    fn an_overwrite_moves_the_expiry() {
        let mut state = MemState::new(100);
        state
            .write(&scope(), Record::new("k", "x").with_expiry(1_000), None, 0)
            .unwrap();
        state
            .write(&scope(), Record::new("k", "y"), None, 0)
            .unwrap();
        assert!(state.expire(2_000, 100).is_empty());
        assert!(state.read(&scope(), "k", 2_000).is_some());
    }

    #[test]
    fn queries_range_by_prefix_and_filter_by_suffix() {
        let mut state = MemState::new(100);
        for key in ["user/1/name", "user/1/mail", "user/2/name", "users", "zz"] {
            state
                .write(&scope(), Record::new(key, "v"), None, 0)
                .unwrap();
        }
        let keys = |q: Query| -> Vec<String> {
            state
                .scan(&scope(), &q, 0)
                .into_iter()
                .map(|r| r.key)
                .collect()
        };
        assert_eq!(
            keys(Query::prefix("user/")),
            ["user/1/mail", "user/1/name", "user/2/name"]
        );
        assert_eq!(
            keys(
                Query::prefix("user/")
                    .suffix("/name")
                    .order(Order::Descending)
            ),
            ["user/2/name", "user/1/name"]
        );
        assert_eq!(
            keys(Query::all().offset(1).limit(2)),
            ["user/1/name", "user/2/name"]
        );
        assert_eq!(keys(Query::all().suffix("z")), ["zz"]);
    }

    #[test]
    fn history_is_bounded_and_older_revisions_are_compacted() {
        let mut state = MemState::new(3);
        for i in 0..5 {
            state
                .write(&scope(), Record::new(format!("k{i}"), "v"), None, 0)
                .unwrap();
        }
        let kept = state.changes("micro", 3).unwrap();
        assert_eq!(
            kept.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(matches!(
            state.changes("micro", 2),
            Err(StoreError::Compacted { oldest: 3, .. })
        ));
        assert!(state.changes("micro", 6).unwrap().is_empty());
        assert!(state.changes("other", 1).unwrap().is_empty());
    }
}
