//! The merge model, free of I/O: layers in the order added (later wins), the merged tree, which
//! layer set each leaf, `${VAR}` substitution, and which watches a change concerns.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigError;

/// How `${VAR}` is looked up: the process environment in the actor, a table in tests.
pub(crate) type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment as a [`Lookup`].
pub(crate) fn process_env() -> Lookup {
    Arc::new(|name| std::env::var(name).ok())
}

/// The layers and their merge. Each `set` recomputes the merged tree; what changed is read by
/// [`Watches::changed`].
pub(crate) struct Layers {
    layers: Vec<Layer>,
    merged: Value,
    /// Dotted leaf path → index of the layer that set it. A leaf is a scalar, an array (arrays
    /// are replaced whole) or an empty object.
    origins: BTreeMap<String, usize>,
    lookup: Lookup,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("layers", &self.layers)
            .field("merged", &self.merged)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Layer {
    name: String,
    value: Option<Value>,
    error: Option<String>,
}

impl Layers {
    /// No layers yet; `${VAR}` read through `lookup`.
    pub(crate) fn new(lookup: Lookup) -> Self {
        Layers {
            layers: Vec::new(),
            merged: Value::Object(Map::new()),
            origins: BTreeMap::new(),
            lookup,
        }
    }

    /// Adds a layer above the others (it wins over them); returns its index.
    pub(crate) fn push(&mut self, name: impl Into<String>) -> usize {
        self.layers.push(Layer {
            name: name.into(),
            value: None,
            error: None,
        });
        self.layers.len() - 1
    }

    /// The layer's new contents (an object, or anything: a non-object replaces the tree below
    /// it). Clears its error. Returns whether the merged tree changed.
    pub(crate) fn set(&mut self, layer: usize, value: Value) -> bool {
        let Some(entry) = self.layers.get_mut(layer) else {
            return false;
        };
        entry.error = None;
        if entry.value.as_ref() == Some(&value) {
            return false;
        }
        entry.value = Some(value);
        self.remerge()
    }

    /// The layer failed to load: it keeps its last good contents and records the error.
    pub(crate) fn fail(&mut self, layer: usize, error: String) {
        if let Some(entry) = self.layers.get_mut(layer) {
            entry.error = Some(error);
        }
    }

    /// The layer's name (what errors call its source).
    pub(crate) fn name(&self, layer: usize) -> &str {
        self.layers.get(layer).map_or("", |l| l.name.as_str())
    }

    /// Each layer: name, loaded, last error.
    pub(crate) fn statuses(&self) -> Vec<crate::SourceStatus> {
        self.layers
            .iter()
            .map(|l| crate::SourceStatus {
                name: l.name.clone(),
                loaded: l.value.is_some(),
                error: l.error.clone(),
            })
            .collect()
    }

    /// The value at a dotted path (`""` is the whole tree).
    pub(crate) fn get(&self, path: &str) -> Option<&Value> {
        lookup_path(&self.merged, path)
    }

    /// What a reader of `path` gets: the value and the sources of the leaves at, above or
    /// below it.
    pub(crate) fn entry(&self, path: &str) -> Entry {
        let value = self.get(path).map(Value::to_string);
        Entry {
            path: path.to_owned(),
            value,
            origins: self.origins_for(path),
        }
    }

    fn origins_for(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // The nearest ancestor leaf (a path inside an array or a scalar).
        let mut up = path;
        while let Some((parent, _)) = up.rsplit_once('.') {
            if let Some(&layer) = self.origins.get(parent) {
                out.push((parent.to_owned(), self.name(layer).to_owned()));
            }
            up = parent;
        }
        for (leaf, &layer) in &self.origins {
            if is_under(leaf, path) {
                out.push((leaf.clone(), self.name(layer).to_owned()));
            }
        }
        out
    }

