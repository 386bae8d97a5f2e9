//! Validation of fleet repos: the invalid-fleet corpus under `tests/invalid/`, the example
//! fleet, the committed schemas, and the `drover validate` / `drover schema` commands.
//!
//! Each corpus case is `tests/invalid/<case>/`: files laid over a copy of
//! `tests/invalid/_base/` (a small valid fleet), an optional `SETUP` file for what git
//! cannot hold (`remove F`, `oversize F BYTES`, `symlink-out F`, `fifo F`, `socket F`,
//! `chardev F`), and `EXPECTED`, one
//! `file:line CODE` per error. The errors found must be exactly the expected ones.
//! Run with `DROVER_BLESS=1` to write `EXPECTED` files for new cases (then review them).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use drover::fleet::model::Kind;
use drover::fleet::{self, LoadOptions, schema};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "EXPECTED" && entry.file_name() != "SETUP" {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Builds the case's fleet in a fresh temp dir; returns (tempdir guard, fleet root).
fn materialise(case: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    copy_tree(&corpus_dir().join("_base"), &root);
    copy_tree(case, &root);
    let setup = fs::read_to_string(case.join("SETUP")).unwrap_or_default();
    for line in setup.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["remove", file] => fs::remove_file(root.join(file)).unwrap(),
            ["oversize", file, bytes] => {
                let bytes: usize = bytes.parse().unwrap();
                let line = "# padding padding padding padding padding padding padding\n";
                fs::write(root.join(file), line.repeat(bytes / line.len() + 1)).unwrap();
            }
            ["symlink-out", file] => {
                let outside = tmp.path().join("outside.yaml");
                fs::write(&outside, "apiVersion: drover.dev/v1alpha1\n").unwrap();
                std::os::unix::fs::symlink(&outside, root.join(file)).unwrap();
            }
            ["fifo", file] => mknod(&root.join(file), libc::S_IFIFO | 0o644, 0),
            ["socket", file] => {
                // The listener is dropped, the socket file stays.
                std::os::unix::net::UnixListener::bind(root.join(file)).unwrap();
            }
            // A clone of /dev/null (1, 3); needs root, as the test suite runs.
            ["chardev", file] => {
                mknod(&root.join(file), libc::S_IFCHR | 0o644, libc::makedev(1, 3))
            }
            _ => panic!("{}: bad SETUP line {line:?}", case.display()),
        }
    }
    (tmp, root)
}

