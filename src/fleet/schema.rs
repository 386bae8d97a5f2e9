//! JSON Schemas of the fleet kinds: generated from the model types (schemars), published in
//! `schema/`, and used to validate every document (jsonschema) before it is deserialised.
//!
//! Validation failures become [`SchemaIssue`]s: a JSON pointer into the document, a stable
//! code and a message written for people ("unknown field `nodeSelectr`; did you mean
//! `nodeSelector`?"), not for schema authors.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::diagnostic::Code;
use super::model::{Fleet, Kind, NodePool, RunnerSet, SecretRef, Site};

/// Base of the `$id` of every published schema.
pub const SCHEMA_BASE: &str = "https://drover.dev/schema/v1alpha1";

/// The JSON Schema (draft 2020-12) of one kind.
pub fn schema_for(kind: Kind) -> Value {
    let mut schema = match kind {
        Kind::Fleet => generate::<Fleet>(),
        Kind::Site => generate::<Site>(),
        Kind::NodePool => generate::<NodePool>(),
        Kind::RunnerSet => generate::<RunnerSet>(),
        Kind::SecretRef => generate::<SecretRef>(),
    };
    let object = schema.as_object_mut().expect("a root schema is an object");
    object.insert(
        "$id".into(),
        Value::String(format!("{SCHEMA_BASE}/{}.json", file_stem(kind))),
    );
    schema
}

/// The published text of a kind's schema: pretty JSON with a trailing newline, exactly as
/// committed under `schema/`.
pub fn schema_text(kind: Kind) -> String {
    let mut text = serde_json::to_string_pretty(&schema_for(kind)).expect("schemas serialise");
    text.push('\n');
    text
}

/// The file name (without `.json`) a kind's schema is published under.
pub fn file_stem(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

fn generate<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    strip_null(&mut schema);
    schema
}