    fn remerge(&mut self) -> bool {
        let mut merged = Value::Object(Map::new());
        let mut origins = BTreeMap::new();
        for (index, layer) in self.layers.iter().enumerate() {
            if let Some(value) = &layer.value {
                merge_into(&mut merged, value, "", index, &mut origins);
            }
        }
        substitute(&mut merged, self.lookup.as_ref());
        self.origins = origins;
        if merged == self.merged {
            return false;
        }
        self.merged = merged;
        true
    }
}

/// Whether `leaf` is `path` or below it.
fn is_under(leaf: &str, path: &str) -> bool {
    path.is_empty()
        || leaf == path
        || (leaf.len() > path.len()
            && leaf.starts_with(path)
            && leaf.as_bytes()[path.len()] == b'.')
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Merges `src` (of layer `index`) into `dst` at `path`: objects key by key, anything else
/// replaces what was there.
fn merge_into(
    dst: &mut Value,
    src: &Value,
    path: &str,
    index: usize,
    origins: &mut BTreeMap<String, usize>,
) {
    match (dst, src) {
        (Value::Object(dst), Value::Object(src)) => {
            // Objects merge key by key (an empty one adds nothing).
            if !src.is_empty() {
                // The empty object that was a leaf here is one no more.
                origins.remove(path);
            }
            for (key, value) in src {
                let child = join(path, key);
                match dst.get_mut(key) {
                    Some(existing) => merge_into(existing, value, &child, index, origins),
                    None => {
                        record(value, &child, index, origins);
                        dst.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (dst, src) => {
            origins.retain(|leaf, _| !is_under(leaf, path));
            record(src, path, index, origins);
            *dst = src.clone();
        }
    }
}

/// Records layer `index` as the origin of every leaf of `value` at `path`.
fn record(value: &Value, path: &str, index: usize, origins: &mut BTreeMap<String, usize>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                record(value, &join(path, key), index, origins);
            }
        }
        _ => {
            origins.insert(path.to_owned(), index);
        }
    }
}

/// The value at a dotted path; a numeric segment indexes an array.
pub(crate) fn lookup_path<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(root);
    }
    path.split('.')
        .try_fold(root, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// A value placed at a dotted path: `("a.b", 1)` is `{"a": {"b": 1}}`. Empty segments are
/// refused.
pub(crate) fn nest(path: &[String], value: Value) -> Value {
    path.iter().rev().fold(value, |inner, key| {
        let mut map = Map::new();
        map.insert(key.clone(), inner);
        Value::Object(map)
    })
}

/// Deep-merges `src` into `dst` (objects key by key, later wins), for building one layer from
/// several pieces (environment variables, overrides, etcd keys).
pub(crate) fn merge_plain(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(dst), Value::Object(src)) => {
            for (key, value) in src {
                match dst.get_mut(&key) {
                    Some(existing) => merge_plain(existing, value),
                    None => {
                        dst.insert(key, value);
                    }
                }
            }
        }
        (dst, src) => *dst = src,
    }
}

/// A text value from the environment, an override or a key-value store: JSON when it reads as
/// JSON (`5432`, `true`, `[1,2]`, `"quoted"`), else the text itself.
pub(crate) fn scalar(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string of `value`. An unset variable
/// without a default becomes the empty string (as in a shell); `$${` is a literal `${`.
fn substitute(value: &mut Value, lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync)) {
    match value {
        Value::String(text) if text.contains('$') => {
            if let Some(done) = expand(text, lookup) {
                *text = done;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, lookup)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, lookup)),
        _ => {}
    }
}

/// `text` with its references expanded, or `None` when it has none.
pub(crate) fn expand(
    text: &str,
    lookup: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(escaped) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            changed = true;
        } else if let Some(body) = tail.strip_prefix("${")
            && let Some(end) = body.find('}')
        {
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            match lookup(name).filter(|v| !(default.is_some() && v.is_empty())) {
                Some(found) => out.push_str(&found),
                None => out.push_str(default.unwrap_or("")),
            }
            rest = &body[end + 1..];
            changed = true;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// What a reader of one path gets, as it travels (JSON text, since the tree's shape is only
/// known at run time): the value, if any, and which source set each leaf at, above or below
/// the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The dotted path read (`""` for the whole tree).
    pub path: String,
    /// The value there as JSON text; `None` when nothing is set there.
    pub value: Option<String>,
    /// (leaf path, source name) for the leaves at, above or below the path.
    pub origins: Vec<(String, String)>,
}

