//! Kubernetes resource quantities (`2`, `500m`, `4Gi`), as runner sets declare cpu and
//! memory. One parser serves every driver: the Kubernetes driver multiplies a runner's
//! request by `max` and writes it back in the API server's canonical form (so a quota reads
//! back unchanged), and the Slurm driver converts to whole CPUs and MiB.

/// Binary suffixes, largest first, with their power of 1024.
const BINARY: [(&str, u32); 6] = [
    ("Ei", 6),
    ("Pi", 5),
    ("Ti", 4),
    ("Gi", 3),
    ("Mi", 2),
    ("Ki", 1),
];
/// Decimal suffixes, largest first, with their power of 1000.
const DECIMAL: [(&str, u32); 6] = [("E", 6), ("P", 5), ("T", 4), ("G", 3), ("M", 2), ("k", 1)];

/// A parsed quantity: an exact value in thousandths of the base unit (milli-units), and
/// whether it was written with a binary suffix (which decides the canonical suffix family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    milli: u128,
    binary: bool,
}

impl Quantity {
    /// Parses `2`, `500m`, `1.5`, `4Gi`, `128M`. `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        // Same shape as the fleet schema's pattern: no bare `.5` or `1.`.
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return None;
        }
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.len() > 3 || frac.contains('.') || (int.is_empty() && frac.is_empty()) {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_milli: u128 = format!("{frac:0<3}").parse().ok()?;
        let base = int.checked_mul(1000)?.checked_add(frac_milli)?;
        let (mult, binary) = match suffix {
            "" => (1u128, false),
            "m" => {
                if !base.is_multiple_of(1000) {
                    return None;
                }
                return Some(Quantity {
                    milli: base / 1000,
                    binary: false,
                });
            }
            s => {
                if let Some((_, p)) = BINARY.iter().find(|(x, _)| *x == s) {
                    (1024u128.pow(*p), true)
                } else if let Some((_, p)) = DECIMAL.iter().find(|(x, _)| *x == s) {
                    (1000u128.pow(*p), false)
                } else {
                    return None;
                }
            }
        };
        Some(Quantity {
            milli: base.checked_mul(mult)?,
            binary,
        })
    }

    /// Whole units, rounded up (`500m` CPU → 1).
    pub(crate) fn ceil_units(self) -> u128 {
        self.milli.div_ceil(1000)
    }

    /// Mebibytes, rounded up (`120Gi` → 122880, `1G` → 954).
    pub(crate) fn ceil_mebibytes(self) -> u128 {
        self.milli.div_ceil(1000 << 20)
    }

    /// The quantity times `n`.
    pub(crate) fn times(self, n: u32) -> Quantity {
        Quantity {
            milli: self.milli.saturating_mul(u128::from(n)),
            binary: self.binary,
        }
    }

    /// The sum of two quantities (binary if either is).
    pub(crate) fn plus(self, other: Quantity) -> Quantity {
        Quantity {
            milli: self.milli.saturating_add(other.milli),
            binary: self.binary || other.binary,
        }
    }

    /// The canonical text: the largest suffix of the value's family that keeps an integer,
    /// `m` for fractions, as the API server serialises quantities.
    pub(crate) fn canonical(self) -> String {
        if self.milli == 0 {
            return "0".to_string();
        }
        if !self.milli.is_multiple_of(1000) {
            return format!("{}m", self.milli);
        }
        let units = self.milli / 1000;
        if self.binary {
            for (suffix, p) in BINARY {
                let m = 1024u128.pow(p);
                if units.is_multiple_of(m) {
                    return format!("{}{suffix}", units / m);
                }
            }
        } else {
            for (suffix, p) in DECIMAL {
                let m = 1000u128.pow(p);
                if units.is_multiple_of(m) {
                    return format!("{}{suffix}", units / m);
                }
            }
        }
        units.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_and_writes_canonical_quantities() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("2").times(40).canonical(), "80");
        assert_eq!(q("4Gi").times(40).canonical(), "160Gi");
        assert_eq!(q("1Ti").times(4).canonical(), "4Ti");
        assert_eq!(q("500m").times(3).canonical(), "1500m");
        assert_eq!(q("500m").times(2).canonical(), "1");
        assert_eq!(q("0.5").canonical(), "500m");
        assert_eq!(q("1024Mi").canonical(), "1Gi");
        assert_eq!(q("1500M").canonical(), "1500M");
        assert_eq!(q("128Gi").times(0).canonical(), "0");
        assert!(Quantity::parse("1.2345").is_none());
    }
}
