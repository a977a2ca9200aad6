//! The `train_convnet` example's network, shrunk: its analytic gradients match finite
//! differences, and training it on the fast and the naive kernels from the same
//! initialisation gives the same losses.

#[allow(dead_code)]
#[path = "../examples/train_convnet/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../examples/train_convnet/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "../examples/train_convnet/rng.rs"]
mod rng;

use net::{Backend, Config, Net};
use rng::Rng;

fn tiny(batchnorm: bool) -> Config {
    Config {
        input: [3, 10, 10],
        filters: 4,
        filter_size: 7,
        hidden: 12,
        classes: 5,
        batchnorm,
        weight_scale: None,
        reg: 1e-2,
    }
}

fn batch(n: usize, cfg: &Config, rng: &mut Rng) -> (Vec<f32>, Vec<u8>) {
    let len: usize = n * cfg.input.iter().product::<usize>();
    let x = (0..len).map(|_| rng.normal()).collect();
    let y = (0..n).map(|_| rng.below(cfg.classes) as u8).collect();
    (x, y)
}

/// Central differences of the loss along a few coordinates of every parameter, against the
/// analytic gradient. The step is small (ReLU and max-pool switch points make larger steps
/// unreliable for the conv weights) and the loss is f32 (rounding ~2e-7 / 2h ≈ 1e-4 of
/// noise), so this checks 1% relative error with a 5e-4 absolute floor; a wrong backward
/// is off by far more.
#[test]
fn analytic_gradients_match_finite_differences() {
    for batchnorm in [false, true] {
        let cfg = tiny(batchnorm);
        let mut rng = Rng::new(11);
        let mut net = Net::new(cfg.clone(), &mut rng);
        let (x, y) = batch(6, &cfg, &mut rng);
        net.train_step(Backend::Naive, &x, &y).unwrap();
        let grads: Vec<Vec<f32>> = net.params_mut().iter().map(|p| p.grad.clone()).collect();
        let mut checked = 0;
        for (pi, g) in grads.iter().enumerate() {
            for k in 0..4 {
                let i = (k * 7919 + pi * 31) % g.len();
                let h = 1e-3f32;
                let loss_at = |delta: f32| {
                    let mut n2 = net.clone();
                    n2.params_mut()[pi].value[i] += delta;
                    n2.train_step(Backend::Naive, &x, &y).unwrap().loss
                };
                let num = (loss_at(h) - loss_at(-h)) / (2.0 * h);
                let err = (num - g[i]).abs();
                assert!(
                    err <= 0.01 * num.abs().max(g[i].abs()) + 5e-4,
                    "batchnorm {batchnorm}: param {pi}[{i}]: numeric {num}, analytic {}",
                    g[i]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 4 * if batchnorm { 8 } else { 6 });
    }
}

/// Trains `steps` SGD-momentum steps on `backend` and returns the loss of each.
fn losses(net: &Net, backend: Backend, data: &[(Vec<f32>, Vec<u8>)], lr: f32) -> Vec<f32> {
    let mut net = net.clone();
    data.iter()
        .map(|(x, y)| {
            let s = net.train_step(backend, x, y).unwrap();
            net.sgd_momentum(lr, 0.9);
            s.loss
        })
        .collect()
}

/// Same initialisation, same batches: the fast kernels' loss curve follows the naive one to
/// 1e-4 relative (f32; the kernels sum in different orders, nothing more).
#[test]
fn fast_and_naive_training_agree() {
    for batchnorm in [false, true] {
        let cfg = tiny(batchnorm);
        let mut rng = Rng::new(5);
        let net = Net::new(cfg.clone(), &mut rng);
        let data: Vec<_> = (0..8).map(|_| batch(10, &cfg, &mut rng)).collect();
        let naive = losses(&net, Backend::Naive, &data, 2e-2);
        let fast = losses(&net, Backend::Fast, &data, 2e-2);
        for (step, (a, b)) in naive.iter().zip(&fast).enumerate() {
            let rel = (a - b).abs() / a.abs();
            assert!(
                rel <= 1e-4,
                "batchnorm {batchnorm}, step {step}: naive loss {a}, fast {b} (rel {rel:e})"
            );
        }
        assert!(
            naive.last() < naive.first(),
            "training reduced no loss: {naive:?}"
        );
    }
}

/// The example's own network (32 filters 7×7, hidden 100) on the first 100 images of its
/// dataset: two SGD steps on each backend from the same initialisation agree to 1e-4.
#[test]
fn full_size_network_agrees_on_the_shared_subset() {
    use data::{Dataset, CHANNELS, CLASSES, IMAGE_LEN, SIZE};
    let set = Dataset::generate(100, 7);
    let cfg = Config {
        input: [CHANNELS, SIZE, SIZE],
        filters: 32,
        filter_size: 7,
        hidden: 100,
        classes: CLASSES.len(),
        batchnorm: false,
        weight_scale: None,
        reg: 1e-4,
    };
    let net = Net::new(cfg, &mut Rng::new(8));
    let data: Vec<_> = (0..2)
        .map(|b| {
            let x = set.images[b * 50 * IMAGE_LEN..(b + 1) * 50 * IMAGE_LEN].to_vec();
            (x, set.labels[b * 50..(b + 1) * 50].to_vec())
        })
        .collect();
    let naive = losses(&net, Backend::Naive, &data, 3e-3);
    let fast = losses(&net, Backend::Fast, &data, 3e-3);
    for (step, (a, b)) in naive.iter().zip(&fast).enumerate() {
        let rel = (a - b).abs() / a.abs();
        assert!(
            rel <= 1e-4,
            "step {step}: naive loss {a}, fast {b} (rel {rel:e})"
        );
    }
}