/// Optional fields are written by leaving them out, never as `null`: drop the `null`
/// alternatives schemars adds for `Option<T>`. Besides being the stricter contract, this
/// keeps validation errors inside optional objects precise (no opaque `anyOf` failures).
fn strip_null(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        if let Some(items) = schema.as_array_mut() {
            items.iter_mut().for_each(strip_null);
        }
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(branches)) = object.get("anyOf") {
        let kept: Vec<Value> = branches
            .iter()
            .filter(|b| b.get("type") != Some(&Value::from("null")))
            .cloned()
            .collect();
        if kept.len() == 1 {
            object.remove("anyOf");
            if let Value::Object(branch) = &kept[0] {
                for (k, v) in branch {
                    object.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    object.values_mut().for_each(strip_null);
}

/// One schema violation inside one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaIssue {
    /// JSON pointer of the offending value (or of the unknown key).
    pub pointer: String,
    /// Stable code.
    pub code: Code,
    /// What is wrong, for people.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// Compiled validators for every kind; build once, use for every document.
pub struct Validators {
    compiled: Vec<(Kind, Value, Validator)>,
}

impl Validators {
    /// Compiles the schema of every kind.
    pub fn new() -> Self {
        let compiled = Kind::ALL
            .into_iter()
            .map(|kind| {
                let schema = schema_for(kind);
                let validator = jsonschema::draft202012::new(&schema)
                    .expect("generated schemas are valid JSON Schemas");
                (kind, schema, validator)
            })
            .collect();
        Self { compiled }
    }

    /// Validates one document of `kind`; an empty result means it is valid.
    pub fn validate(&self, kind: Kind, instance: &Value) -> Vec<SchemaIssue> {
        let (_, schema, validator) = self
            .compiled
            .iter()
            .find(|(k, _, _)| *k == kind)
            .expect("every kind is compiled");
        if validator.is_valid(instance) {
            return Vec::new();
        }
        let mut issues: Vec<SchemaIssue> = validator
            .iter_errors(instance)
            .flat_map(|e| describe(schema, instance, &e))
            .collect();
        issues.sort_by(|a, b| a.pointer.cmp(&b.pointer).then(a.message.cmp(&b.message)));
        issues.dedup();
        issues
    }
}

impl Default for Validators {
    fn default() -> Self {
        Self::new()
    }
}

fn describe(schema: &Value, instance: &Value, error: &ValidationError) -> Vec<SchemaIssue> {
    let pointer = error.instance_path().to_string();
    let issue = |code, message: String| SchemaIssue {
        pointer: pointer.clone(),
        code,
        message,
        hint: None,
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = property_names(schema, &pointer);
            unexpected
                .iter()
                .map(|field| unknown_field(&pointer, field, &allowed))
                .collect()
        }
        ValidationErrorKind::AnyOf { context } => {
            // Describe the branch that came closest: the one with the fewest errors.
            match context
                .iter()
                .filter(|b| !b.is_empty())
                .min_by_key(|b| b.len())
            {
                Some(branch) => branch
                    .iter()
                    .flat_map(|e| describe(schema, instance, e))
                    .collect(),
                None => vec![issue(
                    Code::InvalidValue,
                    format!("{error}{}", at(&pointer)),
                )],
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![issue(
                Code::MissingField,
                format!("missing required field `{name}`{}", at(&pointer)),
            )]
        }
        ValidationErrorKind::Type { kind } => {
            let found = instance
                .pointer(&pointer)
                .map(type_name)
                .unwrap_or("nothing");
            vec![issue(
                Code::WrongType,
                format!("expected {}, found {found}{}", expected(kind), at(&pointer)),
            )]
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
            if !enum_values(schema, &pointer).is_empty() =>
        {
            let found = instance.pointer(&pointer).unwrap_or(&Value::Null);
            vec![issue(
                Code::InvalidValue,
                format!(
                    "{found} is not one of {}{}",
                    quote_list(&enum_values(schema, &pointer)),
                    at(&pointer)
                ),
            )]
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let found = instance.pointer(&pointer).unwrap_or(&Value::Null);
            vec![issue(
                Code::InvalidValue,
                format!(
                    "{found} is not one of {}{}",
                    quote_list(&allowed),
                    at(&pointer)
                ),
            )]
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. } => {
            let fields = one_of_fields(schema, &pointer);
            let mut i = issue(
                Code::OneOf,
                format!(
                    "exactly one of {} must be set{}",
                    quote_list(&fields),
                    at(&pointer)
                ),
            );
            i.hint = Some("remove the extra fields, or add the one that is missing".into());
            vec![i]
        }
        ValidationErrorKind::Pattern { .. } if pointer == "/apiVersion" => {
            let mut i = issue(
                Code::ApiVersion,
                format!(
                    "unsupported apiVersion {}",
                    instance.pointer(&pointer).unwrap_or(&Value::Null)
                ),
            );
            i.hint = Some(format!("this drover reads `{}`", super::model::API_VERSION));
            vec![i]
        }
        ValidationErrorKind::Pattern { .. } if pointer == "/metadata/name" => {
            let mut i = issue(
                Code::InvalidValue,
                format!(
                    "name {} is not a valid name",
                    instance.pointer(&pointer).unwrap_or(&Value::Null)
                ),
            );
            i.hint = Some(
                "names are DNS-1123 labels: lowercase letters, digits and '-', starting and \
                 ending with a letter or digit"
                    .into(),
            );
            vec![i]
        }
        ValidationErrorKind::Pattern { pattern } if pattern == "^/" => {
            let mut i = issue(
                Code::InvalidValue,
                format!(
                    "{} is not an absolute path{}",
                    instance.pointer(&pointer).unwrap_or(&Value::Null),
                    at(&pointer)
                ),
            );
            i.hint = Some("write the full path, starting with `/`".into());
            vec![i]
        }
        _ => vec![issue(
            Code::InvalidValue,
            format!("{error}{}", at(&pointer)),
        )],
    }
}

fn unknown_field(pointer: &str, field: &str, allowed: &[String]) -> SchemaIssue {
    let hint = closest(field, allowed)
        .map(|c| format!("did you mean `{c}`?"))
        .or_else(|| {
            (!allowed.is_empty()).then(|| format!("known fields here: {}", quote_list(allowed)))
        });
    SchemaIssue {
        pointer: format!("{pointer}/{}", field.replace('~', "~0").replace('/', "~1")),
        code: Code::UnknownField,
        message: format!("unknown field `{field}`{}", at(pointer)),
        hint,
    }
}

fn closest<'a>(field: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| {
            (
                strsim::damerau_levenshtein(&field.to_lowercase(), &a.to_lowercase()),
                a,
            )
        })
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.as_str())
}

