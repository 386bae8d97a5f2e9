//! drover's integration tests, in one binary so that the shared support code (emulators,
//! test beds, fixtures) compiles once. Each module is one area; `cargo nextest run` runs
//! every test in its own process.

mod serve_support;
mod support;

mod autoscale;
mod autoscale_props;
mod cli_sites;
mod faults;
mod fleet_validation;
mod fuzz_props;
mod git_source;
mod github_client;
mod github_issues;
mod kube_emulator;
mod kubernetes_example_fleet;
mod kubernetes_render;
mod kubernetes_runners;
mod kubernetes_site;
mod planted_tokens;
mod pr_plans;
mod pr_workflows;
mod schema_props;
mod serve;
mod serve_deploy;
mod serve_drift;
mod serve_e2e;
mod serve_lease;
mod serve_load;
mod serve_page;
mod serve_triggers;
mod slurm_containers;
mod slurm_drivers;
mod slurm_rest;
mod slurm_site;
