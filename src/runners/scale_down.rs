//! The one scale-down policy, used by both site kinds: when more runners live than desired,
//! remove pending runners first, then idle ones, newest first within each. A busy runner,
//! or one whose state is not known, is never chosen. Each site driver says how its own
//! runners (Pods, jobs) stand; this module alone decides which go.

use std::collections::BTreeSet;

/// How scale-down may treat one live runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Not running yet: removing it costs nothing.
    Pending,
    /// Running, registered, online and not running a job.
    Idle,
    /// Busy, starting, or of unknown state: never removed by scale-down.
    Protected,
}

/// One live runner as scale-down sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live<K> {
    /// What the driver names it by (a Pod name, a job id).
    pub key: K,
    /// How scale-down may treat it.
    pub standing: Standing,
    /// When it was created (pending) or started (idle), Unix seconds: the larger, the newer.
    pub since: i64,
}

/// The runners to remove so that no more than `want` of `live` remain, as far as the
/// policy allows: pending ones first, then idle ones, newest first (by `since`, then key)
/// within each. Fewer than the excess are chosen when the rest are protected.
pub(crate) fn victims<K: Ord + Clone>(live: &[Live<K>], want: usize) -> BTreeSet<K> {
    let excess = live.len().saturating_sub(want);
    let newest_first = |standing: Standing| {
        let mut of: Vec<&Live<K>> = live.iter().filter(|r| r.standing == standing).collect();
        of.sort_by(|a, b| (b.since, &b.key).cmp(&(a.since, &a.key)));
        of
    };
    newest_first(Standing::Pending)
        .into_iter()
        .chain(newest_first(Standing::Idle))
        .take(excess)
        .map(|r| r.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Standing::{Idle, Pending, Protected};

    fn live(key: u32, standing: Standing, since: i64) -> Live<u32> {
        Live {
            key,
            standing,
            since,
        }
    }

    fn chosen(live: &[Live<u32>], want: usize) -> Vec<u32> {
        victims(live, want).into_iter().collect()
    }

    #[test]
    fn nothing_goes_at_or_below_the_desired_count() {
        let runners = [live(1, Pending, 10), live(2, Idle, 5)];
        assert!(victims(&runners, 2).is_empty());
        assert!(victims(&runners, 3).is_empty());
    }

    #[test]
    fn pending_go_before_idle_and_newest_first() {
        let runners = [
            live(1, Idle, 50),
            live(2, Pending, 10),
            live(3, Pending, 30),
            live(4, Idle, 40),
            live(5, Pending, 20),
        ];
        assert_eq!(chosen(&runners, 4), [3]);
        assert_eq!(chosen(&runners, 2), [2, 3, 5]);
        assert_eq!(chosen(&runners, 1), [1, 2, 3, 5]);
    }

    #[test]
    fn protected_runners_are_never_chosen_even_when_above_the_count() {
        let runners = [
            live(1, Protected, 1),
            live(2, Idle, 2),
            live(3, Protected, 3),
        ];
        assert_eq!(chosen(&runners, 0), [2]);
    }

    #[test]
    fn equal_times_fall_back_to_the_key_newest_being_the_largest() {
        let runners = [
            live(7, Pending, 5),
            live(9, Pending, 5),
            live(8, Pending, 5),
        ];
        assert_eq!(chosen(&runners, 2), [9]);
    }
}
