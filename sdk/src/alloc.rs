//! The plugin's heap: size classes in front of the system allocator.
//!
//! Every Patchbay call runs in a fresh instance, so a plugin's heap lives for one
//! call: it is small, short-lived and full of small objects (JSON strings, maps,
//! vectors). For that shape, Rust's default allocator on `wasm32-wasip2` (wasi-libc's
//! dlmalloc) spends much of a transform's time in `malloc` and `free`, and every one
//! of their function entries also pays the sandbox's deadline check.
//!
//! With the `fast-alloc` feature (on by default) the SDK installs [`Heap`] as the
//! global allocator of a plugin built for WebAssembly:
//! - a request of at most [`MAX_SMALL`] bytes (size or alignment, whichever is
//!   larger) is served from one of nine power-of-two size classes (8 B to 2 KiB):
//!   a freed block goes on its class's free list and is the next one that class
//!   hands out, so a loop that allocates and frees reuses the same memory;
//! - blocks are carved from chunks taken from the system allocator, 16 KiB at first
//!   and doubling to 64 KiB, so a small call takes little memory;
//! - anything larger goes to the system allocator, unchanged.
//!
//! A block is never larger than twice its request. Blocks are carved at multiples of
//! their size, and the gap rounding up leaves is not reused (in mixed workloads the
//! chunks hold about 1.2 to 1.5 times the bytes carved). A freed block stays with its
//! class, so the small-object heap is at most the sum of each class's peak: a call
//! that first fills memory with small blocks of one size, frees them, then does the
//! same with another size, holds both. For a plugin's one-call lifetime that is the
//! trade for speed; the memory limit still applies, and a plugin that needs dlmalloc's
//! coalescing turns the feature off. The class of a block is known from the `Layout`
//! the caller passes back, so blocks carry no header.
//!
//! **Blocks from elsewhere.** The host writes the lists and strings it passes in
//! through the component's `cabi_realloc`, which the SDK defines on wasi-libc's
//! `malloc`, not on this heap: wasi-libc frees the buffers of its own calls (stdin and
//! file reads, the environment, directories) with C `free`, which must only ever see
//! its own blocks. Rust code frees such a buffer through this heap, which sees that
//! the block is not in one of its chunks (chunks are whole, aligned granules of
//! [`GRANULE`] bytes, one bit each) and hands it back to the system allocator.
//!
//! A plugin that wants another allocator turns the feature off
//! (`patchbay-sdk = { version = "…", default-features = false }`) and installs its own.

use std::alloc::{GlobalAlloc, Layout};

/// Largest request (size or alignment) served from a size class; larger ones go to
/// the system allocator.
pub const MAX_SMALL: usize = 2048;

const MIN_CLASS: usize = 8;
const CLASSES: usize = (MAX_SMALL / MIN_CLASS).trailing_zeros() as usize + 1;
/// Chunks are whole, aligned granules, so a block's granule tells whose it is.
pub const GRANULE: usize = 16 * 1024;
const FIRST_CHUNK: usize = GRANULE;
const MAX_CHUNK: usize = 64 * 1024;
/// Granules in a 32-bit address space.
const GRANULES: usize = 1 << (32 - GRANULE.trailing_zeros());

/// Which granules of the address space hold this heap's chunks.
pub trait Granules {
    /// Record that granule `index` is one of the heap's.
    fn mark(&mut self, index: usize);
    /// Whether granule `index` is one of the heap's.
    fn contains(&self, index: usize) -> bool;
}

/// One bit per granule of a 32-bit address space (32 KiB).
#[derive(Debug)]
pub struct GranuleBits([u32; GRANULES / 32]);

impl GranuleBits {
    /// No granule marked.
    pub const fn new() -> Self {
        Self([0; GRANULES / 32])
    }
}

impl Default for GranuleBits {
    fn default() -> Self {
        Self::new()
    }
}

impl Granules for GranuleBits {
    #[inline]
    fn mark(&mut self, index: usize) {
        if let Some(word) = self.0.get_mut(index / 32) {
            *word |= 1 << (index % 32);
        }
    }