fn errors_of(root: &Path) -> (BTreeSet<String>, String) {
    let validation = fleet::validate_dir(root, &LoadOptions::default()).unwrap();
    let found = validation
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}:{} {}", d.file.display(), d.line, d.code))
        .collect();
    let text = validation
        .diagnostics
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    (found, text)
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("_base"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn corpus_has_at_least_forty_cases() {
    assert!(cases().len() >= 40, "only {} cases", cases().len());
}

#[test]
fn base_fleet_is_valid() {
    let (found, text) = errors_of(&corpus_dir().join("_base"));
    assert!(found.is_empty(), "{text}");
}

#[test]
fn every_invalid_fleet_reports_exactly_its_errors() {
    let bless = std::env::var_os("DROVER_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let (_tmp, root) = materialise(&case);
        let (found, text) = errors_of(&root);
        let expected_file = case.join("EXPECTED");
        if bless && !expected_file.exists() {
            let body: String = found.iter().map(|l| format!("{l}\n")).collect();
            fs::write(&expected_file, body).unwrap();
            continue;
        }
        let expected: BTreeSet<String> = fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{} has no EXPECTED file", case.display()))
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if expected.is_empty() {
            failures.push(format!("{}: EXPECTED lists no error", case.display()));
        }
        if found != expected {
            failures.push(format!(
                "{}:\n  expected {expected:?}\n  found    {found:?}\n{text}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// "Unused" warnings (W502, W503) are given only for fleets without errors: in every
/// corpus case (each has an error), none appears, though many cases leave objects unused.
#[test]
fn unused_warnings_never_come_with_errors() {
    for case in cases() {
        let (_tmp, root) = materialise(&case);
        let validation = fleet::validate_dir(&root, &LoadOptions::default()).unwrap();
        assert!(validation.diagnostics.iter().any(|d| d.is_error()));
        let unused: Vec<String> = validation
            .diagnostics
            .iter()
            .filter(|d| matches!(d.code.as_str(), "W502" | "W503"))
            .map(|d| d.to_string())
            .collect();
        assert!(unused.is_empty(), "{}: {unused:?}", case.display());
    }
}

/// A fleet key crafted to hold a newline, a diagnostic-looking line and an ANSI escape
/// shows escaped: no printed line is forged, no escape reaches the terminal.
#[test]
fn a_crafted_key_cannot_print_a_forged_diagnostic_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    copy_tree(&corpus_dir().join("_base"), &root);
    fs::write(
        root.join("forge.yaml"),
        "apiVersion: drover.dev/v1alpha1\nkind: NodePool\nmetadata:\n  name: forged\nspec:\n  site: k8s\n  \"x\\nfleet.yaml:1:1: error[E101]: forged\\e[2K\\r\": 1\n",
    )
    .unwrap();
    let validation = fleet::validate_dir(&root, &LoadOptions::default()).unwrap();
    let printed: String = validation
        .diagnostics
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    assert!(printed.contains("forged"), "{printed}");
    assert!(
        printed.lines().all(|l| !l.starts_with("fleet.yaml:1:1")),
        "{printed}"
    );
    assert!(
        !printed.contains('\x1b') && !printed.contains('\r'),
        "{printed:?}"
    );
    assert!(printed.contains("\\nfleet.yaml:1:1"), "{printed}");
}

#[test]
fn inline_secret_values_never_appear_in_diagnostics() {
    for case in cases()
        .iter()
        .filter(|c| c.to_string_lossy().contains("inline-"))
    {
        let (_tmp, root) = materialise(case);
        let validation = fleet::validate_dir(&root, &LoadOptions::default()).unwrap();
        let rendered: String = validation
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        let json = serde_json::to_string(&validation.diagnostics).unwrap();
        for secret in [
            "ghp_A1b2",
            "github_pat_11",
            "ghs_A1b2",
            "MIIEowIBAAKCAQEA",
            "AKIAIOSFODNN7",
            "eyJhbGci",
            "q8Zr4Tt7Vb1",
        ] {
            assert!(
                !rendered.contains(secret) && !json.contains(secret),
                "{}: {rendered}",
                case.display()
            );
        }
        assert!(rendered.contains("E401"), "{}: {rendered}", case.display());
    }
}

#[test]
fn example_fleet_is_valid_without_warnings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
    let validation = fleet::validate_dir(&root, &LoadOptions::default()).unwrap();
    let text: String = validation
        .diagnostics
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    assert!(validation.diagnostics.is_empty(), "{text}");
    let repo = &validation.repo;
    assert_eq!(repo.sites.len(), 4);
    assert!(repo.sites.values().any(|s| s.value.spec.slurm.is_some()));
    assert!(repo.pools.values().any(|p| {
        p.value
            .spec
            .gpu
            .as_ref()
            .is_some_and(|g| g.vendor == fleet::model::GpuVendor::Amd)
    }));
    assert!(repo.runner_sets.len() >= 6);
}

#[test]
fn committed_schemas_match_the_model() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    for kind in Kind::ALL {
        let path = dir.join(format!("{}.json", schema::file_stem(kind)));
        let committed = fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run `drover schema --write schema`",
                path.display()
            )
        });
        assert!(
            committed == schema::schema_text(kind),
            "{} is out of date with the model; run `cargo run -- schema --write schema`",
            path.display()
        );
    }
}

/// Every schema accepts the example fleet's documents of its kind, and rejects a twin with
/// an unknown field and a twin with a wrongly typed `spec`.
#[test]
fn schemas_accept_examples_and_reject_broken_twins() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet");
    let loaded = fleet::load::load_dir(&root, &LoadOptions::default()).unwrap();
    let validators = schema::Validators::new();
    let mut seen = BTreeSet::new();
    for doc in &loaded.docs {
        let json = doc.node.to_json();
        let kind = Kind::parse(json["kind"].as_str().unwrap()).unwrap();
        seen.insert(kind);
        assert!(
            validators.validate(kind, &json).is_empty(),
            "{}",
            doc.file.display()
        );
        let mut unknown = json.clone();
        unknown["spec"]["bogusField"] = serde_json::json!(1);
        assert!(!validators.validate(kind, &unknown).is_empty());
        let mut wrong = json.clone();
        wrong["spec"] = serde_json::json!("not a mapping");
        assert!(!validators.validate(kind, &wrong).is_empty());
    }
    assert_eq!(
        seen.len(),
        Kind::ALL.len(),
        "the example fleet shows every kind"
    );
}

