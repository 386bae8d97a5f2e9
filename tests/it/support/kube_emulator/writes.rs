//! The write verbs of [`Store`]: create, replace, merge patch, server-side apply, delete,
//! status writes and out-of-band writes, with the checks a real server makes.

use serde_json::{Value, json};

use super::body::{
    check_resource_version, content_changed, json_merge_patch, prepare, render, restore_status,
    same_ignoring_times, strip_nulls,
};
use super::defaults;
use super::fields;
use super::resources::ResourceType;
use super::ssa::{self, Writer};
use super::status::ApiError;
use super::store::{ObjKey, Store, WriteOptions, Written, now};
use super::validation;

impl Store {
    /// POST: creates a new object (409 AlreadyExists if present).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (mut obj, warnings) = prepare(rt, body, namespace, None, opts, false)?;
        if obj["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
            && let Some(prefix) = obj["metadata"]["generateName"].as_str()
        {
            let name = format!("{prefix}{}", self.random_suffix());
            obj["metadata"]["name"] = json!(name);
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        validation::validate_metadata(rt, &obj)?;
        self.require_namespace(rt, namespace)?;
        let key = ObjKey::new(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        let submitted = obj.clone();
        self.finish(rt, &mut obj, None)?;
        self.admit_create(rt, namespace, &mut obj)?;
        let mut entries = Vec::new();
        ssa::record_update(
            &mut entries,
            &writer(rt, &opts.manager),
            None,
            &submitted,
            &obj,
        );
        ssa::write_entries(&mut obj, &entries);
        let written = self.store(rt, key.clone(), obj, None, opts.dry_run, warnings)?;
        if !opts.dry_run {
            // A dependent whose owners do not exist is collected at once.
            self.collect_if_orphaned(&key);
        }
        Ok(written)
    }

    /// PUT: replaces an existing object (409 Conflict on a stale resourceVersion).
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (obj, warnings) = prepare(rt, body, namespace, Some(name), opts, false)?;
        let key = ObjKey::new(rt, namespace, name);
        let old = self.existing(rt, &key)?;
        check_resource_version(rt, &obj, &old)?;
        self.update_to(rt, key, old, obj, opts, warnings)
    }

    /// PATCH with `application/merge-patch+json` (RFC 7386).
    pub fn merge_patch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let key = ObjKey::new(rt, namespace, name);
        let old = self.existing(rt, &key)?;
        check_resource_version(rt, &patch, &old)?;
        let mut target = render(rt, &old);
        json_merge_patch(&mut target, &patch);
        let (obj, warnings) = prepare(rt, target, namespace, Some(name), opts, false)?;
        self.update_to(rt, key, old, obj, opts, warnings)
    }

    /// PATCH with `application/apply-patch+yaml`: server-side apply, creating if absent.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (mut config, warnings) =
            prepare(rt, strip_nulls(body), namespace, Some(name), opts, true)?;
        let key = ObjKey::new(rt, namespace, name);
        let old = self.objects.get(&key).cloned();
        if let Some(old) = &old {
            check_resource_version(rt, &config, old)?;
        }
        if let Some(meta) = config["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let writer = writer(rt, &opts.manager);
        let (mut obj, entries) = match &old {
            Some(old) => ssa::apply(old, &config, &writer, opts.force)?,
            None => {
                validation::validate_metadata(rt, &config)?;
                self.require_namespace(rt, namespace)?;
                let entries = vec![ssa::ManagedEntry {
                    manager: opts.manager.clone(),
                    operation: "Apply".to_string(),
                    api_version: rt.api_version(),
                    time: writer.now.clone(),
                    fields: fields::object_field_set(&config, rt.has_status),
                }];
                (config.clone(), entries)
            }
        };
        self.finish(rt, &mut obj, old.as_ref())?;
        if old.is_none() {
            self.admit_create(rt, namespace, &mut obj)?;
        }
        ssa::write_entries(&mut obj, &entries);
        let created = old.is_none();
        let written = self.store(rt, key.clone(), obj, old, opts.dry_run, warnings)?;
        if created && !opts.dry_run {
            self.collect_if_orphaned(&key);
        }
        Ok(written)
    }

