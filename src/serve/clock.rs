//! The service's wall clock: Unix seconds, as `/status` and the page show times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 if the system clock is before 1970).
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
