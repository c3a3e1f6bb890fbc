//! The wall clock where the node reads it: seconds since the Unix epoch. The sans-IO cores
//! (range math, the catalog's walk, cookies, the protocol handlers) take the time as an argument;
//! their callers read it here. Calls nothing of the crate.

/// Now, in whole seconds since 1970-01-01T00:00:00Z (0 on a clock set before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
