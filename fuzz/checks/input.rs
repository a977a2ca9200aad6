//! Turns the fuzzer's bytes into shapes, parameters and tensor data.
//!
//! A small hand-written decoder (no `arbitrary`), so the checkers compile in the main
//! crate's regression test without extra dependencies. Every read is total: when the bytes
//! run out, structural reads return 0 (which always decodes to a small, ordinary choice)
//! and data reads continue from a SplitMix64 stream seeded by the input, so short inputs
//! still give full tensors and every input decodes the same way on every run.

/// Dimensions that reach the overflow checks: near `usize::MAX`, near powers of two whose
/// products overflow, and merely large values that make outputs exceed the allocation limit.
const EXTREME: [usize; 16] = [
    usize::MAX,
    usize::MAX - 1,
    usize::MAX / 2,
    usize::MAX / 2 + 1,
    1 << 32,
    (1 << 32) + 1,
    1 << 31,
    1 << 62,
    1 << 63,
    isize::MAX as usize,
    65_535,
    65_536,
    1 << 20,
    3_037_000_500, // ≈ √2⁶³: squares overflow isize, not usize
    1 << 40,
    4_294_967_295,
];

/// Values that exercise the IEEE corner cases. Entries marked f64-only round in `f32` (to 0,
/// or to ±inf), which is itself a case worth having.
const SPECIAL: [f64; 17] = [
    f64::NAN,
    -f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    1.401_298_464_324_817e-45,   // smallest f32 subnormal
    -1.401_298_464_324_817e-45,  // its negative
    1.175_494_350_822_287_5e-38, // f32::MIN_POSITIVE
    3.402_823_466_385_288_6e38,  // f32::MAX
    -3.402_823_466_385_288_6e38,
    1e30,
    -1e-30,
    5e-324,   // smallest f64 subnormal (f64-only)
    f64::MAX, // f64-only
    1.0,
    -1.0,
];

/// A cursor over the fuzzer's bytes.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    rng: u64,
    /// How wild the shapes and parameters are: 0 ordinary, 1 with zeros and off-by-one
    /// lengths, 2 with extreme values too, 3 mostly extreme.
    pub chaos: u8,
    /// Per 256 data elements, how many are drawn from [`SPECIAL`] (0, 4, 24 or 96).
    special_rate: u8,
    /// How ordinary values are drawn (see [`Input::value`]).
    value_mode: u8,
}

impl<'a> Input<'a> {
    /// A decoder over `data`; reads the header byte (chaos, special rate, value mode).
    pub fn new(data: &'a [u8]) -> Self {
        // FNV-1a of the whole input seeds the data stream.
        let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        let mut inp = Input {
            data,
            pos: 0,
            rng: seed,
            chaos: 0,
            special_rate: 0,
            value_mode: 0,
        };
        let h = inp.u8();
        inp.chaos = h & 3;
        inp.special_rate = [0, 4, 24, 96][((h >> 2) & 3) as usize];
        inp.value_mode = (h >> 4) & 3;
        inp
    }