    /// DELETE: removes the object (and, for a Namespace or CRD, everything it contains), then
    /// collects garbage: dependents whose owners are all gone are deleted too.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = ObjKey::new(rt, namespace, name);
        let old = self.existing(rt, &key)?;
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str()
            && old["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict_modified(&rt.group, &rt.plural, name));
        }
        if let Some(rv) = pre["resourceVersion"].as_str()
            && old["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(ApiError::conflict_modified(&rt.group, &rt.plural, name));
        }
        if dry_run {
            return Ok(render(rt, &old));
        }
        if rt.is_namespace() {
            let contained: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.namespace == name)
                .cloned()
                .collect();
            for k in contained {
                self.remove(k);
            }
        }
        if rt.is_crd() {
            let (group, plural) = (
                old["spec"]["group"].clone(),
                old["spec"]["names"]["plural"].clone(),
            );
            let contained: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.group == group && k.plural == plural)
                .cloned()
                .collect();
            for k in contained {
                self.remove(k);
            }
        }
        if options["propagationPolicy"] == "Orphan"
            && let Some(uid) = old["metadata"]["uid"].as_str()
        {
            self.orphan_dependents(uid);
        }
        let removed = self.remove(key);
        // Dependents of the deleted object (ownerReferences) go with it.
        self.collect_garbage();
        Ok(render(rt, &removed))
    }

    /// PUT or PATCH on the `status` subresource: replaces (or merges into) `status` only.
    pub fn write_status(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: &Value,
        merge: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = ObjKey::new(rt, namespace, name);
        let old = self.existing(rt, &key)?;
        let mut obj = old.clone();
        match (merge, body.get("status")) {
            (true, Some(status)) => json_merge_patch(&mut obj["status"], status),
            (false, Some(status)) => obj["status"] = status.clone(),
            (_, None) => {}
        }
        if obj == old || dry_run {
            return Ok(render(rt, &obj));
        }
        Ok(render(rt, &self.commit(key, obj, "MODIFIED")))
    }

    /// Writes an object directly as `manager` (an Update), creating it if absent, with no
    /// resourceVersion check: another controller or a human editing out of band. A
    /// namespaced object without a namespace goes to `default`.
    pub fn put_as(
        &mut self,
        rt: &ResourceType,
        manager: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let namespace = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Some(ns.to_string()),
            None if rt.namespaced => Some("default".to_string()),
            None => None,
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let opts = WriteOptions::internal(manager);
        let key = ObjKey::new(rt, namespace.as_deref(), &name);
        let written = match self.objects.get(&key).cloned() {
            Some(old) => {
                let (obj, warnings) =
                    prepare(rt, obj, namespace.as_deref(), Some(&name), &opts, false)?;
                self.update_to(rt, key, old, obj, &opts, warnings)?
            }
            None => self.create(rt, namespace.as_deref(), obj, &opts)?,
        };
        Ok(written.object)
    }

    fn existing(&self, rt: &ResourceType, key: &ObjKey) -> Result<Value, ApiError> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, &key.name))
    }

    fn require_namespace(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns = namespace.unwrap_or_default();
        let key = ObjKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        if self.objects.contains_key(&key) {
            Ok(())
        } else {
            Err(ApiError::not_found("", "namespaces", ns))
        }
    }

    /// Shared tail of PUT, merge patch and out-of-band writes.
    fn update_to(
        &mut self,
        rt: &ResourceType,
        key: ObjKey,
        old: Value,
        mut obj: Value,
        opts: &WriteOptions,
        warnings: Vec<String>,
    ) -> Result<Written, ApiError> {
        let submitted = obj.clone();
        self.finish(rt, &mut obj, Some(&old))?;
        let mut entries = ssa::read_entries(&old);
        ssa::record_update(
            &mut entries,
            &writer(rt, &opts.manager),
            Some(&old),
            &submitted,
            &obj,
        );
        ssa::write_entries(&mut obj, &entries);
        self.store(rt, key, obj, Some(old), opts.dry_run, warnings)
    }

    /// Server-owned metadata, status protection, defaults and validation.
    fn finish(
        &mut self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("prepare ensures metadata");
        for field in SYSTEM_METADATA {
            meta.remove(field);
        }
        if rt.has_status {
            restore_status(obj, old.and_then(|o| o.get("status")));
        }
        if let Some(old) = old {
            keep_allocated_values(rt, obj, old);
        }
        validation::validate_metadata(rt, obj)?;
        validation::validate_kind(rt, obj, old)?;
        let mut allocate = || self.cluster_ip();
        defaults::apply_defaults(rt, obj, &mut allocate);
        match old {
            Some(old) => {
                let old_meta = &old["metadata"];
                for field in ["uid", "creationTimestamp", "resourceVersion"] {
                    obj["metadata"][field] = old_meta[field].clone();
                }
                if let Some(generation) = old_meta["generation"].as_u64() {
                    let bump = u64::from(content_changed(old, obj));
                    obj["metadata"]["generation"] = json!(generation + bump);
                }
            }
            None => {
                obj["metadata"]["uid"] = json!(self.uid());
                obj["metadata"]["creationTimestamp"] = json!(now());
                let has_spec = obj.get("spec").is_some() && !rt.is_namespace();
                if has_spec || rt.is_custom() {
                    obj["metadata"]["generation"] = json!(1);
                }
            }
        }
        Ok(())
    }

    /// Commits (unless a no-op or dry run) and builds the response.
    fn store(
        &mut self,
        rt: &ResourceType,
        key: ObjKey,
        obj: Value,
        old: Option<Value>,
        dry_run: bool,
        warnings: Vec<String>,
    ) -> Result<Written, ApiError> {
        let created = old.is_none();
        if let Some(old) = &old
            && same_ignoring_times(old, &obj)
        {
            return Ok(Written {
                object: render(rt, old),
                created,
                warnings,
            });
        }
        if dry_run {
            return Ok(Written {
                object: render(rt, &obj),
                created,
                warnings,
            });
        }
        let kind = if created { "ADDED" } else { "MODIFIED" };
        let stored = self.commit(key, obj, kind);
        Ok(Written {
            object: render(rt, &stored),
            created,
            warnings,
        })
    }
}

/// Metadata only the server sets.
const SYSTEM_METADATA: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "selfLink",
    "managedFields",
];

/// Values the server allocated that an update may omit (a Service's cluster IPs).
fn keep_allocated_values(rt: &ResourceType, obj: &mut Value, old: &Value) {
    if rt.group.is_empty() && rt.kind == "Service" && obj["spec"].is_object() {
        for field in ["clusterIP", "clusterIPs"] {
            if obj["spec"].get(field).is_none_or(Value::is_null) && !old["spec"][field].is_null() {
                obj["spec"][field] = old["spec"][field].clone();
            }
        }
    }
}

fn writer(rt: &ResourceType, manager: &str) -> Writer {
    Writer {
        manager: manager.to_string(),
        api_version: rt.api_version(),
        now: now(),
        exclude_status: rt.has_status,
    }
}
