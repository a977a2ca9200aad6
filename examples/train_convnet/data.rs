//! A 10-class image dataset drawn procedurally: no download, fully determined by the seed.
//!
//! Each image is `3 × SIZE × SIZE` (CHW), a pattern `t(y, x) ∈ [0, 1]` blended between two
//! random colours, plus Gaussian pixel noise, then centred to roughly zero mean. The
//! colours, phases, frequencies, positions and noise vary per image, so only the *shape*
//! of the pattern tells the class.

use crate::rng::Rng;

/// Image side in pixels.
pub const SIZE: usize = 32;
/// Channels (RGB).
pub const CHANNELS: usize = 3;
/// Values per image.
pub const IMAGE_LEN: usize = CHANNELS * SIZE * SIZE;

/// The class names, index = label.
pub const CLASSES: [&str; 10] = [
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes",
    "anti-diagonal stripes",
    "checkerboard",
    "rings",
    "blobs",
    "gradient",
    "disk",
    "grid",
];

/// Images `(N, 3, SIZE, SIZE)` flattened NCHW, and their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Pixels, NCHW.
    pub images: Vec<f32>,
    /// Class of each image, `0..CLASSES.len()`.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// `n` images, classes in turn (so every class has `n / 10` or one more), from `seed`.
    pub fn generate(n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut images = Vec::with_capacity(n * IMAGE_LEN);
        let mut labels = Vec::with_capacity(n);
        let mut order: Vec<usize> = (0..n).map(|i| i % CLASSES.len()).collect();
        rng.shuffle(&mut order);
        for class in order {
            draw(class, &mut rng, &mut images);
            labels.push(class as u8);
        }
        Dataset { images, labels }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// The `i`-th image.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]
    }
}

/// Smooth step of a periodic wave: `sin` squashed towards a square wave by `sharp`.
fn wave(phase: f32, sharp: f32) -> f32 {
    0.5 + 0.5 * (sharp * phase.sin()).tanh() / sharp.tanh()
}

/// Appends one image of `class` to `out`.
fn draw(class: usize, rng: &mut Rng, out: &mut Vec<f32>) {
    use std::f32::consts::{PI, TAU};
    let s = SIZE as f32;
    let period = rng.range(4.0, 11.0);
    let phase = rng.range(0.0, TAU);
    let sharp = rng.range(0.5, 4.0);
    let (cy, cx) = (rng.range(0.25 * s, 0.75 * s), rng.range(0.25 * s, 0.75 * s));
    let jitter = rng.range(-0.15, 0.15); // ± ~9° of orientation
    let blobs: Vec<(f32, f32, f32)> = (0..2 + rng.below(3))
        .map(|_| {
            (
                rng.range(4.0, s - 4.0),
                rng.range(4.0, s - 4.0),
                rng.range(2.5, 5.5),
            )
        })
        .collect();
    let radius = rng.range(6.0, 12.0);
    let theta = rng.range(0.0, TAU);
    let line = rng.range(1.0, 2.5);
    let pattern = |y: f32, x: f32| -> f32 {
        let stripes = |angle: f32| {
            let (sn, cs) = (angle + jitter).sin_cos();
            wave(TAU * (x * cs + y * sn) / period + phase, sharp)
        };
        match class {
            0 => stripes(PI / 2.0),
            1 => stripes(0.0),
            2 => stripes(PI / 4.0),
            3 => stripes(3.0 * PI / 4.0),
            4 => {
                let a = wave(TAU * x / period + phase, 4.0) - 0.5;
                let b = wave(TAU * y / period + phase, 4.0) - 0.5;
                0.5 + 2.0 * a * b
            }
            5 => wave(TAU * ((y - cy).hypot(x - cx)) / period + phase, sharp),
            6 => blobs
                .iter()
                .map(|&(by, bx, r)| (-((y - by).powi(2) + (x - bx).powi(2)) / (2.0 * r * r)).exp())
                .fold(0.0f32, f32::max),
            7 => {
                let (sn, cs) = theta.sin_cos();
                0.5 + ((x - s / 2.0) * cs + (y - s / 2.0) * sn) / s
            }
            8 => {
                let d = (y - cy).hypot(x - cx) - radius;
                1.0 / (1.0 + (d * sharp).exp())
            }
            _ => {
                let m = |v: f32| {
                    let r = (v - phase).rem_euclid(period);
                    r.min(period - r)
                };
                let d = m(x).min(m(y));
                if d < line {
                    1.0
                } else {
                    0.0
                }
            }
        }
    };
    // Two colours far enough apart that the pattern is visible in some channel.
    let (a, b) = loop {
        let a: [f32; 3] = [rng.uniform(), rng.uniform(), rng.uniform()];
        let b: [f32; 3] = [rng.uniform(), rng.uniform(), rng.uniform()];
        let dist: f32 = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum();
        if dist > 0.6 {
            break (a, b);
        }
    };
    let noise = rng.range(0.02, 0.1);
    let mut t = vec![0.0f32; SIZE * SIZE];
    for (i, v) in t.iter_mut().enumerate() {
        *v = pattern((i / SIZE) as f32, (i % SIZE) as f32).clamp(0.0, 1.0);
    }
    for c in 0..CHANNELS {
        for &v in &t {
            let px = a[c] + (b[c] - a[c]) * v + noise * rng.normal();
            out.push(2.0 * px - 1.0);
        }
    }
}

/// Writes a binary PPM of `per_class` images of every class (one class per row), pixels
/// mapped from `[-1, 1]` to `0..=255`, for a look at what the network sees.
pub fn write_samples_ppm(set: &Dataset, per_class: usize, path: &str) -> std::io::Result<()> {
    let gap = 2;
    let (cols, rows) = (per_class, CLASSES.len());
    let (w, h) = (cols * (SIZE + gap), rows * (SIZE + gap));
    let mut img = vec![255u8; w * h * 3];
    let mut filled = vec![0usize; rows];
    for i in 0..set.len() {
        let class = set.labels[i] as usize;
        if filled[class] == per_class {
            continue;
        }
        let (ox, oy) = (filled[class] * (SIZE + gap), class * (SIZE + gap));
        filled[class] += 1;
        let im = set.image(i);
        for c in 0..CHANNELS {
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let v = im[(c * SIZE + y) * SIZE + x];
                    let byte = ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
                    img[((oy + y) * w + ox + x) * 3 + c] = byte;
                }
            }
        }
    }
    let mut out = format!("P6\n{w} {h}\n255\n").into_bytes();
    out.extend_from_slice(&img);
    std::fs::write(path, out)
}
