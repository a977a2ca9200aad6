//! Thread control: kernels run on the caller's rayon pool and give bitwise identical results
//! for any number of threads.
//!
//! No test in this file may call a kernel outside an explicit pool: one test blocks the
//! global pool's only worker to prove that kernel work never goes there (and that kernels
//! called outside any pool while the pool has one thread never touch it).

use std::sync::mpsc;
use std::time::Duration;

use cnn_kernels::conv::{self, Conv2dParams};
use cnn_kernels::norm::{self, BatchNormParams, GroupNormParams};
use cnn_kernels::pool::{self, MaxPool2dParams};
use cnn_kernels::{threads, Error, TensorView};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

const X: [usize; 4] = [8, 16, 20, 20];

/// Defines `$fname`: every layer forward and backward on the given kernel modules, returning
/// every output (outputs, gradients, caches, updated running statistics), flattened.
macro_rules! suite {
    ($fname:ident, $conv:path, $pool:path, $norm:path) => {
        fn $fname() -> Vec<Vec<f32>> {
            use $conv as kc;
            use $norm as kn;
            use $pool as kp;
            let xs = data(X.iter().product(), 1);
            let x = TensorView::new(X, &xs).unwrap();
            let ws = data(24 * 16 * 9, 2);
            let w = TensorView::new([24, 16, 3, 3], &ws).unwrap();
            let b = data(24, 3);
            let cp = Conv2dParams::default().padding([1, 1]);
            let mut outs = Vec::new();

            let y = kc::forward(x, w, Some(&b), &cp).unwrap();
            let dy = data(y.data().len(), 4);
            let g = kc::backward(TensorView::new(y.shape(), &dy).unwrap(), x, w, &cp).unwrap();
            outs.extend([y.into_vec(), g.dx.into_vec(), g.dw.into_vec(), g.db]);

            let pp = MaxPool2dParams::new([3, 3]).stride([2, 2]).padding([1, 1]);
            let y = kp::forward(x, &pp).unwrap();
            let dy = data(y.data().len(), 5);
            let dx = kp::backward(TensorView::new(y.shape(), &dy).unwrap(), x, &pp).unwrap();
            outs.extend([y.into_vec(), dx.into_vec()]);

            let (gamma, beta) = (data(16, 6), data(16, 7));
            let (mut rm, mut rv) = (vec![0.0f32; 16], vec![1.0f32; 16]);
            let bp = BatchNormParams::default();
            let (y, cache) =
                kn::spatial_batch_norm_forward(x, &gamma, &beta, &mut rm, &mut rv, &bp).unwrap();
            let dy = data(y.data().len(), 8);
            let dyv = TensorView::new(X, &dy).unwrap();
            let g = kn::spatial_batch_norm_backward(dyv, x, &gamma, &cache).unwrap();
            outs.extend([y.into_vec(), g.dx.into_vec(), g.dgamma, g.dbeta]);
            outs.extend([cache.mean, cache.inv_std, rm, rv]);

            let x2 = TensorView::new([X[0] * X[1], X[2] * X[3]], &xs).unwrap();
            let (gamma2, beta2) = (data(400, 9), data(400, 10));
            let (mut rm, mut rv) = (vec![0.0f32; 400], vec![1.0f32; 400]);
            let (y, cache) =
                kn::batch_norm_forward(x2, &gamma2, &beta2, &mut rm, &mut rv, &bp).unwrap();
            let dyv = TensorView::new(x2.shape(), &dy).unwrap();
            let g = kn::batch_norm_backward(dyv, x2, &gamma2, &cache).unwrap();
            outs.extend([y.into_vec(), g.dx.into_vec(), g.dgamma, g.dbeta, rm, rv]);

            let gp = GroupNormParams::new(4);
            let (y, cache) = kn::group_norm_forward(x, &gamma, &beta, &gp).unwrap();
            let dyv = TensorView::new(X, &dy).unwrap();
            let g = kn::group_norm_backward(dyv, x, &gamma, &cache).unwrap();
            outs.extend([y.into_vec(), g.dx.into_vec(), g.dgamma, g.dbeta]);
            outs
        }
    };
}

suite!(naive_suite, conv::naive, pool::naive, norm::naive);
suite!(fast_suite, conv, pool, norm);

/// A named function running a set of kernels and returning their outputs.
type Suite = (&'static str, fn() -> Vec<Vec<f32>>);

/// Every suite of kernels this file checks.
fn suites() -> Vec<Suite> {
    vec![("fast", fast_suite), ("naive", naive_suite)]
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|o| o.iter().map(|f| f.to_bits()).collect())
        .collect()
}

