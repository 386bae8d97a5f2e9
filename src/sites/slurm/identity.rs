//! How a runner job says who owns it: the job name and comment formats, and their strict
//! parser. Pure; no I/O.
//!
//! * name: `drover-<fleet>-<set>`
//! * comment: `drover:fleet=<fleet>,set=<set>,slot=<n>`
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

/// Who owns a runner job: fleet, runner set and slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobIdentity {
    /// The owning fleet's name.
    pub fleet: String,
    /// The runner set's name.
    pub set: String,
    /// The runner's slot within its set, from 1.
    pub slot: u32,
}

impl JobIdentity {
    /// An identity.
    pub fn new(fleet: impl Into<String>, set: impl Into<String>, slot: u32) -> Self {
        Self {
            fleet: fleet.into(),
            set: set.into(),
            slot,
        }
    }

    /// The job name: `drover-<fleet>-<set>`.
    pub fn job_name(&self) -> String {
        job_name(&self.fleet, &self.set)
    }

    /// The job comment: `drover:fleet=<fleet>,set=<set>,slot=<n>`.
    pub fn comment(&self) -> String {
        format!(
            "{COMMENT_PREFIX}fleet={},set={},slot={}",
            self.fleet, self.set, self.slot
        )
    }

    /// Parses a job's name and comment; `None` unless both are exactly drover's formats
    /// and agree with each other.
    pub fn parse(name: &str, comment: &str) -> Option<Self> {
        let rest = comment.strip_prefix(COMMENT_PREFIX)?;
        let mut fields = rest.split(',');
        let fleet = field(fields.next()?, "fleet")?;
        let set = field(fields.next()?, "set")?;
        let slot = field(fields.next()?, "slot")?;
        if fields.next().is_some() || !is_label(fleet) || !is_label(set) {
            return None;
        }
        let slot = parse_slot(slot)?;
        (name == job_name(fleet, set)).then(|| Self::new(fleet, set, slot))
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
        let id = JobIdentity::new("gpu-ci", "gpu-a100-slurm", 3);
        assert_eq!(id.job_name(), "drover-gpu-ci-gpu-a100-slurm");
        assert_eq!(
            id.comment(),
            "drover:fleet=gpu-ci,set=gpu-a100-slurm,slot=3"
        );
        assert_eq!(JobIdentity::parse(&id.job_name(), &id.comment()), Some(id));
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
