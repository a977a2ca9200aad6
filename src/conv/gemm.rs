//! The convolution's one GEMM interface: `C ← A·B + β·C` with arbitrary row and column
//! strides, backed by `matrixmultiply`'s single-threaded `sgemm`/`dgemm` (its `threading`
//! feature stays off: the parallelism lives in the callers' rayon tasks) — except `f32`
//! products with unit column strides and `β` of 0 or 1 at the AVX-512 SIMD level, which run
//! the crate's own kernel ([`super::gemm_avx512`]: the forward pass, and so the stride-1
//! `dx`) —, or with the `gemm-crate` cargo feature by the `gemm` crate (`Parallelism::None`,
//! its AVX-512 kernels enabled by its `x86-v4` feature and picked at run time).
//!
//! For a given `k`, `matrixmultiply` computes each element of `C` the same way wherever it
//! sits in the matrix (the `k` loop is blocked identically; edge tiles run the same
//! micro-kernel into a buffer), and the callers fix every shape from the geometry alone, so
//! results never depend on the thread count. The `gemm` crate likewise picks its blocking and
//! kernels from the shape, strides and CPU alone, single-threaded. `matrixmultiply` allocates
//! its packing buffers on each call (`gemm` keeps thread-local ones); that is the one
//! allocation inside the `_into` kernels.

#[cfg(not(feature = "gemm-crate"))]
use std::any::TypeId;

use crate::Float;

/// The GEMM behind the lowered and 1×1 paths for element type `dtype` at the active SIMD
/// level, in words (for reports and benchmarks).
pub fn gemm_backend(dtype: crate::DType) -> &'static str {
    if cfg!(feature = "gemm-crate") {
        "gemm crate"
    } else if dtype == crate::DType::F32 && own_f32_kernel() {
        "own AVX-512 kernel (forward, stride-1 dx), matrixmultiply (dw, other dx)"
    } else {
        "matrixmultiply"
    }
}

/// Whether `f32` products of the right strides run [`super::gemm_avx512`]: on x86-64 at the
/// AVX-512 level, unless the `gemm-crate` feature replaces the backend.
fn own_f32_kernel() -> bool {
    cfg!(all(target_arch = "x86_64", not(feature = "gemm-crate")))
        && crate::simd::active_level() >= crate::simd::Level::Avx512
}

/// A read-only strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    pub(crate) fn new(data: &'a [T], rs: usize, cs: usize) -> Self {
        MatRef { data, rs, cs }
    }
}

/// One past the largest index a `rows × cols` matrix with these strides touches.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C ← A·B + β·C` for `A` `m × k`, `B` `k × n` and the `m × n` matrix `C` at `c` with
/// strides `rsc`, `csc`. With `β = 0`, `C` is only written (NaNs in it do not propagate).
///
/// Panics (an internal bug, never bad input) if `A` or `B` reach past their slices or `C`
/// past `c_len`.
///
/// # Safety
/// `c` must be valid for reads and writes of `c_len` elements, and no other thread may
/// access the elements of `C` (the `(i, j)` positions above) during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_ptr<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: *mut T,
    c_len: usize,
    rsc: usize,
    csc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        extent(m, k, a.rs, a.cs) <= a.data.len(),
        "gemm: A out of bounds"
    );
    assert!(
        extent(k, n, b.rs, b.cs) <= b.data.len(),
        "gemm: B out of bounds"
    );
    assert!(extent(m, n, rsc, csc) <= c_len, "gemm: C out of bounds");
    // Strides are below the slices' lengths, which fit in isize.
    let s = |v: usize| v as isize;
    #[cfg(feature = "gemm-crate")]
    {
        // The `gemm` crate computes `dst ← α·dst + β·lhs·rhs`, reading `dst` only when asked.
        let read_dst = beta != T::ZERO;
        // SAFETY: the asserts above keep every element it touches inside `a`, `b` and the
        // caller's `C` buffer (`lhs`/`rhs` are only read despite the `*const` → `*mut` casts
        // inside the crate); T is f32 or f64, which the crate supports; one thread.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c,
                s(csc),
                s(rsc),
                read_dst,
                a.data.as_ptr(),
                s(a.cs),
                s(a.rs),
                b.data.as_ptr(),
                s(b.cs),
                s(b.rs),
                beta,
                T::ONE,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
    #[cfg(all(target_arch = "x86_64", not(feature = "gemm-crate")))]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && k > 0
        && (a.cs, b.cs, csc) == (1, 1, 1)
        && (beta == T::ZERO || beta == T::ONE)
        && own_f32_kernel()
    {
        let o = super::gemm_avx512::Operands {
            m,
            k,
            n,
            a: a.data.as_ptr().cast::<f32>(),
            lda: a.rs,
            b: b.data.as_ptr().cast::<f32>(),
            ldb: b.rs,
            c: c.cast::<f32>(),
            ldc: rsc,
        };
        // SAFETY: the level is at most the detected one, so the CPU has AVX-512F; T is f32
        // (same TypeId), so the casts are identities; the asserts above keep every element
        // it touches inside `a`, `b` and the caller's `C` buffer, which is ours alone.
        unsafe { super::gemm_avx512::sgemm(&o, beta == T::ONE) };
        return;
    }
    #[cfg(not(feature = "gemm-crate"))]
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (same TypeId), so the casts are identities; the asserts above keep
        // every element matrixmultiply touches inside `a`, `b` and the caller's `C` buffer.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr().cast::<f32>(),
                s(a.rs),
                s(a.cs),
                b.data.as_ptr().cast::<f32>(),
                s(b.rs),
                s(b.cs),
                beta.to_f64() as f32,
                c.cast::<f32>(),
                s(rsc),
                s(csc),
            )
        }
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: as above, with T = f64.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr().cast::<f64>(),
                s(a.rs),
                s(a.cs),
                b.data.as_ptr().cast::<f64>(),
                s(b.rs),
                s(b.cs),
                beta.to_f64(),
                c.cast::<f64>(),
                s(rsc),
                s(csc),
            )
        }
    } else {
        unreachable!("Float is sealed: f32 and f64 only");
    }
}

/// [`gemm_ptr`] into a slice the caller holds exclusively.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: &mut [T],
    rsc: usize,
    csc: usize,
) {
    // SAFETY: `c` is an exclusive borrow of `c.len()` elements.
    unsafe { gemm_ptr(m, k, n, a, b, beta, c.as_mut_ptr(), c.len(), rsc, csc) }
}