fn drover(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_validate_exit_codes_and_formats() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/fleet");
    let ok = drover(&["validate", example]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let case = corpus_dir().join("dangling-pool");
    let (_tmp, root) = materialise(&case);
    let bad = drover(&["validate", root.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8(bad.stdout).unwrap();
    assert!(
        text.contains("case.yaml:8:3: error[E302]: NodePool `gpu-pool` does not exist"),
        "{text}"
    );

    let json = drover(&["validate", "--format", "json", root.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["diagnostics"][0]["code"], "E302");
    assert_eq!(report["diagnostics"][0]["line"], 8);

    let missing = drover(&["validate", "/nonexistent/fleet"]);
    assert_eq!(missing.status.code(), Some(2));
    let usage = drover(&["validate", "--no-such-flag"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn cli_schema_prints_each_kind() {
    let out = drover(&["schema", "runnerset"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "RunnerSet");
    assert_eq!(drover(&["schema", "Nope"]).status.code(), Some(2));
}

#[test]
fn every_code_is_documented() {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/errors.md")).unwrap();
    for code in fleet::Code::ALL {
        assert!(
            doc.contains(&format!("| {code} |")),
            "docs/errors.md lacks {code}"
        );
    }
}

/// A FIFO, a socket and a device named `*.yaml` are refused with E109 by `drover validate`,
/// and never block it: the command ends (the watchdog kills it after 30 s otherwise).
#[test]
fn special_files_never_hang_validate() {
    let (_tmp, root) = materialise(&corpus_dir().join("special-files"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["validate", root.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("drover validate hung on a special file");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    for (file, what) in [
        ("pipe.yaml", "a FIFO"),
        ("sock.yaml", "a socket"),
        ("null.yml", "a character device"),
    ] {
        assert!(
            text.contains(&format!(
                "{file}: error[E109]: not a regular file but {what}"
            )),
            "{text}"
        );
    }
}

/// A pulled container image (`docker://`) without a persistent image cache is a warning
/// (W505); a cache on the runner set or on the Slurm site silences it, and an image on the
/// nodes' file system needs none.
#[test]
fn pulled_slurm_images_without_a_cache_are_a_warning() {
    let warnings = |set_container: &str, site_container: &str| {
        let (_tmp, root) = materialise(&corpus_dir().join("_base"));
        let slurm = fs::read_to_string(root.join("slurm.yaml")).unwrap().replace(
            "    rest: {url: \"http://127.0.0.1:6820\", user: ci, tokenRef: slurm-jwt}\n",
            &format!(
                "    rest: {{url: \"http://127.0.0.1:6820\", user: ci, tokenRef: slurm-jwt}}\n{site_container}"
            ),
        );
        fs::write(root.join("slurm.yaml"), slurm).unwrap();
        let runners = fs::read_to_string(root.join("runners.yaml")).unwrap();
        fs::write(
            root.join("runners.yaml"),
            format!("{runners}  container: {set_container}\n"),
        )
        .unwrap();
        let validation = fleet::validate_dir(&root, &LoadOptions::default()).unwrap();
        assert!(validation.is_valid(), "{:#?}", validation.diagnostics);
        validation
            .diagnostics
            .iter()
            .map(|d| format!("{}:{} {}", d.file.display(), d.line, d.code))
            .collect::<Vec<_>>()
    };
    let image = "{image: \"docker://ghcr.io/acme/runner:1\"}";
    assert_eq!(warnings(image, ""), ["runners.yaml:32 W505"]);
    assert!(
        warnings(
            "{image: \"docker://ghcr.io/acme/runner:1\", imageCacheDir: /scratch/cache}",
            ""
        )
        .is_empty()
    );
    assert!(
        warnings(
            image,
            "    container: {imageCacheDir: /scratch/cache, binds: [{source: /cvmfs, readOnly: true}]}\n"
        )
        .is_empty()
    );
    assert!(warnings("{image: /images/runner.sif}", "").is_empty());
}
