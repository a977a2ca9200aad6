//! Parallel execution: lanes that claim runs of tasks, each lane with its own slot of the
//! workspace, and a shared output that tasks write disjoint regions of.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::gemm::{gemm_ptr, MatRef};
use crate::alloc::Out;
use crate::Float;

/// Runs `task(t, slot)` once for every `t` in `0..ntasks` on at most `lanes` concurrent
/// lanes; lane `l` passes `ws[l·slot_len ..][..slot_len]` to every task it runs. Which lane
/// runs a task never changes what the task computes (the slot is scratch).
///
/// Scheduling: lanes claim runs of consecutive tasks from a shared counter, each run
/// `1/(2·lanes)` of the tasks left (guided self-scheduling), so the load balances itself
/// with few claims, and each lane walks neighbouring memory. The calling thread runs lane 0
/// itself while the pool picks up the others (`rayon::in_place_scope`): called from outside
/// the pool, it works instead of sleeping until a worker wakes. When it runs out of tasks it
/// spins (briefly, see [`wait_spinning`]) until the lanes that started on the pool finish,
/// rather than waiting inside rayon, whose sleeping threads are slow to wake.
///
/// Measured (f32, 2-core AVX-512 VM): depthwise_56 forward at two threads (1,024 tasks) took
/// 1.11–1.24 ms claiming one task at a time, 1.01–1.15 ms with runs; cs231n_net at `N = 1`
/// (8 tasks) called from the main thread into a 2-thread global pool took 94–127 µs
/// forward with every lane on the pool, 60–83 µs with the caller running lane 0.
///
/// Panics if `ws` is shorter than `lanes · slot_len` (an internal bug: plans size it).
pub(crate) fn run_lanes<T, F>(ws: &mut [T], slot_len: usize, lanes: usize, ntasks: usize, task: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    let lanes = lanes.min(ntasks);
    if lanes == 0 {
        return;
    }
    let next = AtomicUsize::new(0);
    // Lanes of the pool that are running (lane 0, the caller's, is not counted).
    let running = AtomicUsize::new(0);
    let lane = |slot: &mut [T]| {
        let mut cur = next.load(Ordering::Relaxed);
        while cur < ntasks {
            let run = ((ntasks - cur) / (2 * lanes)).max(1);
            match next.compare_exchange_weak(cur, cur + run, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    for t in cur..cur + run {
                        task(t, slot);
                    }
                    cur = next.load(Ordering::Relaxed);
                }
                Err(now) => cur = now,
            }
        }
    };
    let (first, rest) = ws[..lanes * slot_len].split_at_mut(slot_len);
    if lanes == 1 {
        lane(first);
        return;
    }
    let pool_lane = |slot: &mut [T]| {
        running.fetch_add(1, Ordering::Relaxed);
        let _done = Decrement(&running);
        lane(slot);
    };
    rayon::in_place_scope(|s| {
        let pool_lane = &pool_lane;
        if slot_len == 0 {
            for _ in 1..lanes {
                s.spawn(move |_| pool_lane(&mut []));
            }
        } else {
            for slot in rest.chunks_mut(slot_len) {
                s.spawn(move |_| pool_lane(slot));
            }
        }
        lane(first);
        wait_spinning(&running);
    });
}

/// Decrements the counter when dropped (also when a task panics, so that no one spins on a
/// lane that has ended).
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Longest spin of [`wait_spinning`].
const SPIN_LIMIT: std::time::Duration = std::time::Duration::from_micros(500);

/// Waits, spinning for at most [`SPIN_LIMIT`], until `running` is zero: the calling lane has
/// run out of tasks while lanes on the pool still finish theirs. A thread that waits for
/// them inside rayon soon sleeps, and waking it takes tens of µs on a virtual machine: the
/// forward of x(1,256,14,14) w(256,256,3,3) at two threads spent 29 µs per call between
/// its last block's end and the return. Lanes not yet started are not waited for here
/// (the scope runs them, and they find no tasks left).
fn wait_spinning(running: &AtomicUsize) {
    if running.load(Ordering::Acquire) == 0 {
        return;
    }
    let start = std::time::Instant::now();
    while running.load(Ordering::Acquire) != 0 {
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN_LIMIT {
            return;
        }
    }
}

/// Runs `task(t)` once for every `t` in `0..ntasks` on up to `lanes` lanes
/// ([`run_lanes`] without workspace slots).
pub(crate) fn run_tasks<F>(lanes: usize, ntasks: usize, task: F)
where
    F: Fn(usize) + Sync,
{
    run_lanes::<u8, _>(&mut [], 0, lanes, ntasks, |t, _| task(t));
}

