//! Property tests of the autoscaling core: decisions stay within min, max and pool
//! capacity, and matching never assigns a job to a set lacking one of its labels.

use std::collections::BTreeSet;

use drover::autoscale::matching::match_job;
use drover::autoscale::{
    Bound, JobRequest, ScaleInput, SetCandidate, UnmatchedReason, decide, match_jobs,
};
use drover::fleet::model::RunnerScope;
use proptest::prelude::*;

const LABELS: [&str; 6] = ["gpu", "cpu", "mi300x", "h100", "big", "slurm"];

fn label_set() -> impl Strategy<Value = BTreeSet<String>> {
    proptest::sample::subsequence(LABELS.to_vec(), 0..=LABELS.len())
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn scope() -> impl Strategy<Value = RunnerScope> {
    prop_oneof![
        Just(RunnerScope {
            org: Some("acme".into()),
            ..RunnerScope::default()
        }),
        Just(RunnerScope {
            org: Some("other".into()),
            ..RunnerScope::default()
        }),
        Just(RunnerScope {
            repo: Some("acme/w".into()),
            ..RunnerScope::default()
        }),
        Just(RunnerScope {
            enterprise: Some("ent".into()),
            ..RunnerScope::default()
        }),
    ]
}

fn sets() -> impl Strategy<Value = Vec<SetCandidate>> {
    proptest::collection::vec((scope(), label_set()), 0..6).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (scope, mut labels))| {
                labels.extend(["self-hosted", "linux", "x64"].map(String::from));
                SetCandidate {
                    name: format!("set-{i}"),
                    scope,
                    labels,
                }
            })
            .collect()
    })
}

fn job() -> impl Strategy<Value = JobRequest> {
    (
        0u64..1000,
        prop_oneof![Just("acme/w"), Just("acme/x"), Just("other/y")],
        proptest::option::of(Just("ent".to_string())),
        proptest::sample::subsequence(LABELS.to_vec(), 0..=3),
        any::<bool>(),
    )
        .prop_map(|(id, repo, enterprise, labels, upper)| JobRequest {
            id,
            repo: repo.into(),
            enterprise,
            labels: labels
                .into_iter()
                .map(|l| {
                    if upper {
                        l.to_uppercase()
                    } else {
                        l.to_string()
                    }
                })
                .collect(),
        })
}

proptest! {
    #[test]
    fn decisions_stay_within_bounds(
        min in 0u32..50, max in 0u32..50, idle in 0u32..10,
        queued in 0u32..100, busy in 0u32..100, cap in proptest::option::of(0u32..60),
    ) {
        let d = decide(ScaleInput { min, max, idle_buffer: idle, queued, busy, capacity: cap });
        prop_assert!(d.desired <= max);
        if let Some(cap) = cap {
            prop_assert!(d.desired <= cap);
            prop_assert!(d.desired >= min.min(max).min(cap));
        } else {
            prop_assert!(d.desired >= min.min(max));
        }
        // Never fewer runners than still-queued plus busy jobs, unless a bound says so.
        if d.desired < queued + busy {
            prop_assert!(matches!(d.bound, Bound::Max | Bound::PoolCapacity));
        }
        prop_assert_eq!(d.pool_at_capacity(), d.bound == Bound::PoolCapacity);
    }

    #[test]
    fn a_job_only_goes_to_a_set_with_all_its_labels(jobs in proptest::collection::vec(job(), 0..10), sets in sets()) {
        // Job ids are unique, as on GitHub.
        let jobs: Vec<JobRequest> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, j)| JobRequest { id: i as u64, ..j })
            .collect();
        let out = match_jobs(&jobs, &sets);
        for (set_name, ids) in &out.assigned {
            let set = sets.iter().find(|s| &s.name == set_name).unwrap();
            for id in ids {
                for j in jobs.iter().filter(|j| j.id == *id) {
                    prop_assert!(set.in_scope(j));
                    for l in &j.labels {
                        prop_assert!(set.labels.contains(&l.to_lowercase()), "{l} missing in {set_name}");
                    }
                }
            }
        }
        prop_assert_eq!(
            out.assigned.values().map(Vec::len).sum::<usize>() + out.unmatched.len(),
            jobs.len()
        );
        for u in &out.unmatched {
            if let UnmatchedReason::MissingLabels { closest, missing } = &u.reason {
                let set = sets.iter().find(|s| &s.name == closest).unwrap();
                prop_assert!(!missing.is_empty());
                prop_assert!(missing.iter().all(|m| !set.labels.contains(m)));
            }
        }
    }

    #[test]
    fn the_chosen_set_is_the_most_specific(j in job(), sets in sets()) {
        if let Ok(name) = match_job(&j, &sets) {
            let wanted: BTreeSet<String> = j.labels.iter().map(|l| l.to_lowercase()).collect();
            let chosen = sets.iter().find(|s| s.name == name).unwrap();
            for other in sets.iter().filter(|s| s.in_scope(&j) && wanted.is_subset(&s.labels)) {
                prop_assert!(chosen.labels.len() <= other.labels.len());
            }
        }
    }
}
