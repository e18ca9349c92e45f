//! What every embedded engine (memory, redb) does, and the rules they share: names, limits,
//! compare-and-set, query selection, the clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Query, Record, Scope, StoreError, StoreEvent};

/// An embedded engine: synchronous, shared between the store actor (writes, sweeps, watches)
/// and local handles (reads, straight from the engine). Every method takes `now` in
/// milliseconds since the Unix epoch; expired records are never returned.
pub(crate) trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// The record at `key`, unless absent or expired.
    fn read(&self, scope: &Scope, key: &str, now: u64) -> Result<Option<Record>, StoreError>;

    /// The records `query` selects.
    fn scan(&self, scope: &Scope, query: &Query, now: u64) -> Result<Vec<Record>, StoreError>;

    /// The keys `query` selects.
    fn list(&self, scope: &Scope, query: &Query, now: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .scan(scope, query, now)?
            .into_iter()
            .map(|r| r.key)
            .collect())
    }

    /// Writes `record` (its expiry already absolute) at the next revision, if the stored
    /// version is `if_version` when given; the change made.
    fn write(
        &self,
        scope: &Scope,
        record: Record,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<StoreEvent, StoreError>;

    /// Deletes `key`, if its version is `if_version` when given; the change made, if any.
    fn delete(
        &self,
        scope: &Scope,
        key: &str,
        if_version: Option<u64>,
        now: u64,
    ) -> Result<Option<StoreEvent>, StoreError>;

    /// Removes up to `max` records expired at `now` (through the expiry index); the changes
    /// made, with their databases.
    fn expire(&self, now: u64, max: usize) -> Result<Vec<(String, StoreEvent)>, StoreError>;

    /// The changes of `database` kept from revision `from` on, in order; `Compacted` if `from`
    /// is older than the history kept.
    fn changes(&self, database: &str, from: u64) -> Result<Vec<StoreEvent>, StoreError>;

    /// The database's current revision.
    fn revision(&self, database: &str) -> Result<u64, StoreError>;
}

/// Limits on what a store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest key, in bytes (default 1 KiB).
    pub max_key: usize,
    /// The largest value plus metadata, in bytes (default 1 MiB).
    pub max_value: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key: 1024,
            max_value: 1 << 20,
        }
    }
}

impl Limits {
    /// Checks a key against the limits.
    pub(crate) fn check_key(&self, key: &str) -> Result<(), StoreError> {
        let reason = if key.is_empty() {
            "empty".to_owned()
        } else if key.len() > self.max_key {
            format!("{} bytes, the limit is {}", key.len(), self.max_key)
        } else if key.contains('\0') {
            "contains a NUL character".to_owned()
        } else {
            return Ok(());
        };
        Err(StoreError::InvalidKey {
            key: key.chars().take(64).collect(),
            reason,
        })
    }

    /// Checks a record against the limits.
    pub(crate) fn check_record(&self, record: &Record) -> Result<(), StoreError> {
        self.check_key(&record.key)?;
        let size = record.value.len()
            + record
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > self.max_value {
            return Err(StoreError::ValueTooLarge {
                key: record.key.clone(),
                size,
                limit: self.max_value,
            });
        }
        Ok(())
    }
}

/// Checks that `name` can be a database or table in every engine (a plain SQL identifier).
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what: what.to_owned(),
            name: name.chars().take(64).collect(),
        })
    }
}

/// Checks both names of a scope.
pub(crate) fn check_scope(scope: &Scope) -> Result<(), StoreError> {
    check_name("database", &scope.database)?;
    check_name("table", &scope.table)
}

/// The compare-and-set rule: `expected` (when given) must be the stored version, 0 for absent.
pub(crate) fn check_version(
    key: &str,
    stored: Option<&Record>,
    expected: Option<u64>,
) -> Result<(), StoreError> {
    let found = stored.map_or(0, |r| r.version);
    match expected {
        Some(expected) if expected != found => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            found,
        }),
        _ => Ok(()),
    }
}

/// The first string after every string starting with `prefix` (`None`: no such bound). UTF-8
/// byte order is code point order, so incrementing the last char that can be is enough.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Applies the query's suffix, expiry, offset and limit to records in range order (the prefix
/// and the order are the engine's range scan).
pub(crate) fn select(
    records: impl Iterator<Item = Result<Record, StoreError>>,
    query: &Query,
    now: u64,
) -> Result<Vec<Record>, StoreError> {
    let limit = query
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut skipped = 0;
    if limit == 0 {
        return Ok(out);
    }
    for record in records {
        let record = record?;
        if record.expired_at(now) || !query.matches(&record.key) {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        out.push(record);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// What a local handle reads directly: the engine, its clock and limits.
#[derive(Debug, Clone)]
pub(crate) struct Direct {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) clock: Clock,
    pub(crate) limits: Limits,
}

impl Direct {
    pub(crate) fn read(
        &self,
        scope: &Scope,
        key: &str,
    ) -> Result<Option<crate::Record>, StoreError> {
        check_scope(scope)?;
        self.limits.check_key(key)?;
        self.engine.read(scope, key, self.clock.now())
    }

    pub(crate) fn scan(
        &self,
        scope: &Scope,
        query: &crate::Query,
    ) -> Result<Vec<crate::Record>, StoreError> {
        check_scope(scope)?;
        self.engine.scan(scope, query, self.clock.now())
    }

    pub(crate) fn list(
        &self,
        scope: &Scope,
        query: &crate::Query,
    ) -> Result<Vec<String>, StoreError> {
        check_scope(scope)?;
        self.engine.list(scope, query, self.clock.now())
    }
}

/// Wall-clock milliseconds that advance with tokio's clock: the wall time when the store
/// started plus tokio's elapsed time since. Under a paused tokio clock (tests) TTLs follow
/// `tokio::time::advance`; otherwise it is the wall clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    unix_ms: u64,
    at: tokio::time::Instant,
}

impl Clock {
    /// A clock anchored now.
    pub(crate) fn new() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Clock {
            unix_ms: u64::try_from(unix_ms).unwrap_or(u64::MAX),
            at: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.unix_ms.saturating_add(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sql_identifiers() {
        for good in ["orders", "_x", "a1", "Orders_2024"] {
            assert!(check_name("table", good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "1a", "a-b", "a b", "drop;table", "é", long.as_str()] {
            assert!(check_name("table", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_prefix_end_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        let end = prefix_end("user/").unwrap();
        assert!("user/zzz\u{10FFFF}".as_bytes() < end.as_bytes());
    }

    #[test]
    fn compare_and_set_takes_zero_for_absent() {
        let mut stored = Record::new("k", "v");
        stored.version = 7;
        assert!(check_version("k", None, Some(0)).is_ok());
        assert!(check_version("k", Some(&stored), Some(7)).is_ok());
        assert!(check_version("k", Some(&stored), None).is_ok());
        assert_eq!(
            check_version("k", Some(&stored), Some(0)),
            Err(StoreError::Conflict {
                key: "k".into(),
                expected: 0,
                found: 7
            })
        );
    }

    #[test]
    fn limits_refuse_empty_long_keys_and_large_values() {
        let limits = Limits {
            max_key: 4,
            max_value: 8,
        };
        assert!(limits.check_key("").is_err());
        assert!(limits.check_key("abcde").is_err());
        assert!(limits.check_record(&Record::new("k", vec![0; 8])).is_ok());
        assert!(matches!(
            limits.check_record(&Record::new("k", vec![0; 9])),
            Err(StoreError::ValueTooLarge { size: 9, .. })
        ));
    }
}