    #[inline(always)]
    fn contains(&self, index: usize) -> bool {
        // Exact off WebAssembly too (an index past a 32-bit space is nobody's); on
        // wasm32 every index is in range, so the check costs nothing there.
        self.0
            .get(index / 32)
            .is_some_and(|word| word & (1 << (index % 32)) != 0)
    }
}

/// The size class of `layout`: its index, or `None` for a large request.
#[inline(always)]
fn class_of(layout: &Layout) -> Option<usize> {
    let need = layout.size().max(layout.align()).max(MIN_CLASS);
    if need > MAX_SMALL {
        return None;
    }
    Some((need.next_power_of_two().trailing_zeros() - MIN_CLASS.trailing_zeros()) as usize)
}

#[inline(always)]
fn class_size(class: usize) -> usize {
    MIN_CLASS << class
}

/// The allocator's state: a free list per class (the address of its first free
/// block, which holds the address of the next), the chunk being carved, and which
/// granules are chunks.
#[derive(Debug)]
pub struct SizeClasses<B, G> {
    free: [usize; CLASSES],
    next: usize,
    end: usize,
    chunk: usize,
    chunk_bytes: usize,
    backing: B,
    granules: G,
}

impl<B: GlobalAlloc, G: Granules> SizeClasses<B, G> {
    /// Empty, taking its chunks and large blocks from `backing`.
    pub const fn new(backing: B, granules: G) -> Self {
        Self {
            free: [0; CLASSES],
            next: 0,
            end: 0,
            chunk: FIRST_CHUNK,
            chunk_bytes: 0,
            backing,
            granules,
        }
    }

    /// Whether `ptr` is in one of this heap's chunks (otherwise a small block being
    /// freed came from the backing allocator: see "Blocks from elsewhere").
    #[inline(always)]
    pub fn is_heap_block(&self, ptr: *const u8) -> bool {
        self.granules.contains(ptr as usize / GRANULE)
    }

    /// Bytes taken from the backing allocator for size classes so far.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Allocate as [`GlobalAlloc::alloc`].
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size.
    #[inline]
    pub unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(&layout) else {
            // SAFETY: the caller's contract is passed on unchanged.
            return unsafe { self.backing.alloc(layout) };
        };
        let head = self.free[class];
        if head != 0 {
            // SAFETY: `head` is a free block of this class, which holds the address of
            // the next one (written by `dealloc`); blocks are at least `usize`-aligned.
            self.free[class] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        let size = class_size(class);
        // `next` is at most `end`, which is at least a granule below the top of the
        // address space (chunks are granule-aligned), so rounding up cannot wrap.
        let start = (self.next + size - 1) & !(size - 1);
        match start.checked_add(size) {
            Some(stop) if self.next != 0 && stop <= self.end => {
                self.next = stop;
                start as *mut u8
            }
            _ => self.carve_from_new_chunk(size),
        }
    }

    #[cold]
    fn carve_from_new_chunk(&mut self, size: usize) -> *mut u8 {
        let len = self.chunk;
        // Aligned to a granule (so also to the largest class: a block of any class
        // carved at a multiple of its size from the chunk's start is aligned to its
        // size), and made of whole granules, which are marked as the heap's.
        let Ok(layout) = Layout::from_size_align(len, GRANULE) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `layout` has a non-zero size.
        let chunk = unsafe { self.backing.alloc(layout) };
        if chunk.is_null() {
            return chunk;
        }
        // A chunk ending at the very top of a 32-bit memory has no representable end.
        let Some(end) = (chunk as usize).checked_add(len) else {
            // SAFETY: just allocated with `layout`, and not handed out.
            unsafe { self.backing.dealloc(chunk, layout) };
            return std::ptr::null_mut();
        };
        let chunk = chunk as usize;
        for granule in (chunk..end).step_by(GRANULE) {
            self.granules.mark(granule / GRANULE);
        }
        self.chunk = (len * 2).min(MAX_CHUNK);
        self.chunk_bytes += len;
        self.next = chunk + size;
        self.end = end;
        chunk as *mut u8
    }