    fn next_rng(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next byte, 0 once the input is exhausted.
    pub fn u8(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    /// The next byte for data: from the input while it lasts, then pseudo-random.
    fn data_byte(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => self.next_rng() as u8,
        }
    }

    /// Whether a rare event happens, more often with more chaos.
    pub fn chance(&mut self, per_256_at_chaos_1: u32) -> bool {
        if self.chaos == 0 {
            return false;
        }
        let rate = per_256_at_chaos_1 * self.chaos as u32;
        (self.u8() as u32) < rate.min(256)
    }

    /// One entry of [`EXTREME`].
    pub fn extreme(&mut self) -> usize {
        EXTREME[self.u8() as usize % EXTREME.len()]
    }

    /// A value in `lo..=hi`, occasionally 0 or extreme depending on chaos.
    pub fn small(&mut self, lo: usize, hi: usize) -> usize {
        let b = self.u8();
        match (self.chaos, b) {
            (1.., 0xF8..) => 0,
            (2.., 0xF0..=0xF7) => self.extreme(),
            (3, 0xC0..=0xEF) => self.extreme(),
            _ => lo + b as usize % (hi - lo + 1),
        }
    }

    /// A dimension: mostly 1–9.
    pub fn dim(&mut self) -> usize {
        self.small(1, 9)
    }

    /// A length that is `want`, or (with chaos) off by one or arbitrary.
    pub fn len_near(&mut self, want: usize) -> usize {
        if !self.chance(8) {
            return want;
        }
        match self.u8() % 4 {
            0 => want.wrapping_add(1),
            1 => want.wrapping_sub(1),
            2 => 0,
            _ => self.u8() as usize % 10,
        }
    }

    /// A rank-1..4 shape: `dims` itself, or (with chaos) a prefix or a padded version.
    pub fn shape_near(&mut self, dims: &[usize]) -> Vec<usize> {
        if !self.chance(6) {
            return dims.to_vec();
        }
        let r = 1 + self.u8() as usize % 4;
        let mut v: Vec<usize> = dims.iter().copied().take(r).collect();
        while v.len() < r {
            v.push(1 + self.u8() as usize % 3);
        }
        v
    }

    /// A float parameter such as eps or momentum: usually `typical`, with chaos anything
    /// from a table of awkward values.
    pub fn param_f64(&mut self, typical: &[f64]) -> f64 {
        const ODD: [f64; 12] = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            -0.0,
            -1e-300,
            5e-324,
            1e300,
            f64::MAX,
            1.0 + f64::EPSILON,
            2.0,
            1e-45,
        ];
        let b = self.u8();
        if self.chaos > 0 && b >= 0xE0 {
            ODD[b as usize % ODD.len()]
        } else {
            typical[b as usize % typical.len()]
        }
    }

    /// One data value (see the module docs): from [`SPECIAL`] at the input's special rate,
    /// else by value mode: small integers in −3..=3 (many ties and zeros), multiples of
    /// 1/16 in −8..8, uniform in [−4, 4), or a wide range of magnitudes (2^−140 .. 2^100).
    pub fn value(&mut self) -> f64 {
        let b = self.data_byte();
        if b < self.special_rate {
            return SPECIAL[self.data_byte() as usize % SPECIAL.len()];
        }
        match self.value_mode {
            0 => (b % 7) as f64 - 3.0,
            1 => (b as f64 - 128.0) / 16.0,
            2 => {
                let u = (self.next_rng() >> 11) as f64 / (1u64 << 53) as f64;
                (u - 0.5) * 8.0 + (b as f64 - 128.0) / 4096.0
            }
            _ => {
                let m = 1.0 + (self.next_rng() >> 11) as f64 / (1u64 << 53) as f64;
                let e = (self.data_byte() as i32 * 240 / 255) - 140;
                let s = if b & 1 == 1 { -1.0 } else { 1.0 };
                s * m * 2f64.powi(e)
            }
        }
    }

    /// `n` data values, each rounded to `f32` so that both element types see the same
    /// numbers; where an f64-only special was drawn, the f64 copy keeps it (so it is no
    /// longer exactly the f32 value, see [`Data::f32_exact`]).
    pub fn data(&mut self, n: usize) -> Data {
        let mut d = Data {
            f64: Vec::with_capacity(n),
            f32: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let v = self.value();
            let r = if v.abs() >= 1e300 || (v != 0.0 && v.abs() < 1e-300) {
                v // keep the f64 value (may not be an f32)
            } else {
                v as f32 as f64
            };
            d.f64.push(r);
            d.f32.push(r as f32);
        }
        d
    }
}

/// The same tensor data in both element types.
#[derive(Debug, Clone)]
pub struct Data {
    /// The `f64` values.
    pub f64: Vec<f64>,
    /// The `f32` values (`f64` rounded).
    pub f32: Vec<f32>,
}

impl Data {
    /// Whether every `f64` value is exactly its `f32` copy (NaN counts as exact), so the
    /// naive `f64` result may serve as a reference for the `f32` one.
    pub fn f32_exact(&self) -> bool {
        self.f64
            .iter()
            .zip(&self.f32)
            .all(|(&a, &b)| a.is_nan() && b.is_nan() || a == b as f64)
    }
}

/// The element types' data, picked generically.
pub trait Pick: cnn_kernels::Float {
    /// This type's copy of `d`.
    fn pick(d: &Data) -> &[Self];
}
impl Pick for f32 {
    fn pick(d: &Data) -> &[f32] {
        &d.f32
    }
}
impl Pick for f64 {
    fn pick(d: &Data) -> &[f64] {
        &d.f64
    }
}
