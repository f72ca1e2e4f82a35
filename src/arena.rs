//! Where the host lowers an export's arguments: a bump arena reused once the call that
//! received them ends, instead of one allocation per lowered string and list and one
//! free of each after the call.
//!
//! Why: lowering the demo build's `build-event` cost 73,126 instructions per call, about
//! 28,000 of them the guest's allocator (callgrind, docs/performance.md). Here a lowered
//! string costs a bump, and its free a range check.
//!
//! Only `cabi_realloc` (called by the host, never by our code) allocates here, and only
//! between the end of a call whose arguments are dead when it returns (a report,
//! `parse-*`) and the start of the next export's body: the window in which the host
//! lowers the next call's arguments. The guest's own allocations never come here, so
//! nothing it keeps lives in the arena. An export that may keep its arguments
//! (`configure`, the relay's handler) pins what the arena holds instead of reusing it.

// Natively (the host links this crate for its pure modules) nothing calls into the arena.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Bytes of the arena: the demo build's event lowers into about 6 KiB; a larger one (an
/// inline log) spills over into the ordinary allocator.
const SIZE: usize = 64 * 1024;

#[repr(align(16))]
struct Chunk(#[allow(dead_code)] [u8; SIZE]); // only its address is read

/// In the module's zeroed memory (`.bss`): no bytes in the `.wasm`.
static mut CHUNK: Chunk = Chunk([0; SIZE]);

struct State {
    /// Offset of the first byte the arena may reuse; what is before it is pinned.
    start: Cell<usize>,
    /// Offset of the next free byte.
    next: Cell<usize>,
    /// Whether `cabi_realloc` allocates here: between calls only.
    armed: Cell<bool>,
}

// SAFETY: a component instance runs one thread.
unsafe impl Sync for State {}

static STATE: State = State {
    start: Cell::new(0),
    next: Cell::new(0),
    armed: Cell::new(false),
};

fn base() -> usize {
    std::ptr::addr_of!(CHUNK) as usize
}

fn holds(ptr: *mut u8) -> bool {
    (ptr as usize).wrapping_sub(base()) < SIZE
}

/// The start of an export whose arguments are dead when it returns: allocations go back
/// to the ordinary allocator until [`call_ended`].
pub(crate) fn call_began() {
    STATE.armed.set(false);
}

/// The end of such an export: its arguments are dropped (or about to be, which frees
/// nothing here), so the arena takes the next call's arguments from its start.
pub(crate) fn call_ended() {
    STATE.next.set(STATE.start.get());
    STATE.armed.set(true);
}

/// The start of an export that may keep its arguments past the call: what the arena
/// holds stays for good, and the next arguments go to the ordinary allocator.
pub(crate) fn keep_arguments() {
    STATE.armed.set(false);
    STATE.start.set(STATE.next.get());
}

/// `size` bytes aligned to `align` from the arena, if it is armed and has room.
fn bump(align: usize, size: usize) -> Option<*mut u8> {
    if !STATE.armed.get() {
        return None;
    }
    let at = (base() + STATE.next.get()).checked_next_multiple_of(align)?;
    let end = at.checked_add(size)?;
    if end > base() + SIZE {
        return None;
    }
    STATE.next.set(end - base());
    Some(at as *mut u8)
}

/// The canonical ABI's allocator, in place of wit-bindgen's (a weak symbol): the arena
/// for a fresh allocation while it is armed, the ordinary allocator otherwise.
///
/// # Safety
///
/// As the canonical ABI calls it: `old_ptr`/`old_len` name an allocation of this
/// allocator (or `old_len` is 0), `align` is a power of two.
#[cfg(target_arch = "wasm32")]
#[export_name = "cabi_realloc"]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if old_len == 0 && new_len != 0 {
        if let Some(ptr) = bump(align, new_len) {
            return ptr;
        }
    }
    // SAFETY: the caller's contract is this function's.
    unsafe { wit_bindgen::rt::cabi_realloc(old_ptr, old_len, align, new_len) }
}

/// The system allocator, except that memory of the arena is never freed into it (it is
/// reused whole) and leaves the arena when it grows.
pub struct Allocator;

// SAFETY: every allocation comes from `System`, or from the arena whose memory `dealloc`
// and `realloc` leave to it.
//
// Not inlined: inlined, the system allocator's paths were copied into every caller (44 KiB
// more code, measured with `cargo xtask wasm`).
unsafe impl GlobalAlloc for Allocator {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !holds(ptr) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !holds(ptr) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `layout.align()` is a valid alignment and `new_size` is non-zero, as
        // `GlobalAlloc::realloc` requires of its caller.
        let moved =
            unsafe { System.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !moved.is_null() {
            unsafe { std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size)) };
        }
        moved
    }
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the arena is one global, and tests run on several threads.
    #[test]
    fn arguments_are_reused_after_a_call_and_kept_when_pinned() {
        // Armed only between calls: a call's own allocations never come here.
        call_began();
        assert_eq!(bump(8, 16), None);
        call_ended();
        let first = bump(8, 100).expect("armed after a call");
        assert!(holds(first) && (first as usize).is_multiple_of(8));
        let second = bump(16, 10).unwrap();
        assert!((second as usize).is_multiple_of(16) && second as usize >= first as usize + 100);
        // Freeing arena memory is a no-op; growing it moves it out, contents kept.
        unsafe {
            first.write_bytes(7, 100);
            let layout = Layout::from_size_align(100, 8).unwrap();
            Allocator.dealloc(second, Layout::from_size_align(10, 16).unwrap());
            let grown = Allocator.realloc(first, layout, 200);
            assert!(!holds(grown));
            assert_eq!(std::slice::from_raw_parts(grown, 100), &[7; 100][..]);
            Allocator.dealloc(grown, Layout::from_size_align(200, 8).unwrap());
        }
        // The next call's arguments start over at the same place.
        call_began();
        call_ended();
        assert_eq!(bump(8, 100), Some(first));
        // An export that keeps its arguments pins them: the next call's go after them.
        keep_arguments();
        assert_eq!(bump(8, 8), None, "disarmed during the call");
        call_ended();
        let after = bump(8, 8).unwrap();
        assert!(after as usize >= first as usize + 100);
        // Too large for what is left: the ordinary allocator takes it.
        assert_eq!(bump(8, SIZE), None);
        call_began();
    }
}
