//! How a runner job says who owns it: the job name and comment formats, and their strict
//! parser. Pure; no I/O.
//!
//! * name: `drover-<fleet>-<set>`
//! * comment: `drover:fleet=<fleet>,set=<set>,slot=<n>,site=<site>`
//!
//! The `site=` field names the Site the job was submitted for. Jobs submitted before site
//! labels have none: they are adopted by the one site that submits as their user to their
//! cluster (two sites may not share both, E316).
//!
//! `<fleet>` and `<set>` are DNS-1123 labels (the fleet model guarantees it), `<n>` is a
//! positive decimal without leading zeros. A job is drover's only when its comment parses
//! exactly *and* its name is exactly the one the comment implies; the name alone is
//! ambiguous (`drover-a-b-c`) and the comment alone is easy to copy by accident. The slot
//! numbers a runner within its set: two live jobs with one slot are duplicates (see
//! `docs/slurm.md`).

use std::fmt;

/// Prefix of every drover job comment.
pub const COMMENT_PREFIX: &str = "drover:";

/// Who owns a runner job: fleet, site, runner set and slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobIdentity {
    /// The owning fleet's name.
    pub fleet: String,
    /// The site it was submitted for; `None` for a job submitted before site labels.
    pub site: Option<String>,
    /// The runner set's name.
    pub set: String,
    /// The runner's slot within its set, from 1.
    pub slot: u32,
}

impl JobIdentity {
    /// The identity of slot `slot` of runner set `set`, submitted for `site` of `fleet`.
    pub fn new(
        fleet: impl Into<String>,
        site: impl Into<String>,
        set: impl Into<String>,
        slot: u32,
    ) -> Self {
        Self {
            fleet: fleet.into(),
            site: Some(site.into()),
            set: set.into(),
            slot,
        }
    }

    /// Whether a job of this identity is `site`'s: submitted for it, or before site labels.
    pub fn is_of_site(&self, site: &str) -> bool {
        self.site.as_deref().is_none_or(|s| s == site)
    }

    /// The job name: `drover-<fleet>-<set>`.
    pub fn job_name(&self) -> String {
        job_name(&self.fleet, &self.set)
    }

    /// The job comment: `drover:fleet=<fleet>,set=<set>,slot=<n>`.
    pub fn comment(&self) -> String {
        let mut comment = format!(
            "{COMMENT_PREFIX}fleet={},set={},slot={}",
            self.fleet, self.set, self.slot
        );
        if let Some(site) = &self.site {
            comment.push_str(",site=");
            comment.push_str(site);
        }
        comment
    }

    /// Parses a job's name and comment; `None` unless both are exactly drover's formats
    /// and agree with each other.
    pub fn parse(name: &str, comment: &str) -> Option<Self> {
        let rest = comment.strip_prefix(COMMENT_PREFIX)?;
        let mut fields = rest.split(',');
        let fleet = field(fields.next()?, "fleet")?;
        let set = field(fields.next()?, "set")?;
        let slot = field(fields.next()?, "slot")?;
        let site = match fields.next() {
            None => None,
            Some(kv) => Some(field(kv, "site").filter(|s| is_label(s))?),
        };
        if fields.next().is_some() || !is_label(fleet) || !is_label(set) {
            return None;
        }
        let slot = parse_slot(slot)?;
        (name == job_name(fleet, set)).then(|| Self {
            fleet: fleet.to_owned(),
            site: site.map(str::to_owned),
            set: set.to_owned(),
            slot,
        })
    }
}

impl fmt::Display for JobIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.set, self.slot)
    }
}

/// The job name of a runner set's jobs.
pub fn job_name(fleet: &str, set: &str) -> String {
    format!("drover-{fleet}-{set}")
}

fn field<'a>(kv: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = kv.split_once('=')?;
    (k == key).then_some(v)
}

fn parse_slot(s: &str) -> Option<u32> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_label(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|&b| alnum(b) || b == b'-')
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = JobIdentity::new("gpu-ci", "hpc", "gpu-a100-slurm", 3);
        assert_eq!(id.job_name(), "drover-gpu-ci-gpu-a100-slurm");
        assert_eq!(
            id.comment(),
            "drover:fleet=gpu-ci,set=gpu-a100-slurm,slot=3,site=hpc"
        );
        assert_eq!(JobIdentity::parse(&id.job_name(), &id.comment()), Some(id));
    }

    #[test]
    fn jobs_from_before_site_labels_parse_and_belong_to_any_site() {
        let legacy = "drover:fleet=gpu-ci,set=gpu-a100-slurm,slot=3";
        let id = JobIdentity::parse("drover-gpu-ci-gpu-a100-slurm", legacy).unwrap();
        assert_eq!(id.site, None);
        assert!(id.is_of_site("hpc") && id.is_of_site("other"));
        let mine = JobIdentity::new("gpu-ci", "hpc", "gpu-a100-slurm", 3);
        assert!(mine.is_of_site("hpc") && !mine.is_of_site("other"));
    }

    #[test]
    fn parsing_is_strict() {
        let name = "drover-f-s";
        let ok = "drover:fleet=f,set=s,slot=1";
        assert!(JobIdentity::parse(name, ok).is_some());
        for comment in [
            "",
            "drover:",
            "drover:fleet=f,set=s",
            "drover:fleet=f,set=s,slot=0",
            "drover:fleet=f,set=s,slot=01",
            "drover:fleet=f,set=s,slot=-1",
            "drover:fleet=f,set=s,slot=1,extra=x",
            "drover:fleet=f,set=s,slot=1,site=",
            "drover:fleet=f,set=s,slot=1,site=B",
            "drover:fleet=f,set=s,slot=1,site=b,extra=x",
            "drover:set=s,fleet=f,slot=1",
            "drover:fleet=f,set=s,slot=1 ",
            "Drover:fleet=f,set=s,slot=1",
            "drover:fleet=F,set=s,slot=1",
            "drover:fleet=f,set=s-,slot=1",
            "drover:fleet=f,set=s,slot=99999999999",
        ] {
            assert_eq!(JobIdentity::parse(name, comment), None, "{comment:?}");
        }
        // The name must be the one the comment implies.
        for other in ["drover-f-s2", "drover-f-s ", "f-s", "drover-ff-s"] {
            assert_eq!(JobIdentity::parse(other, ok), None, "{other:?}");
        }
        // Ambiguous names are told apart by the comment.
        let a = JobIdentity::parse("drover-a-b-c", "drover:fleet=a-b,set=c,slot=1").unwrap();
        let b = JobIdentity::parse("drover-a-b-c", "drover:fleet=a,set=b-c,slot=1").unwrap();
        assert_ne!(a, b);
    }
}
