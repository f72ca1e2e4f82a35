//! Per-instance memory: a limit the component cannot grow past, and the peak it reached
//! (so a benchmark or test can show what a push really cost).

use wasmtime::ResourceLimiter;

/// A `ResourceLimiter` that caps linear memory and remembers its high-water mark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryMeter {
    limit: usize,
    peak: usize,
    /// Set when growth was refused since the last [`MemoryMeter::clear_refusal`]: a trap
    /// that follows is the component running out of memory.
    refused: bool,
}

/// Table entries allowed per table; far above what the component needs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryMeter {
    /// A meter that refuses growth beyond `limit` bytes.
    pub(crate) fn new(limit: usize) -> MemoryMeter {
        MemoryMeter {
            limit,
            peak: 0,
            refused: false,
        }
    }

    /// The largest linear memory any of the instance's memories reached, in bytes.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// Whether growth was refused since the last [`MemoryMeter::clear_refusal`].
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Forgets earlier refusals (at the start of each call).
    pub(crate) fn clear_refusal(&mut self) {
        self.refused = false;
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
            self.refused = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        Ok(())
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
