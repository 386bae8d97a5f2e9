//! The typed fleet: every document checked (kind, schema, inline secrets) and
//! deserialised into the model, indexed by kind and name, each object remembering where it
//! was written so later checks can point at `file:line`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::diagnostic::{Code, Diagnostic};
use super::load::SourceDoc;
use super::model::{API_VERSION, Fleet, Kind, NodePool, RunnerSet, SecretRef, Site};
use super::schema::{Validators, dotted};
use super::secrets;
use super::yaml::{Node, NodeValue, Pos};

/// A model object and where it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The object.
    pub value: T,
    /// File, relative to the fleet root.
    pub file: PathBuf,
    /// The document's YAML tree, for positions.
    pub node: Node,
}

impl<T> Located<T> {
    /// The position of the field at a JSON pointer (or its nearest ancestor).
    pub fn pos(&self, pointer: &str) -> Pos {
        self.node.locate(pointer)
    }

    /// A diagnostic about the field at `pointer` of this object.
    pub fn diag(&self, code: Code, pointer: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, &self.file, self.pos(pointer), message)
    }

    /// `file:line`, for "first defined at" hints.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.file.display(), self.node.pos.line)
    }
}

/// Every object of a fleet repo, by kind and name.
#[derive(Debug, Clone, Default)]
pub struct FleetRepo {
    /// The `Fleet` document (the first, when there are several).
    pub fleet: Option<Located<Fleet>>,
    /// Sites by name.
    pub sites: BTreeMap<String, Located<Site>>,
    /// Node pools by name.
    pub pools: BTreeMap<String, Located<NodePool>>,
    /// Runner sets by name.
    pub runner_sets: BTreeMap<String, Located<RunnerSet>>,
    /// Secret references by name.
    pub secrets: BTreeMap<String, Located<SecretRef>>,
    /// How many `Fleet` documents were found.
    pub fleet_documents: usize,
    /// Every (kind, name) declared, including documents that failed their checks, so that
    /// one broken document does not cascade into "does not exist" errors elsewhere.
    pub declared: BTreeSet<(Kind, String)>,
    /// Whether any document failed its checks (then "unused" warnings are not reliable).
    pub incomplete: bool,
}

/// The namespace of a Kubernetes site's runners when neither the site nor the Fleet's
/// defaults name one.
pub const DEFAULT_NAMESPACE: &str = "drover-runners";

impl FleetRepo {
    /// The runner namespace of Kubernetes site `site`: its own, else the Fleet's default,
    /// else [`DEFAULT_NAMESPACE`].
    pub fn runner_namespace(&self, site: &Site) -> String {
        site.spec
            .kubernetes
            .as_ref()
            .and_then(|k| k.namespace.clone())
            .or_else(|| {
                self.fleet
                    .as_ref()
                    .and_then(|f| f.value.spec.defaults.namespace.clone())
            })
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }

    /// Number of objects of all kinds.
    pub fn len(&self) -> usize {
        usize::from(self.fleet.is_some())
            + self.sites.len()
            + self.pools.len()
            + self.runner_sets.len()
            + self.secrets.len()
    }

