//! Time in the protocol: whole seconds since the Unix epoch.

/// Seconds since the Unix epoch, UTC. Every instant in the protocol is one.
pub type UnixSeconds = u64;

/// Now, from the system clock (0 if the clock is before 1970).
pub fn now() -> UnixSeconds {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
