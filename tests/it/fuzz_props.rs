//! Bounded fuzzing on stable Rust, inside nextest: the loader and validator, the webhook
//! intake and the demand parser take arbitrary input without panicking, and what they
//! report stays well formed. (The Slurm answer decoders are fuzzed in
//! `src/sites/slurm/wire.rs`, where they live.) Each property runs a bounded number of
//! cases (proptest's seed corpus is the example fleet and the shapes below).

use std::path::Path;

use drover::autoscale::demand::JobEvent;
use drover::fleet::{self, load::LoadOptions};
use drover::serve::webhook;
use proptest::prelude::*;
use serde_json::Value;

const CASES: u32 = 64;

/// The example fleet's files: the seed corpus for mutation.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Validates a fleet made of `files`; every diagnostic must name a file and carry a code
/// and a message.
fn validate(files: &[(String, Vec<u8>)]) {
    let tmp = tempfile::tempdir().unwrap();
    for (rel, bytes) in files {
        let path = tmp.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let validation = fleet::validate_dir(tmp.path(), &LoadOptions::default()).unwrap();
    for d in &validation.diagnostics {
        assert!(!d.message.is_empty(), "{d:?}");
        assert!(!d.file.as_os_str().is_empty(), "{d:?}");
        let shown = d.to_string();
        assert!(
            !shown.contains('\x1b') && shown.lines().count() <= 2,
            "{shown:?}"
        );
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                b": ".to_vec(),
                b"\n- ".to_vec(),
                b"{".to_vec(),
                b"&a *a".to_vec(),
                b"!!binary ".to_vec(),
                b"\t".to_vec(),
                b"---\n".to_vec(),
                b"\"\\u0000\"".to_vec(),
                b"<<: *x".to_vec(),
            ])
        )
            .prop_map(|(at, b)| Edit::Insert(at, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len().max(1);
    match edit {
        Edit::Insert(at, b) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Edit::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Edit::Replace(at, b) => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = *b;
            }
        }
    }
}

/// Any JSON value, a few levels deep, with the keys a `workflow_job` delivery uses.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z_ ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop::sample::select(vec![
                    "action",
                    "workflow_job",
                    "repository",
                    "full_name",
                    "labels",
                    "id",
                    "runner_name",
                    "status",
                    "enterprise",
                    "slug",
                    "run_id",
                    "x",
                ])
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Arbitrary bytes as a fleet file: a diagnostic or a valid fleet, never a panic.
    #[test]
    fn arbitrary_bytes_never_break_the_validator(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        validate(&[("fleet.yaml".to_string(), bytes)]);
    }

    /// The example fleet with a few random edits in one file.
    #[test]
    fn edited_example_fleets_never_break_the_validator(
        file in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let mut files = seeds();
        let i = file.index(files.len());
        for e in &edits {
            apply(&mut files[i].1, e);
        }
        validate(&files);
    }

    /// Signature checks take any header and body; only the right signature passes.
    #[test]
    fn webhook_signatures_take_any_input(
        header in proptest::option::of(".{0,80}"),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let ok = webhook::verify(b"s3cret", &body, header.as_deref()).is_ok();
        prop_assert_eq!(ok, header.as_deref() == Some(webhook::sign(b"s3cret", &body).as_str()));
    }

    /// Any JSON as a `workflow_job` payload: an event or `None`, never a panic.
    #[test]
    fn job_events_parse_any_json(payload in json()) {
        if let Some(event) = JobEvent::from_payload(&payload) {
            prop_assert!(!event.request.repo.is_empty());
        }
    }
}
