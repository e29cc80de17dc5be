//! The appliance's clock: Unix milliseconds, and how a time is written. Every part reads the
//! time here (and takes it as a parameter where a test must choose it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Now, in Unix seconds: what leases are kept in.
pub fn now_s() -> i64 {
    now_ms() / 1000
}

/// Unix ms as an RFC 3339 UTC time, to the second.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