    /// Whether the repo holds no objects at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks each document (in parallel) and adds the valid ones to a [`FleetRepo`].
pub(crate) fn build(
    docs: Vec<SourceDoc>,
    validators: &Validators,
    diagnostics: &mut Vec<Diagnostic>,
) -> FleetRepo {
    let checked: Vec<Checked> = docs
        .into_par_iter()
        .map(|doc| check_document(doc, validators))
        .collect();
    let mut repo = FleetRepo::default();
    for doc in checked {
        diagnostics.extend(doc.diagnostics);
        let Some(kind) = doc.kind else {
            repo.incomplete = true;
            continue;
        };
        if kind == Kind::Fleet {
            repo.fleet_documents += 1;
        }
        if let Some(name) = doc.name {
            repo.declared.insert((kind, name));
        }
        match doc.object {
            Some(object) => insert(&mut repo, object, diagnostics),
            None => repo.incomplete = true,
        }
    }
    repo
}

/// A document after its own checks.
struct Checked {
    kind: Option<Kind>,
    name: Option<String>,
    object: Option<Object>,
    diagnostics: Vec<Diagnostic>,
}

/// A typed object of any kind.
enum Object {
    Fleet(Located<Fleet>),
    Site(Box<Located<Site>>),
    NodePool(Located<NodePool>),
    RunnerSet(Located<RunnerSet>),
    SecretRef(Located<SecretRef>),
}

/// Inline secrets, header, schema, then typed deserialisation: everything that concerns
/// one document alone. Pure, so documents are checked in parallel.
fn check_document(doc: SourceDoc, validators: &Validators) -> Checked {
    let mut diagnostics = Vec::new();
    check_secrets(&doc, &mut diagnostics);
    let kind = check_header(&doc, &mut diagnostics);
    let name = doc.node.str_at("/metadata/name").map(str::to_string);
    let mut checked = Checked {
        kind,
        name,
        object: None,
        diagnostics,
    };
    let Some(kind) = kind else { return checked };
    let json = doc.node.to_json();
    let issues = validators.validate(kind, &json);
    if issues.is_empty() {
        checked.object = typed_object(kind, doc, json, &mut checked.diagnostics);
        return checked;
    }
    for issue in issues {
        let pos = doc.node.locate(&issue.pointer);
        let mut d = Diagnostic::new(issue.code, &doc.file, pos, issue.message);
        d.hint = issue.hint;
        checked.diagnostics.push(d);
    }
    checked
}

fn typed_object(
    kind: Kind,
    doc: SourceDoc,
    json: Value,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Object> {
    Some(match kind {
        Kind::Fleet => Object::Fleet(typed(doc, json, diagnostics)?),
        Kind::Site => Object::Site(Box::new(typed(doc, json, diagnostics)?)),
        Kind::NodePool => Object::NodePool(typed(doc, json, diagnostics)?),
        Kind::RunnerSet => Object::RunnerSet(typed(doc, json, diagnostics)?),
        Kind::SecretRef => Object::SecretRef(typed(doc, json, diagnostics)?),
    })
}

/// Checks that a document is a mapping with a supported `apiVersion` and a known `kind`.
fn check_header(doc: &SourceDoc, diagnostics: &mut Vec<Diagnostic>) -> Option<Kind> {
    let here = |code, pointer: &str, message: String| {
        Diagnostic::new(code, &doc.file, doc.node.locate(pointer), message)
    };
    if !matches!(doc.node.value, NodeValue::Map(_)) {
        diagnostics.push(
            here(
                Code::NotAMapping,
                "",
                "a fleet document must be a mapping".into(),
            )
            .with_hint("each document needs apiVersion, kind, metadata and spec"),
        );
        return None;
    }
    match doc.node.str_at("/apiVersion") {
        Some(API_VERSION) => {}
        Some(other) => {
            diagnostics.push(
                here(
                    Code::ApiVersion,
                    "/apiVersion",
                    format!("unsupported apiVersion `{other}`"),
                )
                .with_hint(format!("this drover reads `{API_VERSION}`")),
            );
            return None;
        }
        None => {
            diagnostics.push(
                here(Code::ApiVersion, "", "missing `apiVersion`".into())
                    .with_hint(format!("add `apiVersion: {API_VERSION}`")),
            );
            return None;
        }
    }
    let kinds = || {
        Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match doc.node.str_at("/kind") {
        Some(name) => match Kind::parse(name) {
            Some(kind) => Some(kind),
            None => {
                diagnostics.push(
                    here(Code::UnknownKind, "/kind", format!("unknown kind `{name}`"))
                        .with_hint(format!("known kinds: {}", kinds())),
                );
                None
            }
        },
        None => {
            diagnostics.push(
                here(Code::UnknownKind, "", "missing `kind`".into())
                    .with_hint(format!("known kinds: {}", kinds())),
            );
            None
        }
    }
}

/// Refuses values that look like credentials, anywhere in the document.
fn check_secrets(doc: &SourceDoc, diagnostics: &mut Vec<Diagnostic>) {
    let mut pointer = String::new();
    doc.node
        .walk_strings(&mut pointer, &mut |pointer, node, value| {
            let in_env = is_env_value(pointer);
            if let Some(kind) = secrets::scan(value, in_env) {
                diagnostics.push(
                    Diagnostic::new(
                        Code::InlineSecret,
                        &doc.file,
                        node.pos,
                        format!(
                            "`{}` holds what looks like {}",
                            dotted(pointer),
                            kind.describe()
                        ),
                    )
                    .with_hint(
                        "the fleet repo holds references only: declare a SecretRef and refer to it \
                     (e.g. `secretRef:` in env); rotate this credential, it is in git history now",
                    ),
                );
            }
        });
}

fn is_env_value(pointer: &str) -> bool {
    let parts: Vec<&str> = pointer.split('/').collect();
    matches!(parts.as_slice(), ["", "spec", "env", i, "value"] if i.parse::<usize>().is_ok())
}

fn insert(repo: &mut FleetRepo, object: Object, diagnostics: &mut Vec<Diagnostic>) {
    match object {
        Object::Fleet(fleet) => {
            repo.fleet.get_or_insert(fleet);
        }
        Object::Site(o) => add(&mut repo.sites, *o, |s| &s.metadata.name, diagnostics),
        Object::NodePool(o) => add(&mut repo.pools, o, |p| &p.metadata.name, diagnostics),
        Object::RunnerSet(o) => add(&mut repo.runner_sets, o, |r| &r.metadata.name, diagnostics),
        Object::SecretRef(o) => add(&mut repo.secrets, o, |s| &s.metadata.name, diagnostics),
    }
}

fn typed<T: DeserializeOwned>(
    doc: SourceDoc,
    json: Value,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Located<T>> {
    // The fast path needs no path tracking; it is only paid for when there is an error.
    if let Ok(value) = T::deserialize(&json) {
        return Some(Located {
            value,
            file: doc.file,
            node: doc.node,
        });
    }
    match serde_path_to_error::deserialize::<_, T>(json) {
        Ok(value) => Some(Located {
            value,
            file: doc.file,
            node: doc.node,
        }),
        Err(err) => {
            let pointer = path_to_pointer(&err.path().to_string());
            diagnostics.push(Diagnostic::new(
                Code::InvalidValue,
                &doc.file,
                doc.node.locate(&pointer),
                err.inner().to_string(),
            ));
            None
        }
    }
}

/// `spec.env[0].name` → `/spec/env/0/name`
fn path_to_pointer(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(s);
            acc
        })
}

fn add<T>(
    map: &mut BTreeMap<String, Located<T>>,
    item: Located<T>,
    name: impl Fn(&T) -> &String,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let key = name(&item.value).clone();
    if let Some(first) = map.get(&key) {
        let kind = item.node.str_at("/kind").unwrap_or_default().to_string();
        diagnostics.push(
            item.diag(
                Code::DuplicateName,
                "/metadata/name",
                format!("{kind} `{key}` is defined twice"),
            )
            .with_hint(format!(
                "first defined at {}; names are unique per kind",
                first.origin()
            )),
        );
        return;
    }
    map.insert(key, item);
}
