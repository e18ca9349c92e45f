//! Where config comes from: the sources, their names, and how each turns into a tree.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ConfigError;
use crate::tree::{merge_plain, nest, scalar};

/// One source of config. Sources are merged in the order they are added to the
/// [`ConfigBuilder`](crate::ConfigBuilder), later ones winning leaf by leaf; the documented
/// order is defaults < files < store < etcd < env < overrides.
#[derive(Debug, Clone)]
pub struct Source {
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Defaults(Result<Value, String>),
    File {
        path: PathBuf,
        format: Format,
    },
    Env {
        prefix: String,
        vars: Option<Vec<(String, String)>>,
    },
    Overrides(Vec<String>),
    Store {
        store: micro_store::Store,
        prefix: String,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// The trees a watched source yields: the whole source after each change, or an error (the
/// last item, when its watch ends).
pub(crate) type Changes =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Value, String>> + Send>>;

/// A file's format, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.json`
    Json,
    /// `.toml`
    Toml,
    /// `.yaml` or `.yml`
    Yaml,
}

impl Format {
    /// The format a file's extension says, if it is one of these.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    /// Parses a document of this format into a tree.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        match self {
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            Format::Toml => toml::from_str(text).map_err(|e| e.to_string()),
            Format::Yaml => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
        }
    }
}

impl Source {
    /// Built-in values: any serde value or struct (its fields become the tree).
    pub fn defaults(value: impl Serialize) -> Source {
        Source {
            kind: Kind::Defaults(serde_json::to_value(value).map_err(|e| e.to_string())),
        }
    }

    /// A JSON, TOML or YAML file (by its extension), read at start (it must exist then and
    /// parse) and re-read when it changes. An invalid or missing file later keeps the last good
    /// contents and reports the error; an empty one is taken for a write in progress.
    pub fn file(path: impl Into<PathBuf>) -> Source {
        Source {
            kind: Kind::File {
                path: path.into(),
                format: Format::Json,
            },
        }
    }

    /// Environment variables starting with `<prefix>_`: the rest, lower-cased, is the path,
    /// `__` nesting (`APP_DATABASE__MAX_CONNS=8` sets `database.max_conns` to `8`). Values read
    /// as JSON when they are (`8`, `true`, `[1,2]`), else as text. Read at start.
    pub fn env(prefix: impl Into<String>) -> Source {
        Source {
            kind: Kind::Env {
                prefix: prefix.into(),
                vars: None,
            },
        }
    }

    /// As [`Source::env`], from the variables given rather than the process's (for tests, or
    /// a program that has its own).
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        prefix: impl Into<String>,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Source {
        Source {
            kind: Kind::Env {
                prefix: prefix.into(),
                vars: Some(
                    vars.into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                ),
            },
        }
    }

    /// Command-line style overrides: `a.b=c` pairs (the value read as JSON when it is, else
    /// as text), later pairs winning.
    pub fn overrides<S: Into<String>>(pairs: impl IntoIterator<Item = S>) -> Source {
        Source {
            kind: Kind::Overrides(pairs.into_iter().map(Into::into).collect()),
        }
    }

    /// Keys starting with `prefix` in a `micro-store` table (the handle's database and
    /// table, on this node or another): `<prefix>database/port` sets `database.port` (`/`
    /// nesting; values as for [`Source::env`], so JSON written with `Store::put` reads back as
    /// itself). Read at one revision and watched from the next, so every node whose config
    /// reads the same store shares it.
    pub fn store(store: micro_store::Store, prefix: impl Into<String>) -> Source {
        Source {
            kind: Kind::Store {
                store,
                prefix: prefix.into(),
            },
        }
    }

