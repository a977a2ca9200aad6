//! Thread control: run kernels on a thread pool the caller chooses.
//!
//! Every parallel kernel of the crate uses [rayon], and rayon runs parallel work on the pool
//! of the thread that calls it. So a caller controls the threads of **any** kernel call, per
//! call, without global state, by running it inside [`rayon::ThreadPool::install`]:
//!
//! ```
//! use cnn_kernels::{conv::{naive, Conv2dParams}, threads, TensorView};
//!
//! let x = vec![1.0f32; 2 * 3 * 8 * 8];
//! let w = vec![0.5f32; 4 * 3 * 3 * 3];
//! let (xv, wv) = (TensorView::new([2, 3, 8, 8], &x)?, TensorView::new([4, 3, 3, 3], &w)?);
//! let p = Conv2dParams::default().padding([1, 1]);
//!
//! // Build a pool once and reuse it for many calls (the cheap way).
//! let pool = threads::pool(3)?;
//! let out = pool.install(|| naive::forward(xv, wv, None, &p))?;
//!
//! // Or one-off: build, run, tear down.
//! let again = threads::with_threads(2, || naive::forward(xv, wv, None, &p))??;
//! let serial = threads::single_threaded(|| naive::forward(xv, wv, None, &p))??;
//! assert_eq!(out, again);
//! assert_eq!(out, serial);
//! # Ok::<(), cnn_kernels::Error>(())
//! ```
//!
//! The results do not depend on the pool: every kernel splits its work and merges partial
//! sums in an order fixed by the problem's shape, never by `rayon::current_num_threads()`
//! or by which thread finishes first, so outputs are bitwise identical for any number of
//! threads.
//!
//! ## Cost
//!
//! [`with_threads`] and [`single_threaded`] build a fresh [`ThreadPool`] on every call and
//! drop it afterwards: that spawns `n` OS threads (even for `n = 1` the closure runs on
//! the pool's worker, not on the calling thread), which exit on their own once the pool is
//! dropped. On the development machine (2 loaded cores) a call cost 15–25 µs at best and
//! about 100 µs on average, against 2–4 µs for `install` into an existing pool:
//! negligible beside a convolution, not beside a tiny kernel in a hot loop. For repeated
//! calls, build the pool once with [`pool`] (or `rayon::ThreadPoolBuilder`) and call
//! `pool.install(..)` each time.
//!
//! ## Calling from outside a pool
//!
//! A kernel called from a thread that is not in a rayon pool (a program's main thread,
//! using the global pool) hands each parallel step to the pool's threads and sleeps until
//! they are done. Waking threads is cheap on most machines, not on all: on the 2-core
//! virtual machine the crate is developed on, a max-pool forward over `x(100, 3, 32, 32)`
//! into a caller buffer took 26 µs inside a two-thread pool and 31–35 µs called from the
//! main thread. For a loop of small kernels, run the whole loop inside `pool.install(...)`:
//! the kernels then start on a pool thread with no hand-off. (The convolutions also let
//! the calling thread work on their first tasks while the pool's threads wake.) For short
//! kernels on few cores, [`pinned_pool`] also keeps the scheduler from stacking two workers
//! on one core.
//!
//! When the pool has one thread (`RAYON_NUM_THREADS=1`, [`single_threaded`], `pool(1)`),
//! the kernels make no rayon call at all: they run on the calling thread, whichever it is.
//! Called from the main thread with `RAYON_NUM_THREADS=1`, that max-pool forward took
//! 145 µs per call when it still handed its one parallel step to the pool's one thread, and
//! takes 41 µs now (as inside the pool); a spatial batch norm over `(8, 256, 14, 14)`, 227 →
//! 149 µs forward and 297 → 198 µs backward.
//!
//! (Rayon's `ThreadPoolBuilder::use_current_thread` would avoid the extra thread, but it
//! permanently registers the calling thread with a pool that is then leaked, so a second
//! call from the same thread would fail; this module does not use it.)

use crate::error::{Error, Result};

pub use rayon::ThreadPool;

const OP: &str = "thread_pool";

/// Builds a rayon [`ThreadPool`] of exactly `num_threads` worker threads.
///
/// Install kernel calls into it with `pool.install(|| ...)`; reuse it across calls to pay
/// the thread start-up once.
///
/// # Errors
///
/// [`Error::InvalidParameter`] if `num_threads` is 0 (rayon would read 0 as "pick a
/// default", which is not what a caller asking for a count means), or if the operating
/// system refuses to start the threads (the message carries rayon's error).
pub fn pool(num_threads: usize) -> Result<ThreadPool> {
    build(num_threads, |_| {})
}

