//! Field ownership: `metadata.managedFields` and the server-side apply algorithm.
//!
//! Each manager entry (manager name + operation) owns a [`FieldSet`]. An Apply by manager M
//! conflicts with any other entry that owns a leaf M sets to a different value (409, unless
//! forced, which moves ownership to M). Fields M applied before but omits now are removed
//! unless another entry still owns them. Updates (PUT, merge patch, create) take ownership
//! of exactly the fields whose values they change.

use serde_json::{Map, Value, json};

use super::fields::{self, FieldPath, FieldSet, PathElem};
use super::status::ApiError;

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager used.
    pub api_version: String,
    /// RFC 3339 time of the last change by this entry.
    pub time: String,
    /// Owned fields.
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn is(&self, manager: &str, operation: &str) -> bool {
        self.manager == manager && self.operation == operation
    }
}

/// Reads the entries stored in `obj.metadata.managedFields`.
pub fn read_entries(obj: &Value) -> Vec<ManagedEntry> {
    let entries = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| ManagedEntry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or_default().to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: e["time"].as_str().unwrap_or_default().to_string(),
            fields: fields::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes `entries` to `obj.metadata.managedFields` (dropping entries that own nothing).
pub fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let rendered: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields::to_fields_v1(&e.fields),
            })
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_string(), Value::Array(rendered));
        }
    }
}

/// Identity of the writer for ownership bookkeeping.
pub struct Writer {
    /// Field manager name.
    pub manager: String,
    /// apiVersion of the request.
    pub api_version: String,
    /// Current time (RFC 3339).
    pub now: String,
    /// Whether `status` is a subresource (then not part of the main resource's fields).
    pub exclude_status: bool,
}

/// Records an Update by `writer`: it takes the fields of `submitted` whose values differ from
/// `old`; fields that disappeared from the object are dropped from every entry.
pub fn record_update(
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer,
    old: Option<&Value>,
    submitted: &Value,
    new: &Value,
) {
    let submitted_set = fields::object_field_set(submitted, writer.exclude_status);
    // A list-map element is "changed" only when it is new; its fields speak for themselves.
    let changed: FieldSet = submitted_set
        .into_iter()
        .filter(|p| match (old, p.last()) {
            (None, _) => true,
            (Some(old), Some(PathElem::Key(_))) => fields::get_path(old, p).is_none(),
            (Some(old), _) => fields::get_path(old, p) != fields::get_path(submitted, p),
        })
        .collect();
    let removed: Vec<FieldPath> = match old {
        Some(old) => {
            let new_set = fields::object_field_set(new, writer.exclude_status);
            fields::object_field_set(old, writer.exclude_status)
                .difference(&new_set)
                .cloned()
                .collect()
        }
        None => Vec::new(),
    };
    for entry in entries.iter_mut() {
        entry
            .fields
            .retain(|f| !changed.contains(f) && !removed.iter().any(|r| fields::is_under(f, r)));
    }
    if changed.is_empty() {
        entries.retain(|e| !e.fields.is_empty());
        return;
    }
    let entry = upsert(entries, writer, "Update");
    entry.fields.extend(changed);
    entries.retain(|e| !e.fields.is_empty());
}

fn upsert<'e>(
    entries: &'e mut Vec<ManagedEntry>,
    writer: &Writer,
    operation: &str,
) -> &'e mut ManagedEntry {
    let index = match entries
        .iter()
        .position(|e| e.is(&writer.manager, operation))
    {
        Some(i) => i,
        None => {
            entries.push(ManagedEntry {
                manager: writer.manager.clone(),
                operation: operation.to_string(),
                api_version: String::new(),
                time: String::new(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let entry = &mut entries[index];
    entry.api_version = writer.api_version.clone();
    entry.time = writer.now.clone();
    entry
}

/// One field that two managers disagree on.
struct Conflict {
    manager: String,
    api_version: String,
    path: FieldPath,
}

/// Server-side apply of configuration `applied` by `writer` onto `live`.
///
/// Returns the merged object (without defaults, status or managedFields) and the new
/// entries, or a 409 Conflict when another manager owns a field set to a different value
/// and `force` is false.
pub fn apply(
    live: &Value,
    applied: &Value,
    writer: &Writer,
    force: bool,
) -> Result<(Value, Vec<ManagedEntry>), ApiError> {
    let applied_set = fields::object_field_set(applied, writer.exclude_status);
    let mut entries = read_entries(live);
    let conflicts = find_conflicts(live, applied, &applied_set, &entries, &writer.manager);
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for conflict in &conflicts {
        for entry in entries.iter_mut().filter(|e| e.manager == conflict.manager) {
            entry.fields.remove(&conflict.path);
        }
    }
    let previous = entries
        .iter()
        .find(|e| e.is(&writer.manager, "Apply"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: Vec<&FieldPath> = entries
        .iter()
        .filter(|e| !e.is(&writer.manager, "Apply"))
        .flat_map(|e| e.fields.iter())
        .collect();
    let mut merged = live.clone();
    let mut dropped: Vec<&FieldPath> = previous.difference(&applied_set).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in dropped {
        if !others.iter().any(|o| fields::is_under(o, path)) {
            fields::remove_path(&mut merged, path);
            fields::prune_empty_parents(&mut merged, path);
        }
    }
    fields::merge(&mut merged, applied, "");
    upsert(&mut entries, writer, "Apply").fields = applied_set;
    entries.retain(|e| !e.fields.is_empty());
    Ok((merged, entries))
}

fn find_conflicts(
    live: &Value,
    applied: &Value,
    applied_set: &FieldSet,
    entries: &[ManagedEntry],
    manager: &str,
) -> Vec<Conflict> {
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| !e.is(manager, "Apply")) {
        for path in applied_set.intersection(&entry.fields) {
            if matches!(path.last(), Some(PathElem::Key(_))) {
                continue;
            }
            let live_value = fields::get_path(live, path);
            if live_value.is_some() && live_value != fields::get_path(applied, path) {
                conflicts.push(Conflict {
                    manager: entry.manager.clone(),
                    api_version: entry.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    conflicts
}

/// The real server's message: `Apply failed with 1 conflict: conflict with "m" using apps/v1: .spec.replicas`.
fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let n = conflicts.len();
    let causes = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                "field": fields::display_path(&c.path),
            })
        })
        .collect();
    let message = if n == 1 {
        let c = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            fields::display_path(&c.path)
        )
    } else {
        let mut by_manager: Map<String, Value> = Map::new();
        for c in conflicts {
            let key = format!("conflicts with \"{}\" using {}", c.manager, c.api_version);
            let list = by_manager
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = list {
                items.push(Value::String(fields::display_path(&c.path)));
            }
        }
        let groups: Vec<String> = by_manager
            .iter()
            .map(|(who, paths)| {
                let lines: Vec<String> = paths
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|p| format!("- {p}"))
                    .collect();
                format!("{who}:\n{}", lines.join("\n"))
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", groups.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}