    /// Keys under `prefix` in etcd (at any of `endpoints`): `<prefix>database/port` sets
    /// `database.port` (`/` nesting; values as for [`Source::env`]), watched from the revision
    /// read.
    #[cfg(feature = "etcd")]
    pub fn etcd<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        prefix: impl Into<String>,
    ) -> Source {
        Source {
            kind: Kind::Etcd {
                endpoints: endpoints.into_iter().map(Into::into).collect(),
                prefix: prefix.into(),
            },
        }
    }

    /// The source's name, as errors and [`SourceStatus`](crate::SourceStatus) say it:
    /// `defaults`, `file:<path>`, `env:<prefix>`, `overrides`, `store:<prefix>`, `etcd:<prefix>`.
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Defaults(_) => "defaults".to_owned(),
            Kind::File { path, .. } => format!("file:{}", path.display()),
            Kind::Env { prefix, .. } => format!("env:{prefix}"),
            Kind::Overrides(_) => "overrides".to_owned(),
            Kind::Store { prefix, .. } => format!("store:{prefix}"),
            #[cfg(feature = "etcd")]
            Kind::Etcd { prefix, .. } => format!("etcd:{prefix}"),
        }
    }

    /// Checks what can be checked before start: a file's extension (which fixes its format).
    pub(crate) fn checked(mut self) -> Result<Source, ConfigError> {
        if let Kind::File { path, format } = &mut self.kind {
            *format = Format::of(path).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "config file {}: the extension must be .json, .toml, .yaml or .yml",
                    path.display()
                ))
            })?;
        }
        Ok(self)
    }

    /// The tree of a source read at once (all but the remote ones, which return `None`).
    pub(crate) fn load_now(&self) -> Option<Result<Value, ConfigError>> {
        let fail = |message: String| ConfigError::Source {
            source_name: self.name(),
            message,
        };
        Some(match &self.kind {
            Kind::Defaults(value) => value.clone().map_err(fail),
            Kind::File { path, format } => read_file(path, *format)
                .map(|v| v.unwrap_or_else(|| Value::Object(Map::new())))
                .map_err(fail),
            Kind::Env { prefix, vars } => Ok(match vars {
                Some(vars) => env_tree(prefix, vars.iter().cloned()),
                None => env_tree(prefix, std::env::vars()),
            }),
            Kind::Overrides(pairs) => overrides_tree(pairs).map_err(fail),
            Kind::Store { .. } => return None,
            #[cfg(feature = "etcd")]
            Kind::Etcd { .. } => return None,
        })
    }
}

/// A file's tree; `Ok(None)` when it is empty (whitespace only).
pub(crate) fn read_file(path: &Path, format: Format) -> Result<Option<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    format.parse(&text).map(Some)
}

/// The tree of the variables starting with `<prefix>_`.
pub(crate) fn env_tree(prefix: &str, vars: impl Iterator<Item = (String, String)>) -> Value {
    let mut tree = Value::Object(Map::new());
    let head = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}_")
    };
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(&head) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        merge_plain(&mut tree, nest(&path, scalar(&value)));
    }
    tree
}

/// The tree of `a.b=c` pairs.
pub(crate) fn overrides_tree(pairs: &[String]) -> Result<Value, String> {
    let mut tree = Value::Object(Map::new());
    for pair in pairs {
        let (path, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("override {pair:?} is not path=value"))?;
        let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("override {pair:?} has an empty path segment"));
        }
        merge_plain(&mut tree, nest(&path, scalar(value)));
    }
    Ok(tree)
}

/// The tree of key-value pairs under `prefix`, `/` nesting (etcd, the store).
pub(crate) fn keys_tree<'a>(
    prefix: &str,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Value {
    let mut tree = Value::Object(Map::new());
    for (key, value) in pairs {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let path: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if path.is_empty() {
            // A value at the prefix itself: a whole document.
            merge_plain(&mut tree, scalar(value));
        } else {
            merge_plain(&mut tree, nest(&path, scalar(value)));
        }
    }
    tree
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn env_variables_nest_on_double_underscores() {
        let vars = [
            ("APP_DATABASE__PORT", "5432"),
            ("APP_DATABASE__HOST", "db"),
            ("APP_LOG_LEVEL", "debug"),
            ("APP_BAD____X", "skipped"),
            ("OTHER_X", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            env_tree("APP", vars.into_iter()),
            json!({"database": {"port": 5432, "host": "db"}, "log_level": "debug"})
        );
    }

    #[test]
    fn overrides_are_path_value_pairs() {
        let pairs = ["db.port=1", "db.host=x=y", "debug=true", "db.port=2"].map(String::from);
        assert_eq!(
            overrides_tree(&pairs).unwrap(),
            json!({"db": {"port": 2, "host": "x=y"}, "debug": true})
        );
        assert!(overrides_tree(&["nope".into()]).is_err());
        assert!(overrides_tree(&["a..b=1".into()]).is_err());
    }

    #[test]
    fn files_parse_by_extension() {
        let doc = json!({"db": {"port": 5432, "hosts": ["a", "b"]}});
        let cases = [
            ("a.json", r#"{"db": {"port": 5432, "hosts": ["a", "b"]}}"#),
            ("a.toml", "[db]\nport = 5432\nhosts = [\"a\", \"b\"]\n"),
            ("a.yaml", "db:\n  port: 5432\n  hosts: [a, b]\n"),
            ("a.YML", "db:\n  port: 5432\n  hosts:\n    - a\n    - b\n"),
        ];
        for (name, text) in cases {
            let format = Format::of(Path::new(name)).unwrap();
            assert_eq!(format.parse(text).unwrap(), doc, "{name}");
        }
        assert_eq!(Format::of(Path::new("a.ini")), None);
        assert!(Format::Yaml.parse("db: [unclosed").is_err());
    }

    #[test]
    fn keys_under_a_prefix_nest_on_slashes() {
        let pairs = [("app/db/port", "1"), ("app/name", "x"), ("other/y", "2")];
        assert_eq!(
            keys_tree("app/", pairs.into_iter()),
            json!({"db": {"port": 1}, "name": "x"})
        );
    }
}
