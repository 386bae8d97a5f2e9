//! GitHub runner names: `drover-<fleet>-<set>-<suffix>`, the mark of drover's ownership on
//! GitHub. On Kubernetes the runner's Pod has the same name; on Slurm the suffix is
//! `j<job id>`. A registered runner whose name does not parse as one of the fleet's is
//! never touched.

/// Prefix of every runner name of a runner set: `drover-<fleet>-<set>-`.
pub fn runner_prefix(fleet: &str, set: &str) -> String {
    format!("drover-{fleet}-{set}-")
}

/// The name of a runner (and of its Pod): `drover-<fleet>-<set>-<suffix>`.
pub fn runner_name(fleet: &str, set: &str, suffix: &str) -> String {
    format!("{}{suffix}", runner_prefix(fleet, set))
}

/// The runner set a runner name belongs to, among `sets` of `fleet`. The longest matching
/// set name wins, so `gpu` and `gpu-big` never claim each other's runners.
pub fn set_of_runner<'a>(
    name: &str,
    fleet: &str,
    sets: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    sets.into_iter()
        .filter(|set| {
            name.strip_prefix(&runner_prefix(fleet, set))
                .is_some_and(|suffix| {
                    !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_alphanumeric())
                })
        })
        .max_by_key(|set| set.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_longest_set_wins() {
        let name = runner_name("prod", "gpu-big", "x7k2p");
        assert_eq!(name, "drover-prod-gpu-big-x7k2p");
        assert_eq!(
            set_of_runner(&name, "prod", ["gpu", "gpu-big"]),
            Some("gpu-big")
        );
        assert_eq!(
            set_of_runner("drover-prod-gpu-j42", "prod", ["gpu", "gpu-big"]),
            Some("gpu")
        );
        assert_eq!(set_of_runner("drover-prod-gpu-", "prod", ["gpu"]), None);
        assert_eq!(set_of_runner("drover-dev-gpu-a1", "prod", ["gpu"]), None);
        assert_eq!(set_of_runner("my-laptop", "prod", ["gpu"]), None);
    }
}
