//! Per-instance memory: a limit the component cannot grow past, and the peak it reached
//! (so a benchmark or test can show what a push really cost).

use wasmtime::ResourceLimiter;

/// A `ResourceLimiter` that caps linear memory and remembers its high-water mark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryMeter {
    limit: usize,
    peak: usize,
}

/// Table entries allowed per table; far above what the component needs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryMeter {
    /// A meter that refuses growth beyond `limit` bytes.
    pub(crate) fn new(limit: usize) -> MemoryMeter {
        MemoryMeter { limit, peak: 0 }
    }

    /// The largest linear memory any of the instance's memories reached, in bytes.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
