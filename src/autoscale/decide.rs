//! How many runners a runner set should have.
//!
//! `desired = clamp(queued + busy + idleBuffer, min, max)`, then bounded by what the
//! set's pool can hold. `queued` counts the jobs *still queued* that matched the set this
//! round and `busy` the set's runners running a job now, so the decision is a function of
//! current demand only: nothing is remembered between rounds, and a runner taken by
//! another job than the one it was started for is made up for on the next round.
//!
//! The pool bound wins over `min`: drover never asks a site for runners that cannot be
//! placed. Pools shared by several runner sets are bounded per set here (each set alone
//! fits); a joint budget across the sets of one pool is not modelled yet.

use crate::fleet::model::{NodePoolSpec, RunnerSetSpec};

/// What one scaling decision is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScaleInput {
    /// The set's `min`.
    pub min: u32,
    /// The set's `max`.
    pub max: u32,
    /// The set's `idleBuffer`.
    pub idle_buffer: u32,
    /// Queued jobs matched to the set.
    pub queued: u32,
    /// The set's runners that are running a job.
    pub busy: u32,
    /// Most runners the set's pool can hold ([`pool_capacity`]); `None` = unbounded.
    pub capacity: Option<u32>,
}

impl ScaleInput {
    /// The input for a runner set with current demand and its pool's capacity.
    pub fn for_set(spec: &RunnerSetSpec, queued: u32, busy: u32, capacity: Option<u32>) -> Self {
        Self {
            min: spec.min,
            max: spec.max,
            idle_buffer: spec.idle_buffer,
            queued,
            busy,
            capacity,
        }
    }
}

/// What limited a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Demand (queued + busy + idle buffer), within min and max.
    Demand,
    /// Raised to `min`.
    Min,
    /// Cut to `max`.
    Max,
    /// Cut to the pool's capacity: "pool at capacity".
    PoolCapacity,
}

/// A scaling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Desired runner count.
    pub desired: u32,
    /// What limited it.
    pub bound: Bound,
    /// Demand before any bound: queued + busy + idle buffer.
    pub demand: u32,
}

impl Decision {
    /// Whether the pool could not hold what min/max and demand asked for.
    pub fn pool_at_capacity(&self) -> bool {
        self.bound == Bound::PoolCapacity
    }

    /// A one-line explanation for plans and logs.
    pub fn explain(&self) -> String {
        let why = match self.bound {
            Bound::Demand => "demand",
            Bound::Min => "min",
            Bound::Max => "max",
            Bound::PoolCapacity => "pool at capacity",
        };
        format!(
            "desired {} (demand {}, bounded by {why})",
            self.desired, self.demand
        )
    }
}

/// The desired runner count of one set.
pub fn decide(input: ScaleInput) -> Decision {
    let demand = input
        .queued
        .saturating_add(input.busy)
        .saturating_add(input.idle_buffer);
    let min = input.min.min(input.max);
    let (mut desired, mut bound) = if demand > input.max {
        (input.max, Bound::Max)
    } else if demand < min {
        (min, Bound::Min)
    } else {
        (demand, Bound::Demand)
    };
    if let Some(cap) = input.capacity
        && desired > cap
    {
        desired = cap;
        bound = Bound::PoolCapacity;
    }
    Decision {
        desired,
        bound,
        demand,
    }
}

/// Most runners of `set` that `pool` can hold at once, when that is known: for a set that
/// requests GPUs on a pool with GPUs and a `nodeCount`, `nodeCount × (perNode / gpus per
/// runner)` (a runner's GPUs are on one node). `None` (unbounded) otherwise.
pub fn pool_capacity(pool: &NodePoolSpec, set: &RunnerSetSpec) -> Option<u32> {
    let want = set.resources.gpu.as_ref()?.count;
    let per_node = pool.gpu.as_ref()?.per_node;
    let nodes = pool.node_count?;
    Some(nodes.saturating_mul(per_node.checked_div(want)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        min: u32,
        max: u32,
        idle: u32,
        queued: u32,
        busy: u32,
        cap: Option<u32>,
    ) -> ScaleInput {
        ScaleInput {
            min,
            max,
            idle_buffer: idle,
            queued,
            busy,
            capacity: cap,
        }
    }

    #[test]
    fn demand_min_max_and_capacity() {
        assert_eq!(decide(input(0, 10, 1, 3, 2, None)).desired, 6);
        assert_eq!(decide(input(4, 10, 0, 1, 0, None)).bound, Bound::Min);
        assert_eq!(decide(input(0, 5, 0, 9, 0, None)).bound, Bound::Max);
        let d = decide(input(0, 10, 0, 9, 0, Some(8)));
        assert_eq!((d.desired, d.pool_at_capacity()), (8, true));
        assert_eq!(
            d.explain(),
            "desired 8 (demand 9, bounded by pool at capacity)"
        );
        assert_eq!(
            decide(input(6, 10, 0, 0, 0, Some(4))).desired,
            4,
            "capacity wins over min"
        );
    }

    #[test]
    fn a_stolen_runner_leaves_the_job_counted() {
        // Round 1: job 1 queued → one runner. GitHub gives that runner to job 2 instead
        // (which also matched); round 2 sees job 1 still queued and the runner busy.
        assert_eq!(decide(input(0, 10, 0, 1, 0, None)).desired, 1);
        assert_eq!(decide(input(0, 10, 0, 1, 1, None)).desired, 2);
    }

    #[test]
    fn gpu_capacity() {
        let pool: NodePoolSpec = serde_json::from_value(serde_json::json!({
            "site": "s", "nodeCount": 3, "gpu": {"vendor": "amd", "perNode": 8}
        }))
        .unwrap();
        let set = |gpus: u32| -> RunnerSetSpec {
            serde_json::from_value(serde_json::json!({
                "github": {"org": "a"}, "labels": ["gpu"], "pool": "p", "max": 100,
                "resources": {"gpu": {"vendor": "amd", "count": gpus}}
            }))
            .unwrap()
        };
        assert_eq!(pool_capacity(&pool, &set(1)), Some(24));
        assert_eq!(pool_capacity(&pool, &set(8)), Some(3));
        assert_eq!(
            pool_capacity(&pool, &set(3)),
            Some(6),
            "2 per node, GPUs do not span nodes"
        );
        let cpu: RunnerSetSpec = serde_json::from_value(serde_json::json!({
            "github": {"org": "a"}, "labels": ["cpu"], "pool": "p", "max": 100
        }))
        .unwrap();
        assert_eq!(pool_capacity(&pool, &cpu), None);
    }
}