/// A mutable buffer that several tasks write at once, each into its own region (rows of
/// filters × a tile of pixels, a block of channels, …). Regions are strided, so they cannot
/// be split off as `&mut` slices up front; the callers' partition keeps them disjoint.
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedMut is an exclusive borrow of its buffer; it hands out access only through
// `unsafe` methods whose callers guarantee that concurrent accesses touch disjoint elements,
// so sharing it between threads is as sound as sending the disjoint `&mut` pieces (T: Send).
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: see above.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T: Float> SharedMut<'a, T> {
    pub(crate) fn new(data: &'a mut [T]) -> Self {
        SharedMut {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: PhantomData,
        }
    }

    /// A buffer of output slots, which may start uninitialised: only [`Self::slice_out`] and
    /// [`Self::gemm`] with `β = 0` may touch an element before it has been written.
    pub(crate) fn new_out(data: &'a mut [Out<T>]) -> Self {
        SharedMut {
            ptr: data.as_mut_ptr().cast::<T>(),
            len: data.len(),
            _borrow: PhantomData,
        }
    }

    /// `buf[start .. start + len]`; panics if it is out of bounds.
    ///
    /// # Safety
    /// While the returned slice lives, no other task may access any of its elements, and
    /// they are initialised (always so in a buffer made by [`Self::new`]; in one made by
    /// [`Self::new_out`], once written).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start <= self.len && len <= self.len - start);
        // SAFETY: in bounds of the borrowed buffer (checked); exclusivity and
        // initialisation are the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// `buf[start .. start + len]` as write-only slots (initialised or not); panics if it
    /// is out of bounds.
    ///
    /// # Safety
    /// While the returned slice lives, no other task may access any of its elements; only
    /// initialised values may be stored through it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_out(&self, start: usize, len: usize) -> &mut [Out<T>] {
        assert!(start <= self.len && len <= self.len - start);
        // SAFETY: in bounds of the borrowed buffer (checked), whose elements are valid
        // `Out<T>` slots whatever their state; exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start).cast::<Out<T>>(), len) }
    }

    /// `C ← A·B + β·C` where `C` is the `m × n` matrix at `buf[off ..]` with strides
    /// `rsc`, `csc`; panics if it reaches past the buffer.
    ///
    /// # Safety
    /// During the call no other task may access the elements of that `C`; with `β ≠ 0` they
    /// must be initialised (with `β = 0` they are only written).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn gemm(
        &self,
        off: usize,
        rsc: usize,
        csc: usize,
        m: usize,
        k: usize,
        n: usize,
        a: MatRef<'_, T>,
        b: MatRef<'_, T>,
        beta: T,
    ) {
        assert!(off <= self.len);
        // SAFETY: `off` is in bounds, gemm_ptr checks `C` against the rest of the buffer, and
        // the caller guarantees exclusive access to `C`'s elements.
        unsafe {
            gemm_ptr(
                m,
                k,
                n,
                a,
                b,
                beta,
                self.ptr.add(off),
                self.len - off,
                rsc,
                csc,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn every_task_runs_once_with_its_lanes_slot() {
        for threads in [1, 2, 3, 8] {
            let pool = pool(threads);
            for ntasks in [0, 1, 2, 7, 100] {
                let runs: Vec<AtomicUsize> = (0..ntasks).map(|_| AtomicUsize::new(0)).collect();
                pool.install(|| {
                    run_tasks(threads, ntasks, |t| {
                        runs[t].fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert!(runs.iter().all(|r| r.swap(0, Ordering::Relaxed) == 1));

                // Each lane counts its tasks in its own slot: the counts add up to the tasks.
                let mut ws = vec![0usize; threads * 3 + 5];
                pool.install(|| {
                    run_lanes(&mut ws, 3, threads, ntasks, |t, slot: &mut [usize]| {
                        assert_eq!(slot.len(), 3);
                        slot[0] += 1;
                        runs[t].fetch_add(1, Ordering::Relaxed);
                    })
                });
                assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
                let counted: usize = ws.chunks(3).take(threads).map(|s| s[0]).sum();
                assert_eq!(counted, ntasks);
                assert!(
                    ws[threads * 3..].iter().all(|&v| v == 0),
                    "outside the slots"
                );
            }
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_nothing_hangs() {
        for threads in [1, 2, 3] {
            let pool = pool(threads);
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.install(|| {
                    run_tasks(threads, 40, |t| {
                        assert!(t != 17, "task 17 fails");
                    })
                })
            }));
            assert!(r.is_err());
        }
    }
}
