//! The process allocator: mimalloc, for our code and (the crate's `override`
//! feature) for the C code linked into the binary, librdkafka and zstd among
//! it. The executable exports `malloc` and `free`, so libc and the shared
//! libraries (libcrypto, libssl) use it too: nothing is freed by an
//! allocator that did not allocate it. It lives in the binary, outside the
//! library's `forbid(unsafe_code)`.
//!
//! NOTE: glibc malloc/free was ~30% of the Kafka drain's CPU in the first
//! profile of issue 12 and still ~17% after the second pass (librdkafka's
//! per-message allocations, freed on its delivery-report thread). mimalloc
//! v3 as it comes held 160–190 MB during a W3 drain: it commits a whole
//! arena up front and returns freed pages a second late. With the defaults
//! below a drain peaked at 54.5–64.5 MB over 15 runs (README, issue 12
//! third pass). They are set on Linux only; elsewhere mimalloc runs as it
//! comes.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(target_os = "linux")]
mod defaults {
    use std::ffi::{c_int, c_long};

    // Options of mimalloc v3.3 (`mi_option_e` in `mimalloc.h`);
    // tests/allocator.rs reads them back by name from mimalloc's report.
    const ARENA_EAGER_COMMIT: c_int = 4;
    const PURGE_DELAY: c_int = 15;
    const ALLOW_THP: c_int = 43;

    extern "C" {
        fn mi_option_set_default(option: c_int, value: c_long);
    }

    /// Runs `set` from the ELF initialisers, before mimalloc initialises
    /// (it reads its `MIMALLOC_*` environment then, over these defaults,
    /// and decides on transparent huge pages) and before the first
    /// allocation reserves its first arena (1 GiB of address space, where
    /// all of our memory lives) and reads the commit option. Set from
    /// `main` they came too late: 115 MB, not 58 MB. Priority 101 runs
    /// before the unprioritised initialisers, mimalloc's own among them as
    /// gcc builds it. NOTE: a preloaded library whose initialiser allocates
    /// would start mimalloc first; the commit and purge options would still
    /// be ours (mimalloc reads none while it is starting), but huge pages
    /// would stay allowed, which tests/allocator.rs cannot see.
    #[used]
    #[link_section = ".init_array.00101"]
    static SET_BEFORE_THE_FIRST_ALLOCATION: extern "C" fn() = set;

    /// Arena memory committed on demand, freed pages returned at once, no
    /// transparent huge pages (on a host whose policy is `always`, a 2 MiB
    /// page would back memory committed a page at a time). mimalloc turns
    /// them off with `prctl(PR_SET_THP_DISABLE)`: for the whole process and
    /// the processes it starts (`bench`'s servers among them).
    extern "C" fn set() {
        for (option, value) in [(ARENA_EAGER_COMMIT, 0), (PURGE_DELAY, 0), (ALLOW_THP, 0)] {
            // SAFETY: writes one entry of mimalloc's option table unless
            // the environment or `mi_option_set` already set it; allocates
            // nothing.
            unsafe { mi_option_set_default(option, value) };
        }
    }
}
