//! YAML with positions: parses a multi-document YAML file into trees whose every node
//! knows its line and column, so any error found later (schema, references, secrets) can
//! point at `file:line:col`.
//!
//! Parsing is done by serde-saphyr (YAML 1.2, `Spanned<T>` locations, budgets against alias
//! bombs, duplicate keys refused). Nothing here knows about the fleet model.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, starting at 1 (0 when unknown).
    pub line: u32,
    /// Column, starting at 1 (0 when unknown).
    pub column: u32,
}

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// The node's content.
    pub value: NodeValue,
}

/// The content of a YAML node, after YAML 1.2 core-schema scalar resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `null`, `~` or empty.
    Null,
    /// `true` / `false` (only those: YAML 1.2, strict booleans).
    Bool(bool),
    /// An integer or float.
    Number(Number),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; keys carry their own position.
    Map(Vec<(Key, Node)>),
}

/// A mapping key (scalars only; non-string scalars are kept as their text).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Where the key is written.
    pub pos: Pos,
    /// The key text.
    pub name: String,
}

/// A YAML error with its position, as told by the parser.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct YamlError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What went wrong, without the location prefix.
    pub message: String,
    /// What kind of problem it is.
    pub kind: YamlErrorKind,
}

/// Classes of YAML errors, so callers can give each its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum YamlErrorKind {
    /// Malformed YAML.
    Syntax,
    /// The same key twice in one mapping.
    DuplicateKey,
    /// A resource budget was exceeded (alias expansion, depth, size).
    Budget,
}

/// Limits that protect the loader from pathological input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most alias expansions in one file.
    pub max_aliases: usize,
    /// Most events replayed through aliases in one file (what a billion-laughs file inflates).
    pub max_replayed_events: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most documents in one file.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_aliases: 1_000,
            max_replayed_events: 20_000,
            max_depth: 48,
            max_documents: 10_000,
        }
    }
}

/// Parses every document of `text`. Empty documents are skipped.
pub(crate) fn parse_documents(text: &str, limits: Limits) -> Result<Vec<Node>, YamlError> {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_aliases = limits.max_aliases;
    budget.max_depth = limits.max_depth;
    budget.max_documents = limits.max_documents;
    budget.max_nodes = usize::MAX;
    budget.max_events = usize::MAX;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = limits.max_replayed_events;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        alias_limits: alias_limits,
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    };
    serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(yaml_error)
}

fn yaml_error(err: serde_saphyr::Error) -> YamlError {
    let pos = err
        .location()
        .map(|l| Pos {
            line: l.line() as u32,
            column: l.column() as u32,
        })
        .unwrap_or_default();
    let message = strip_location(&err.to_string());
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("duplicate") {
        YamlErrorKind::DuplicateKey
    } else if lower.contains("budget")
        || lower.contains("alias")
        || lower.contains("limit")
        || lower.contains("depth")
    {
        YamlErrorKind::Budget
    } else {
        YamlErrorKind::Syntax
    };
    YamlError { pos, message, kind }
}

/// serde-saphyr appends " at line X, column Y"; we print positions ourselves.
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    match first.strip_prefix("duplicate mapping key: ") {
        Some(rest) => {
            let key = rest
                .split(", set DuplicateKeyPolicy")
                .next()
                .unwrap_or(rest);
            format!("duplicate key `{key}`")
        }
        None => first.to_string(),
    }
}

impl Node {
    /// Converts to JSON for schema checks and typed deserialisation.
    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => Value::Number(n.clone()),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => {
                let map: Map<String, Value> = entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect();
                Value::Object(map)
            }
        }
    }

    /// The node at a JSON pointer (`/spec/labels/0`), or the deepest existing ancestor.
    /// For a mapping entry the key's position is returned, which is where people look.
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            match &node.value {
                NodeValue::Map(entries) => match entries.iter().find(|(k, _)| k.name == token) {
                    Some((key, value)) => {
                        pos = key.pos;
                        node = value;
                    }
                    None => return pos,
                },
                NodeValue::Seq(items) => {
                    match token.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(item) => {
                            pos = item.pos;
                            node = item;
                        }
                        None => return pos,
                    }
                }
                _ => return pos,
            }
        }
        pos
    }

    /// The string at a JSON pointer, if that node is a string.
    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        let mut node = self;
        for token in pointer.split('/').skip(1) {
            node = match &node.value {
                NodeValue::Map(entries) => &entries.iter().find(|(k, _)| k.name == token)?.1,
                NodeValue::Seq(items) => items.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match &node.value {
            NodeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Visits every string scalar with its JSON pointer.
    pub fn walk_strings<'a>(
        &'a self,
        pointer: &mut String,
        f: &mut dyn FnMut(&str, &'a Node, &'a str),
    ) {
        match &self.value {
            NodeValue::String(s) => f(pointer, self, s),
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&i.to_string());
                    item.walk_strings(pointer, f);
                    pointer.truncate(len);
                }
            }
            NodeValue::Map(entries) => {
                for (key, value) in entries {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&key.name.replace('~', "~0").replace('/', "~1"));
                    value.walk_strings(pointer, f);
                    pointer.truncate(len);
                }
            }
            _ => {}
        }
    }
}

fn pos_of<T>(spanned: &Spanned<T>) -> Pos {
    Pos {
        line: spanned.referenced.line() as u32,
        column: spanned.referenced.column() as u32,
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<NodeValue>::deserialize(d)?;
        Ok(Node {
            pos: pos_of(&spanned),
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<KeyText>::deserialize(d)?;
        Ok(Key {
            pos: pos_of(&spanned),
            name: spanned.value.0,
        })
    }
}

/// A scalar mapping key as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = KeyText;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText, E> {
        Ok(KeyText(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
        Ok(KeyText(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
        Ok(KeyText("null".to_string()))
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = NodeValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(NodeValue::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Number::from_f64(v)
            .map(NodeValue::Number)
            .ok_or_else(|| E::custom("non-finite numbers are not allowed"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<NodeValue, E> {
        Err(E::custom("binary values are not allowed"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(NodeValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(NodeValue::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
        parse_documents(text, Limits::default())
    }

    #[test]
    fn positions_of_keys_and_items() {
        let docs = parse("a: 1\nb:\n  c: [x, y]\n---\nkind: Site\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].locate("/b/c"), Pos { line: 3, column: 3 });
        assert_eq!(docs[0].locate("/b/c/1").line, 3);
        assert_eq!(docs[1].locate("/kind"), Pos { line: 5, column: 1 });
        assert_eq!(docs[0].locate("/b/missing"), Pos { line: 2, column: 1 });
    }

    #[test]
    fn yaml_1_2_scalars() {
        let docs = parse("a: yes\nb: no\nc: true\nd: 010\ne: ~\nf: '5'\n").unwrap();
        let json = docs[0].to_json();
        assert_eq!(json["a"], "yes");
        assert_eq!(json["b"], "no");
        assert_eq!(json["c"], true);
        assert_eq!(json["e"], Value::Null);
        assert_eq!(json["f"], "5");
    }

    #[test]
    fn duplicate_keys_are_refused_with_position() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.kind, YamlErrorKind::DuplicateKey, "{err:?}");
        assert_eq!(err.pos.line, 3);
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        let err = parse(&text).unwrap_err();
        assert_eq!(err.kind, YamlErrorKind::Budget, "{err:?}");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(err.kind, YamlErrorKind::Syntax);
        assert!(err.pos.line >= 2, "{err:?}");
    }
}