/// A pool of `num_threads` named workers, each running `start(i)` when it starts; the
/// errors of [`pool`].
fn build(num_threads: usize, start: impl Fn(usize) + Send + Sync + 'static) -> Result<ThreadPool> {
    if num_threads == 0 {
        return Err(Error::param(OP, "num_threads must be at least 1, got 0"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .thread_name(|i| format!("cnn-kernels-{i}"))
        .start_handler(start)
        .build()
        .map_err(|e| {
            Error::param(
                OP,
                format!("could not build a pool of {num_threads} threads: {e}"),
            )
        })
}

/// Builds a pool like [`pool`] whose worker `i` is pinned to one CPU: the `i`-th (modulo
/// their count) of the CPUs the calling thread may run on, so the operating system cannot
/// put two workers on one core. On systems other than Linux, or if the CPUs cannot be read,
/// the workers are not pinned (a failed pinning is not an error: it changes only speed).
///
/// Pinning pays where the kernels are short and the scheduler places a waking worker next to
/// the thread that woke it: on the 2-core development VM, cs231n_net's forward at `N = 1`
/// (79–82 µs on one thread; the median of 400 calls, six fresh pools each way) took
/// 44.5–59.6 µs on two pinned threads every time, and on two unpinned threads 44.5 µs once
/// and 79.7–83.6 µs five times (both workers on one core). Pinning hurts where other
/// processes hold those CPUs; then use [`pool`].
///
/// # Errors
///
/// As [`pool`].
///
/// ```
/// let pool = cnn_kernels::threads::pinned_pool(2)?;
/// assert_eq!(pool.install(rayon::current_num_threads), 2);
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn pinned_pool(num_threads: usize) -> Result<ThreadPool> {
    let cpus = affinity::allowed_cpus();
    build(num_threads, move |i| {
        if !cpus.is_empty() {
            affinity::pin_current_thread(cpus[i % cpus.len()]);
        }
    })
}

/// CPU affinity of threads (Linux); elsewhere, no CPUs and no pinning.
mod affinity {
    /// The CPUs the calling thread may run on, in increasing order (empty if unknown).
    #[cfg(all(target_os = "linux", not(miri)))]
    pub(super) fn allowed_cpus() -> Vec<usize> {
        // SAFETY: `cpu_set_t` is plain bits, valid when zeroed; `sched_getaffinity` writes at
        // most `size_of::<cpu_set_t>()` bytes into it, and `CPU_ISSET` reads it in bounds
        // (`CPU_SETSIZE` is its capacity in bits).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    /// Restricts the calling thread to `cpu` (ignoring a refusal: pinning is a hint).
    #[cfg(all(target_os = "linux", not(miri)))]
    pub(super) fn pin_current_thread(cpu: usize) {
        // SAFETY: as above; `CPU_SET` writes bit `cpu` < `CPU_SETSIZE` (it came from
        // `allowed_cpus`), and `sched_setaffinity` only reads the set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    #[cfg(not(all(target_os = "linux", not(miri))))]
    pub(super) fn allowed_cpus() -> Vec<usize> {
        Vec::new()
    }

    #[cfg(not(all(target_os = "linux", not(miri))))]
    pub(super) fn pin_current_thread(_cpu: usize) {}
}

/// Runs `f` on a fresh pool of `num_threads` threads and returns its result.
///
/// Inside `f`, every rayon operation — so every kernel of this crate — runs on that pool,
/// and `rayon::current_num_threads()` is `num_threads`. The pool is built for this call and
/// dropped after it (see the [module docs](self) for the cost; prefer [`pool`] in loops).
/// A panic in `f` propagates to the caller.
///
/// # Errors
///
/// As [`pool`]: `num_threads == 0` or the threads could not be started. Errors of `f`
/// itself are returned inside the `Ok`, hence the `??` in the example.
///
/// ```
/// let n = cnn_kernels::threads::with_threads(3, rayon::current_num_threads)?;
/// assert_eq!(n, 3);
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn with_threads<R, F>(num_threads: usize, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    Ok(pool(num_threads)?.install(f))
}

/// Runs `f` with every kernel single-threaded: [`with_threads`]`(1, f)`.
///
/// Costs one thread start per call (the closure runs on the pool's one worker thread);
/// for many calls build `pool(1)` once instead.
///
/// # Errors
///
/// If the worker thread could not be started.
///
/// ```
/// let n = cnn_kernels::threads::single_threaded(rayon::current_num_threads)?;
/// assert_eq!(n, 1);
/// # Ok::<(), cnn_kernels::Error>(())
/// ```
pub fn single_threaded<R, F>(f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    with_threads(1, f)
}

/// Whether the current rayon pool has one thread. The kernels then make no rayon call at
/// all: splitting work buys nothing on one thread, and from outside the pool every
/// parallel step would be a hand-off to it (see
/// [Calling from outside a pool](self#calling-from-outside-a-pool)).
pub(crate) fn single() -> bool {
    rayon::current_num_threads() == 1
}

/// `min` for `with_min_len` on a parallel iterator, or `usize::MAX` on one thread: an
/// iterator that never splits runs on the calling thread without touching the pool.
pub(crate) fn min_len(min: usize) -> usize {
    if single() {
        usize::MAX
    } else {
        min
    }
}

/// `rayon::join(a, b)`, or `(a(), b())` on the calling thread on one thread (the same order
/// rayon uses when nothing steals `b`).
pub(crate) fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    join_if(true, a, b)
}

/// [`join`] if `parallel`, else `(a(), b())` on the calling thread: for work too small to
/// pay for waking a second thread.
pub(crate) fn join_if<A, B, RA, RB>(parallel: bool, a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    if !parallel || single() {
        (a(), b())
    } else {
        rayon::join(a, b)
    }
}