impl Entry {
    /// The value as JSON (`None` when nothing is set there).
    pub fn json(&self) -> Result<Option<Value>, ConfigError> {
        self.value
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| ConfigError::Decode {
                path: self.path.clone(),
                expected: "JSON".to_owned(),
                source_name: String::new(),
                message: e.to_string(),
            })
    }

    /// The source that set the value at `path` (a leaf at or above it), or the sources of the
    /// leaves below it, joined by `", "`.
    pub fn source_of(&self, path: &str) -> String {
        if let Some((_, source)) = self
            .origins
            .iter()
            .filter(|(leaf, _)| leaf == path || is_under(path, leaf))
            .max_by_key(|(leaf, _)| leaf.len())
        {
            return source.clone();
        }
        let mut names: Vec<&str> = Vec::new();
        for (leaf, source) in &self.origins {
            if is_under(leaf, path) && !names.contains(&source.as_str()) {
                names.push(source);
            }
        }
        names.join(", ")
    }

    /// The value decoded as `T`. Nothing set there decodes as `null` when `T` takes it (an
    /// `Option`), else it is [`ConfigError::NotFound`]. A value that does not fit names the
    /// path inside it, the expected type and the source that set it.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let Some(value) = self.json()? else {
            return serde_json::from_value(Value::Null).map_err(|_| ConfigError::NotFound {
                path: self.path.clone(),
            });
        };
        serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
            let mut path = self.path.clone();
            for segment in err.path().iter() {
                use serde_path_to_error::Segment;
                let key = match segment {
                    Segment::Seq { index } => index.to_string(),
                    Segment::Map { key } => key.clone(),
                    Segment::Enum { variant } => variant.clone(),
                    Segment::Unknown => continue,
                };
                path = join(&path, &key);
            }
            ConfigError::Decode {
                source_name: self.source_of(&path),
                path,
                expected: std::any::type_name::<T>().to_owned(),
                message: err.into_inner().to_string(),
            }
        })
    }
}

/// Who watches which path, and the value each saw last: a change reaches a watcher only when
/// the value at its path differs from the one it was last given.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    next: u64,
    list: BTreeMap<u64, (String, Option<Value>)>,
}

impl Watches {
    /// A watcher of `path`, which has seen the current value.
    pub(crate) fn add(&mut self, path: &str, layers: &Layers) -> u64 {
        self.next += 1;
        self.list
            .insert(self.next, (path.to_owned(), layers.get(path).cloned()));
        self.next
    }

    /// Forgets a watcher.
    pub(crate) fn remove(&mut self, id: u64) {
        self.list.remove(&id);
    }

