//! What one instance may use: a leaf type that the runtime, the reporter, the store and
//! the policy all read, so none of them imports another for it.

use std::time::Duration;

/// What one instance may use. A component that exceeds them traps, and the call ends in
/// [`crate::HostError::Trap`]; the host and its other instances carry on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall time for `parse-*` and `configure` calls.
    pub parse_budget: Duration,
    /// Wall time a report call may take beyond the configuration's own retry deadline.
    pub report_margin: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 128 << 20,
            parse_budget: Duration::from_secs(10),
            report_margin: Duration::from_secs(10),
        }
    }
}