    /// Free as [`GlobalAlloc::dealloc`].
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`]: `ptr` came from this allocator with `layout`.
    #[inline]
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(&layout).filter(|_| self.is_heap_block(ptr)) else {
            // SAFETY: a large block, or a small one outside the chunks, came from the
            // backing allocator with this layout.
            return unsafe { self.backing.dealloc(ptr, layout) };
        };
        // SAFETY: the block is at least `MIN_CLASS` bytes, aligned to its class size
        // (at least a `usize`), and no longer the caller's.
        unsafe { *(ptr as *mut usize) = self.free[class] };
        self.free[class] = ptr as usize;
    }

    /// Resize as [`GlobalAlloc::realloc`]: in place while the class is unchanged.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    #[inline]
    pub unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc`'s contract makes this a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let old_class = class_of(&layout);
        if old_class.is_some() && !self.is_heap_block(ptr) {
            // A block from elsewhere stays with the backing allocator.
            // SAFETY: it came from the backing allocator with `layout`.
            return unsafe { self.backing.realloc(ptr, layout, new_size) };
        }
        match (old_class, class_of(&new_layout)) {
            (Some(old), Some(new)) if old == new => ptr,
            // SAFETY: both large: the block came from the backing allocator.
            (None, None) => unsafe { self.backing.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new_layout` has a non-zero size (the caller's contract).
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least this long.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

/// The global allocator the SDK installs in a plugin (module docs).
#[derive(Debug)]
pub struct Heap(std::cell::UnsafeCell<SizeClasses<std::alloc::System, GranuleBits>>);

impl Heap {
    /// Empty.
    pub const fn new() -> Self {
        Self(std::cell::UnsafeCell::new(SizeClasses::new(
            std::alloc::System,
            GranuleBits::new(),
        )))
    }
}

/// Whether `ptr` is a block of the heap the SDK installed (`false` without the
/// `fast-alloc` feature, or off WebAssembly). For tests of this module's promises.
#[doc(hidden)]
pub fn is_heap_block(ptr: *const u8) -> bool {
    #[cfg(all(target_arch = "wasm32", feature = "fast-alloc"))]
    {
        // SAFETY: a read of the one thread's state, between allocator calls.
        unsafe { (*HEAP.0.get()).is_heap_block(ptr) }
    }
    #[cfg(not(all(target_arch = "wasm32", feature = "fast-alloc")))]
    {
        let _ = ptr;
        false
    }
}

/// The canonical ABI's allocator: where the host writes the lists and strings it
/// passes in. It is wasi-libc's `malloc` (through `System`), not the size classes,
/// because wasi-libc frees the buffers of its own calls with C `free`; Rust code
/// that frees one goes through the heap, which hands it back to `System` (its
/// granule is not a chunk's).
///
/// # Safety
/// Called by the host per the canonical ABI: `old` is null with `old_len` 0, or a
/// block of `old_len` bytes this function returned with the same `align`.
#[cfg(all(target_arch = "wasm32", feature = "fast-alloc"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use std::alloc::System;
    if new_len == 0 {
        // No allocation: a dangling, aligned pointer, as the canonical ABI allows.
        return align as *mut u8;
    }
    let Ok(new_layout) = Layout::from_size_align(new_len, align) else {
        std::process::abort();
    };
    let block = if old_len == 0 {
        // SAFETY: non-zero size.
        unsafe { System.alloc(new_layout) }
    } else {
        // SAFETY: `old` came from here with `old_len` and `align` (the ABI's contract).
        unsafe {
            System.realloc(
                old,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if block.is_null() {
        std::process::abort();
    }
    block
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: a component built for `wasm32-wasip2` runs on one thread (the target has no
// threads, and the build below refuses shared memory), so the state is never touched
// from two threads. `Heap` is only installed on that target.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for Heap {}

#[cfg(all(
    target_arch = "wasm32",
    target_feature = "atomics",
    feature = "fast-alloc"
))]
compile_error!("patchbay-sdk's `fast-alloc` heap is single-threaded; build without `atomics`");

// SAFETY: each method forwards to `SizeClasses` under the same contract; the state
// is only reached from the one thread (see `Sync` above).
unsafe impl GlobalAlloc for Heap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout, new_size) }
    }
}

#[cfg(all(target_arch = "wasm32", feature = "fast-alloc"))]
#[global_allocator]
static HEAP: Heap = Heap::new();

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    /// Granules of a 64-bit address space, for tests off WebAssembly.
    #[derive(Default)]
    struct Set(std::collections::BTreeSet<usize>);
    impl Granules for Set {
        fn mark(&mut self, index: usize) {
            self.0.insert(index);
        }
        fn contains(&self, index: usize) -> bool {
            self.0.contains(&index)
        }
    }

    /// Assert the `len` bytes at `ptr` all hold `fill`.
    ///
    /// # Safety
    /// `ptr` is live for `len` bytes.
    unsafe fn assert_filled(ptr: *const u8, len: usize, fill: u8) {
        // SAFETY: the caller's contract.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        assert!(bytes.iter().all(|b| *b == fill), "block overwritten");
    }

    #[test]
    fn granule_bits_hold_exactly_what_was_marked() {
        let mut bits = GranuleBits::new();
        for index in [0, 31, 32, 4097, GRANULES - 1] {
            assert!(!bits.contains(index));
            bits.mark(index);
            assert!(bits.contains(index));
        }
        assert!(!bits.contains(1) && !bits.contains(33) && !bits.contains(4096));
        // Past a 32-bit address space: never marked, never anybody's.
        bits.mark(GRANULES);
        assert!(!bits.contains(GRANULES) && !bits.contains(GRANULES + 32));
        assert!(!bits.contains(usize::MAX / GRANULE));
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    /// A small deterministic generator, so a failure reproduces.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }
    }

    #[test]
    fn classes_cover_every_small_request_and_nothing_larger() {
        assert_eq!(CLASSES, 9);
        assert_eq!(class_of(&layout(1, 1)), Some(0));
        assert_eq!(class_of(&layout(8, 8)), Some(0));
        assert_eq!(class_of(&layout(9, 1)), Some(1));
        assert_eq!(
            class_of(&layout(4, 64)),
            Some(3),
            "alignment counts as size"
        );
        assert_eq!(class_of(&layout(MAX_SMALL, 1)), Some(CLASSES - 1));
        assert_eq!(class_of(&layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class_of(&layout(8, 4096)), None);
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_keep_their_contents() {
        let mut heap = SizeClasses::new(System, Set::default());
        let mut rng = Lcg(7);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        for round in 0..20_000 {
            if live.len() > 300 || (!live.is_empty() && rng.next().is_multiple_of(3)) {
                let (ptr, layout, fill) = live.swap_remove(rng.next() % live.len());
                // SAFETY: `ptr` is live with `layout` and was filled with `fill`.
                unsafe { assert_filled(ptr, layout.size(), fill) };
                unsafe { heap.dealloc(ptr, layout) };
                continue;
            }
            let size = 1 + rng.next() % 3000;
            // Up to 4 KiB: alignment alone picks the class from 128 B up, and past
            // `MAX_SMALL` sends the block to the backing allocator.
            let align = 1 << (rng.next() % 13);
            let layout = layout(size, align);
            // SAFETY: non-zero size.
            let ptr = unsafe { heap.alloc(layout) };
            assert!(!ptr.is_null());
            assert_eq!(ptr as usize % align, 0, "misaligned for {layout:?}");
            if let Some(class) = class_of(&layout) {
                assert_eq!(ptr as usize % class_size(class), 0, "class {class}");
            }
            let fill = (round % 251) as u8;
            // SAFETY: the block is ours and `size` long.
            unsafe { std::ptr::write_bytes(ptr, fill, size) };
            live.push((ptr, layout, fill));
        }
        for (ptr, layout, fill) in live {
            // SAFETY: as above.
            unsafe { assert_filled(ptr, layout.size(), fill) };
            unsafe { heap.dealloc(ptr, layout) };
        }
    }

    #[test]
    fn blocks_from_the_backing_allocator_go_back_to_it() {
        let mut heap = SizeClasses::new(System, Set::default());
        let l = layout(100, 8);
        // SAFETY: each block is live when used and freed once, by its owner.
        unsafe {
            let own = heap.alloc(l);
            assert!(heap.is_heap_block(own));
            // A buffer the host wrote through `cabi_realloc` (the system allocator).
            let foreign = System.alloc(l);
            std::ptr::write_bytes(foreign, 7, 100);
            assert!(!heap.is_heap_block(foreign));
            let grown = heap.realloc(foreign, l, 200);
            assert!(
                !heap.is_heap_block(grown),
                "stays with the system allocator"
            );
            assert_filled(grown, 100, 7);
            heap.dealloc(grown, layout(200, 8));
            // Not on a free list: the class hands out heap blocks only.
            for _ in 0..64 {
                let block = heap.alloc(layout(200, 8));
                assert!(heap.is_heap_block(block));
            }
            heap.dealloc(own, l);
        }
    }

    #[test]
    fn a_freed_block_is_the_next_one_its_class_hands_out() {
        let mut heap = SizeClasses::new(System, Set::default());
        let l = layout(24, 8);
        // SAFETY: non-zero sizes; each block freed once with its layout.
        unsafe {
            let a = heap.alloc(l);
            let b = heap.alloc(l);
            assert_ne!(a, b);
            heap.dealloc(a, l);
            assert_eq!(heap.alloc(layout(32, 8)), a, "same class (32 B), reused");
            heap.dealloc(b, l);
        }
    }

    #[test]
    fn churn_reuses_memory_instead_of_growing() {
        let mut heap = SizeClasses::new(System, Set::default());
        let mut rng = Lcg(11);
        // 100 MB allocated in total, at most 64 blocks of at most 2 KiB live at once.
        let mut live: Vec<(*mut u8, Layout)> = Vec::new();
        let mut total = 0usize;
        while total < 100_000_000 {
            let l = layout(1 + rng.next() % MAX_SMALL, 1);
            // SAFETY: non-zero size; freed once below with its layout.
            let ptr = unsafe { heap.alloc(l) };
            assert!(!ptr.is_null());
            total += l.size();
            live.push((ptr, l));
            if live.len() == 64 {
                let (ptr, l) = live.swap_remove(rng.next() % 64);
                unsafe { heap.dealloc(ptr, l) };
            }
        }
        // Live data is at most 64 x 2 KiB; with class rounding and per-class reuse
        // the chunks taken stay a small multiple of that.
        assert!(
            heap.chunk_bytes() <= 64 * 64 * 1024,
            "took {} bytes of chunks for under 128 KiB live",
            heap.chunk_bytes()
        );
        for (ptr, l) in live {
            unsafe { heap.dealloc(ptr, l) };
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_to_and_from_large() {
        let mut heap = SizeClasses::new(System, Set::default());
        // SAFETY: every block is live when read, and freed once with its layout.
        unsafe {
            let l = layout(10, 1);
            let p = heap.alloc(l);
            std::ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10);
            let same = heap.realloc(p, l, 16);
            assert_eq!(same, p, "same class: in place");
            let bigger = heap.realloc(same, layout(16, 1), 1000);
            assert_eq!(std::slice::from_raw_parts(bigger, 10), b"0123456789");
            let large = heap.realloc(bigger, layout(1000, 1), 100_000);
            assert_eq!(std::slice::from_raw_parts(large, 10), b"0123456789");
            let large2 = heap.realloc(large, layout(100_000, 1), 200_000);
            assert_eq!(std::slice::from_raw_parts(large2, 10), b"0123456789");
            let small = heap.realloc(large2, layout(200_000, 1), 10);
            assert_eq!(std::slice::from_raw_parts(small, 10), b"0123456789");
            heap.dealloc(small, layout(10, 1));
        }
    }

    #[test]
    fn a_failing_backing_allocator_gives_null_not_a_block() {
        struct Empty;
        // SAFETY: never hands out memory.
        unsafe impl GlobalAlloc for Empty {
            unsafe fn alloc(&self, _: Layout) -> *mut u8 {
                std::ptr::null_mut()
            }
            unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
        }
        let mut heap = SizeClasses::new(Empty, Set::default());
        // SAFETY: non-zero sizes.
        unsafe {
            assert!(heap.alloc(layout(16, 8)).is_null());
            assert!(heap.alloc(layout(1 << 20, 8)).is_null());
        }
        assert_eq!(heap.chunk_bytes(), 0);
    }
}