    /// How many watchers there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The watchers whose path now holds another value, with what they read now; each is
    /// recorded as having seen it.
    pub(crate) fn changed(&mut self, layers: &Layers) -> Vec<(u64, Entry)> {
        let mut out = Vec::new();
        for (id, (path, seen)) in &mut self.list {
            let now = layers.get(path);
            if now != seen.as_ref() {
                *seen = now.cloned();
                out.push((*id, layers.entry(path)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Lookup {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Arc::new(move |name| vars.get(name).cloned())
    }

    /// The documented order, each layer setting `port` (and one key of its own).
    fn stack() -> (Layers, [usize; 6]) {
        let mut layers = Layers::new(env(&[]));
        let names = ["defaults", "file", "store", "etcd", "env", "overrides"];
        let ids = names.map(|n| layers.push(n));
        (layers, ids)
    }

    #[test]
    fn precedence_later_layers_win_leaf_by_leaf() {
        // For each layer k: layers 0..=k set `port`; the winner is k.
        let names = ["defaults", "file", "store", "etcd", "env", "overrides"];
        for top in 0..names.len() {
            let (mut layers, ids) = stack();
            for (i, id) in ids.iter().enumerate().take(top + 1) {
                layers.set(*id, json!({"db": {"port": i, names[i]: true}}));
            }
            assert_eq!(
                layers.get("db.port"),
                Some(&json!(top)),
                "{} wins",
                names[top]
            );
            assert_eq!(layers.entry("db.port").source_of("db.port"), names[top]);
            // Every layer's own key survives the merge.
            for name in &names[..=top] {
                assert_eq!(layers.get(&format!("db.{name}")), Some(&json!(true)));
            }
        }
        // The order is the order added, not the kind: a file added after env wins over it.
        let mut layers = Layers::new(env(&[]));
        let env_layer = layers.push("env");
        let file = layers.push("file");
        layers.set(file, json!({"port": 1}));
        layers.set(env_layer, json!({"port": 2}));
        assert_eq!(layers.get("port"), Some(&json!(1)));
    }

    #[test]
    fn a_scalar_replaces_a_subtree_and_an_object_a_scalar() {
        let (mut layers, ids) = stack();
        layers.set(
            ids[0],
            json!({"db": {"host": "a", "port": 1}, "tags": [1, 2]}),
        );
        layers.set(ids[1], json!({"db": "postgres://x", "tags": [3]}));
        assert_eq!(layers.get("db"), Some(&json!("postgres://x")));
        assert_eq!(
            layers.get("tags"),
            Some(&json!([3])),
            "arrays are replaced whole"
        );
        assert_eq!(layers.entry("db.host").source_of("db"), "file");
        layers.set(ids[2], json!({"db": {"port": 7}}));
        assert_eq!(layers.get("db"), Some(&json!({"port": 7})));
        assert_eq!(layers.entry("db").source_of("db"), "store");
        assert_eq!(
            layers.entry("tags.0").source_of("tags.0"),
            "file",
            "inside an array"
        );
    }

    #[test]
    fn a_subtree_names_every_source_below_it() {
        let (mut layers, ids) = stack();
        layers.set(ids[0], json!({"db": {"host": "a", "port": 1}}));
        layers.set(ids[4], json!({"db": {"port": 2}}));
        assert_eq!(layers.entry("db").source_of("db"), "defaults, env");
        assert_eq!(layers.entry("").source_of(""), "defaults, env");
    }

    #[test]
    fn removing_a_key_from_a_layer_uncovers_the_one_below() {
        let (mut layers, ids) = stack();
        layers.set(ids[0], json!({"port": 1}));
        assert!(layers.set(ids[1], json!({"port": 2})));
        assert!(
            !layers.set(ids[1], json!({"port": 2})),
            "same contents: no change"
        );
        assert!(layers.set(ids[1], json!({})));
        assert_eq!(layers.get("port"), Some(&json!(1)));
        assert_eq!(layers.entry("port").source_of("port"), "defaults");
    }

    #[test]
    fn substitution_set_unset_default_and_escape() {
        let lookup = env(&[("HOST", "db.local"), ("EMPTY", "")]);
        let run = |text: &str| expand(text, lookup.as_ref()).unwrap_or_else(|| text.to_owned());
        assert_eq!(run("postgres://${HOST}:5432"), "postgres://db.local:5432");
        assert_eq!(
            run("${HOST:-fallback}"),
            "db.local",
            "set: the default is ignored"
        );
        assert_eq!(run("${PORT:-5432}"), "5432", "unset: the default");
        assert_eq!(
            run("${EMPTY:-x}"),
            "x",
            "empty counts as unset with a default"
        );
        assert_eq!(run("[${PORT}]"), "[]", "unset, no default: empty");
        assert_eq!(
            run("$${HOST} costs $5"),
            "${HOST} costs $5",
            "escape, lone $"
        );
        assert_eq!(run("${UNCLOSED"), "${UNCLOSED");
        assert_eq!(expand("plain", lookup.as_ref()), None);

        // Applied to every string of the merged tree, whichever layer set it.
        let mut layers = Layers::new(lookup);
        let base = layers.push("defaults");
        layers.set(
            base,
            json!({"db": {"url": "pg://${HOST}", "pool": ["${POOL:-4}"]}}),
        );
        assert_eq!(layers.get("db.url"), Some(&json!("pg://db.local")));
        assert_eq!(layers.get("db.pool.0"), Some(&json!("4")));
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Db {
        host: String,
        port: u16,
    }

    #[test]
    fn typed_reads_and_errors_that_name_path_type_and_source() {
        let (mut layers, ids) = stack();
        layers.set(ids[0], json!({"db": {"host": "a", "port": 5432}}));
        assert_eq!(
            layers.entry("db").decode::<Db>().unwrap(),
            Db {
                host: "a".into(),
                port: 5432
            }
        );
        assert_eq!(layers.entry("db.port").decode::<u16>().unwrap(), 5432);
        assert_eq!(
            layers.entry("db.nope").decode::<Option<u16>>().unwrap(),
            None
        );
        assert_eq!(
            layers.entry("db.nope").decode::<u16>(),
            Err(ConfigError::NotFound {
                path: "db.nope".into()
            })
        );

        layers.set(ids[4], json!({"db": {"port": "many"}}));
        let err = layers.entry("db").decode::<Db>().unwrap_err();
        let ConfigError::Decode {
            path,
            expected,
            source_name,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(path, "db.port");
        assert!(expected.ends_with("Db"), "{expected}");
        assert_eq!(source_name, "env");
        let text = err.to_string();
        assert!(text.contains("db.port") && text.contains("env"), "{text}");
    }

    #[test]
    fn watches_fire_once_per_change_and_never_for_other_paths() {
        let (mut layers, ids) = stack();
        layers.set(ids[0], json!({"db": {"port": 1}, "log": "info"}));
        let mut watches = Watches::default();
        let db = watches.add("db", &layers);
        let port = watches.add("db.port", &layers);
        let missing = watches.add("cache", &layers);

        // An unrelated change: nobody.
        layers.set(ids[1], json!({"log": "debug"}));
        assert!(watches.changed(&layers).is_empty());

        // The port changes: both watchers of it, once.
        layers.set(ids[4], json!({"db": {"port": 2}}));
        let fired: Vec<u64> = watches
            .changed(&layers)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(fired, [db, port]);
        assert!(watches.changed(&layers).is_empty(), "never twice");

        // A layer that sets the same value the merge already had: no change.
        layers.set(ids[5], json!({"db": {"port": 2}}));
        assert!(watches.changed(&layers).is_empty());

        // A path appearing fires; so does it disappearing.
        layers.set(ids[2], json!({"cache": {"ttl": 5}}));
        let fired = watches.changed(&layers);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].0, missing);
        assert_eq!(
            fired[0].1.decode::<serde_json::Value>().unwrap(),
            json!({"ttl": 5})
        );
        layers.set(ids[2], json!({}));
        let fired = watches.changed(&layers);
        assert_eq!(fired[0].1.value, None);
        watches.remove(missing);
        assert_eq!(watches.len(), 2);
    }

    #[test]
    fn a_failed_layer_keeps_its_last_good_contents() {
        let (mut layers, ids) = stack();
        layers.set(ids[1], json!({"port": 2}));
        layers.fail(ids[1], "bad".into());
        assert_eq!(layers.get("port"), Some(&json!(2)));
        assert_eq!(layers.statuses()[1].error.as_deref(), Some("bad"));
        layers.set(ids[1], json!({"port": 3}));
        assert_eq!(layers.statuses()[1].error, None);
    }

    #[test]
    fn scalars_and_nesting() {
        assert_eq!(scalar("5432"), json!(5432));
        assert_eq!(scalar("true"), json!(true));
        assert_eq!(scalar("db.local"), json!("db.local"));
        assert_eq!(scalar("[1,2]"), json!([1, 2]));
        let mut tree = json!({});
        merge_plain(&mut tree, nest(&["a".into(), "b".into()], json!(1)));
        merge_plain(&mut tree, nest(&["a".into(), "c".into()], json!(2)));
        assert_eq!(tree, json!({"a": {"b": 1, "c": 2}}));
    }
}