#[test]
fn results_are_bitwise_equal_across_pools_of_1_and_3_threads() {
    let one = threads::pool(1).unwrap();
    let three = threads::pool(3).unwrap();
    for (name, suite) in suites() {
        let a = one.install(suite);
        let b = three.install(suite);
        let c = threads::with_threads(2, suite).unwrap();
        let d = threads::single_threaded(suite).unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(bits(&a), bits(&b), "{name}: 1 vs 3 threads");
        assert_eq!(bits(&a), bits(&c), "{name}: 1 vs 2 threads");
        assert_eq!(bits(&a), bits(&d), "{name}: pool(1) vs single_threaded");
    }
}

#[test]
fn install_and_helpers_run_on_the_callers_pool() {
    let three = threads::pool(3).unwrap();
    assert_eq!(three.current_num_threads(), 3);
    // Inside install, rayon (and so every kernel) sees the caller's pool.
    let (n, idx) = three.install(|| (rayon::current_num_threads(), rayon::current_thread_index()));
    assert_eq!(n, 3);
    assert!(idx.is_some_and(|i| i < 3));
    assert_eq!(threads::with_threads(5, rayon::current_num_threads), Ok(5));
    assert_eq!(threads::single_threaded(rayon::current_num_threads), Ok(1));
    // Closures may borrow and return the kernels' own Result.
    let x = vec![1.0f32; 16];
    let r = threads::single_threaded(|| {
        pool::naive::forward(
            TensorView::new([1, 1, 4, 4], &x)?,
            &MaxPool2dParams::default(),
        )
    });
    assert_eq!(r.unwrap().unwrap().data(), &[1.0; 4]);
}

#[test]
fn pinned_pools_give_the_same_bits_with_one_cpu_per_worker() {
    let one = threads::pool(1).unwrap();
    let pinned = threads::pinned_pool(3).unwrap();
    assert_eq!(pinned.install(rayon::current_num_threads), 3);
    for (name, suite) in suites() {
        assert_eq!(
            bits(&one.install(suite)),
            bits(&pinned.install(suite)),
            "{name}: pool(1) vs pinned_pool(3)"
        );
    }
    // On Linux every worker may run on exactly one CPU (if the process may run on any).
    #[cfg(target_os = "linux")]
    {
        fn cpus_of_this_thread() -> usize {
            // SAFETY: `cpu_set_t` is plain bits, valid zeroed; the call writes at most its size.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                    0
                );
                libc::CPU_COUNT(&set) as usize
            }
        }
        if cpus_of_this_thread() > 0 {
            let counts: Vec<usize> = (0..3)
                .map(|_| pinned.install(cpus_of_this_thread))
                .collect();
            assert_eq!(counts, [1, 1, 1]);
        }
    }
    assert!(threads::pinned_pool(0).is_err());
}

#[test]
fn zero_threads_is_an_error_naming_the_value() {
    let e = threads::pool(0).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { .. }));
    assert_eq!(e.op(), "thread_pool");
    assert!(e.to_string().contains("got 0"), "{e}");
    assert!(threads::with_threads(0, || ()).is_err());
}

/// Blocks the global pool's only worker, then runs every kernel inside a caller's pool: if
/// any kernel sent work to the global pool it would wait forever, and the watchdog fails
/// the test. So the kernels' rayon work ran on the caller's pool.
#[test]
fn kernels_never_touch_the_global_pool() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("no test in this file may use the global pool before this one");
    let (release, blocked) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    rayon::spawn(move || {
        started_tx.send(()).unwrap();
        let _ = blocked.recv();
    });
    started.recv().unwrap();

    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let pool = threads::pool(3).unwrap();
        for (name, suite) in suites() {
            let out = pool.install(suite);
            done_tx.send((name, out.len())).unwrap();
        }
        // Outside any pool, with the global pool's one thread blocked: kernels on a
        // one-thread pool make no rayon call, so they run here and finish.
        for (name, suite) in suites() {
            let out = suite();
            done_tx.send((name, out.len())).unwrap();
        }
    });
    for (name, _) in suites().iter().chain(&suites()) {
        let got = done.recv_timeout(Duration::from_secs(120));
        assert!(
            got.is_ok(),
            "{name}: kernels did not finish; did they wait on the global pool?"
        );
    }
    release.send(()).unwrap();
}
