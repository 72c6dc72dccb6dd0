//! A global allocator that aborts on any single allocation over [`LIMIT`].
//!
//! Without a sanitizer (`-s none`, what stable Rust allows) libFuzzer cannot see
//! allocations, and an untouched multi-gigabyte `Vec::with_capacity` does not even raise
//! the RSS. Parsers of repository bytes must never allocate what their input cannot
//! justify, so every target installs this and an over-allocation is a crash.

use std::alloc::{GlobalAlloc, Layout, System};

/// Far above anything a fuzz input (a few KiB) justifies, far below a claimed 4 GiB.
const LIMIT: usize = 64 << 20;

pub struct Limited;

unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

fn check(size: usize) {
    if size > LIMIT {
        // Stderr is unbuffered, so this message allocates nothing; abort so libFuzzer
        // records the input as a crash.
        use std::io::Write;
        let _ = std::io::stderr()
            .write_all(b"fuzz: one allocation over the limit (over-allocation on bad input)\n");
        std::process::abort();
    }
}

#[global_allocator]
static GLOBAL: Limited = Limited;
