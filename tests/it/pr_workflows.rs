//! The fleet repo's GitHub Actions workflows (`fleet/.github/workflows/`): the triggers and
//! permissions they need, the trust rules they must keep, and every `drover` command line
//! in them uses only flags the real binary accepts (checked against `drover <cmd> --help`).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn workflow(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fleet/.github/workflows")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn steps(wf: &Value) -> Vec<Value> {
    wf["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Every `drover …` command line in the workflow's `run` scripts.
fn drover_commands(wf: &Value) -> Vec<Vec<String>> {
    steps(wf)
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_string))
        .flat_map(|run| {
            run.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("drover "))
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect::<Vec<Vec<String>>>()
        })
        .collect()
}

fn help(command: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "drover {command} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Each flag of each command line appears in that command's `--help`, and the whole
/// line parses (the same arguments with `--help` appended exit 0; an unknown flag or a
/// bad value would exit 2).
fn assert_flags_exist(commands: &[Vec<String>]) {
    for cmd in commands {
        let parsed = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(&cmd[1..])
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            parsed.status.success(),
            "`{}` does not parse: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&parsed.stderr)
        );
        let text = help(&cmd[1]);
        for flag in cmd.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                text.contains(&format!("{flag} "))
                    || text.contains(&format!("{flag}\n"))
                    || text.contains(&format!("{flag}[")),
                "`{}`: drover {} has no flag {flag}",
                cmd.join(" "),
                cmd[1]
            );
        }
    }
}

#[test]
fn the_plan_workflow_runs_on_pull_requests_with_least_privilege() {
    let wf = workflow("plan.yml");
    assert!(wf["on"]["pull_request"].is_object(), "{}", wf["on"]);
    assert!(
        wf["on"].get("pull_request_target").is_none(),
        "never pull_request_target"
    );
    let perms: BTreeSet<(String, String)> = wf["permissions"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("contents", "read"),
        ("pull-requests", "write"),
        ("checks", "write"),
        ("statuses", "write"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(perms, want);

    let steps = steps(&wf);
    let checkouts: Vec<&Value> = steps
        .iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/checkout@"))
        })
        .collect();
    assert!(
        checkouts
            .iter()
            .any(|s| s["with"]["path"] == "base" && s["with"]["ref"] == "${{ github.base_ref }}"),
        "the base branch is checked out to base/"
    );
    assert!(
        checkouts
            .iter()
            .all(|s| s["with"]["persist-credentials"] == false)
    );

    let commands = drover_commands(&wf);
    assert!(commands.iter().any(|c| c[1] == "validate"), "{commands:?}");
    let plan = commands
        .iter()
        .find(|c| c[1] == "plan")
        .expect("a plan step");
    assert!(plan.contains(&"--pr".to_string()));
    let base = plan
        .iter()
        .position(|a| a == "--base-dir")
        .expect("--base-dir");
    assert_eq!(plan[base + 1], "base");
    assert!(
        !commands.iter().any(|c| c[1] == "apply"),
        "a pull request never applies"
    );
    assert_flags_exist(&commands);
}

#[test]
fn the_apply_workflow_applies_main_only() {
    let wf = workflow("apply.yml");
    let branches = wf["on"]["push"]["branches"].as_array().unwrap();
    assert_eq!(branches, &vec![Value::from("main")]);
    assert!(wf["on"].get("pull_request").is_none());
    assert_eq!(wf["permissions"]["contents"], "read");
    assert_eq!(wf["concurrency"]["cancel-in-progress"], false);
    let commands = drover_commands(&wf);
    let apply = commands
        .iter()
        .find(|c| c[1] == "apply")
        .expect("an apply step");
    assert!(apply.contains(&"--yes".to_string()));
    assert!(commands.iter().any(|c| c[1] == "validate"));
    assert_flags_exist(&commands);
}
