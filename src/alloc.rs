//! The process allocator (the binary's, outside the library's
//! `forbid(unsafe_code)`): mimalloc, for our code and (its `override`
//! feature) for librdkafka's and zstd's C code linked into the binary.
//!
//! NOTE: glibc malloc/free was ~17% of the Kafka drain's CPU, most of it
//! librdkafka's per-message allocations freed on another thread. mimalloc
//! v3 as it comes held 160–190 MB during a W3 drain (eager arena commits,
//! purging freed pages a second late, transparent huge pages); `tune` brings it back
//! under the 64 MB budget.

use std::ffi::{c_int, c_long};

// Options of mimalloc v3.3 (`mi_option_e` in `mimalloc.h`);
// tests/allocator.rs reads them back by name from mimalloc's own report.
const ARENA_EAGER_COMMIT: c_int = 4;
const PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

/// Runs `tune` from the ELF initialisers, before the first allocation:
/// mimalloc reserves its first arena (1 GiB of address space, where all of
/// our memory lives) on the first malloc and reads the commit option then,
/// so setting it from `main` is too late (measured: 115 MB, not 58 MB).
/// Priority 101 runs before the unprioritised initialisers, mimalloc's own
/// among them.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00101"]
static TUNE_BEFORE_THE_FIRST_ALLOCATION: extern "C" fn() = tune;

/// Commits arena memory on demand and returns freed pages at once, unless
/// the operator set the option in the environment (`MIMALLOC_*`). Reads
/// the environment with `getenv`: nothing may allocate here.
extern "C" fn tune() {
    for (option, env, value) in [
        (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 0),
    ] {
        // SAFETY: `env` is a NUL-terminated literal; `mi_option_set` writes
        // one entry of mimalloc's option table and allocates nothing.
        unsafe {
            if libc::getenv(env.as_ptr()).is_null() {
                mi_option_set(option, value);
            }
        }
    }
}
