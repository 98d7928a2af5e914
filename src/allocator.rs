//! The memory allocator of the broker programs.
//!
//! On Linux they run on jemalloc, set to give freed pages back to the OS about a second after a
//! burst, from its own background threads so an idle broker shrinks too. glibc's malloc kept
//! what a burst had freed: after an 8 s QoS 0 flood the broker stayed at 170–180 MB with 9 MB in
//! use, where it now falls back to its idle size. jemalloc is also faster at what a flood does
//! most, freeing on one shard what another allocated. The measurements, with mimalloc and
//! glibc with `malloc_trim`, are in `benches/RESULTS.md` ("Memory").
//!
//! Elsewhere (Windows, macOS) the system allocator stays. Only the programs install it, with
//! [`global_allocator!`](crate::global_allocator): the tests and the load generator that link
//! this library keep the system allocator.

#[cfg(target_os = "linux")]
pub use tikv_jemallocator::Jemalloc;

/// Installs the broker's allocator; invoke it once, at the top of a program's `main.rs`.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(target_os = "linux")]
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// jemalloc's compile-time options (its `malloc_conf`, a pointer to a C string), read at
        /// the first allocation; `_RJEM_MALLOC_CONF` in the environment overrides them. Dirty
        /// pages are purged within a second and straight away (`muzzy_decay_ms:0`: lazily freed
        /// pages would still count as resident).
        #[cfg(target_os = "linux")]
        #[export_name = "_rjem_malloc_conf"]
        static MALLOC_CONF: &u8 =
            &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];
    };
}

/// Bytes the program has allocated and not freed, by jemalloc's count (`$SYS/broker/heap/current`).
/// `None` where the system allocator serves.
pub fn allocated_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // jemalloc refreshes its statistics when the epoch advances.
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        tikv_jemalloc_ctl::stats::allocated::read()
            .ok()
            .map(|bytes| bytes as u64)
    }
    #[cfg(not(target_os = "linux"))]
    None
}