fn at(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!(" in `{}`", dotted(pointer))
    }
}

/// `/spec/env/0/name` → `spec.env[0].name`
pub fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        if token.chars().all(|c| c.is_ascii_digit()) && !token.is_empty() {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn expected(kind: &TypeKind) -> String {
    let text = format!("{kind:?}").to_lowercase();
    let words = [
        "string", "integer", "number", "boolean", "array", "object", "null",
    ];
    let found: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| text.contains(w))
        .map(|w| match w {
            "array" => "a list",
            "object" => "a mapping",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "a boolean",
            "string" => "a string",
            _ => "null",
        })
        .collect();
    if found.is_empty() {
        text
    } else {
        found.join(" or ")
    }
}

/// The subschema that describes the value at `pointer`, following `$ref`, `anyOf`
/// (for optional values), `properties`, `additionalProperties` and `items`.
fn subschema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut current = resolve(root, root);
    for token in pointer.split('/').skip(1) {
        let next = current
            .get("properties")
            .and_then(|p| p.get(token))
            .or_else(|| {
                current
                    .get("items")
                    .filter(|_| token.parse::<usize>().is_ok())
            })
            .or_else(|| {
                current
                    .get("additionalProperties")
                    .filter(|v| v.is_object())
            })?;
        current = resolve(root, next);
    }
    Some(current)
}

/// Follows `$ref` and picks the non-null branch of an optional `anyOf`.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => schema = target,
                None => return schema,
            }
        } else if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
            match branches
                .iter()
                .find(|b| b.get("type") != Some(&Value::from("null")))
            {
                Some(branch) => schema = branch,
                None => return schema,
            }
        } else {
            return schema;
        }
    }
    schema
}

fn property_names(root: &Value, pointer: &str) -> Vec<String> {
    subschema_at(root, pointer)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The allowed values of an enum written as `oneOf` of `const`s (what schemars emits for
/// documented unit variants).
fn enum_values(root: &Value, pointer: &str) -> Vec<String> {
    subschema_at(root, pointer)
        .and_then(|s| s.get("oneOf"))
        .and_then(Value::as_array)
        .map(|branches| {
            branches
                .iter()
                .filter_map(|b| b.get("const")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn one_of_fields(root: &Value, pointer: &str) -> Vec<String> {
    subschema_at(root, pointer)
        .and_then(|s| s.get("oneOf"))
        .and_then(Value::as_array)
        .map(|branches| {
            branches
                .iter()
                .filter_map(|b| b.get("required")?.as_array()?.first()?.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site(spec: Value) -> Value {
        json!({"apiVersion": "drover.dev/v1alpha1", "kind": "Site", "metadata": {"name": "a"}, "spec": spec})
    }

    #[test]
    fn every_schema_compiles_and_has_an_id() {
        let validators = Validators::new();
        for kind in Kind::ALL {
            let schema = schema_for(kind);
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema"
            );
            assert!(schema["$id"].as_str().unwrap().ends_with(".json"));
            assert!(!validators.validate(kind, &json!({})).is_empty());
        }
    }

    #[test]
    fn unknown_field_suggests_the_closest() {
        let issues =
            Validators::new().validate(Kind::Site, &site(json!({"kubernetes": {"contxt": "x"}})));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, Code::UnknownField);
        assert_eq!(issues[0].pointer, "/spec/kubernetes/contxt");
        assert_eq!(issues[0].hint.as_deref(), Some("did you mean `context`?"));
    }

    #[test]
    fn one_of_names_the_fields() {
        let issues = Validators::new().validate(Kind::Site, &site(json!({})));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, Code::OneOf);
        assert!(
            issues[0].message.contains("`kubernetes`, `slurm`"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn wrong_type_says_what_was_found() {
        let issues = Validators::new().validate(
            Kind::Site,
            &site(json!({"kubernetes": {}, "timeoutSeconds": "ten"})),
        );
        assert_eq!(issues[0].code, Code::WrongType);
        assert!(
            issues[0].message.contains("found a string"),
            "{}",
            issues[0].message
        );
    }

    #[test]
    fn dotted_paths() {
        assert_eq!(dotted("/spec/env/0/name"), "spec.env[0].name");
        assert_eq!(dotted("/metadata/labels/a~1b"), "metadata.labels.a/b");
    }
}
