//! Seeded parameter initialisation matching PyTorch's defaults and Xavier/Glorot.
//!
//! The generator is splitmix64 over a counter: tiny, portable and the same on every platform, so a seed
//! fixes the initial weights forever (it does not reproduce PyTorch's random stream; exchange weights
//! through safetensors for that).

use seqrec_tensor::{Float, Tensor, splitmix64};

/// A seeded counter-based random number generator for initialisation.
#[derive(Clone, Debug)]
pub struct Rng {
    seed: u64,
    counter: u64,
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.counter += 1;
        splitmix64(self.seed ^ splitmix64(self.counter))
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform01(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, bound: f64) -> f64 {
        (2.0 * self.uniform01() - 1.0) * bound
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform01(); // (0, 1]: ln is finite
        let u2 = self.uniform01();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A tensor of `shape` with elements uniform in `[-bound, bound)`.
    pub fn uniform_tensor<T: Float>(&mut self, shape: &[usize], bound: f64) -> Tensor<T> {
        Tensor::from_fn(shape, |_| T::from_f64(self.uniform(bound)))
    }

    /// A tensor of `shape` with elements normal with mean 0 and standard deviation `std`.
    pub fn normal_tensor<T: Float>(&mut self, shape: &[usize], std: f64) -> Tensor<T> {
        Tensor::from_fn(shape, |_| T::from_f64(self.normal() * std))
    }
}

/// PyTorch's default bound for `nn.Linear`/RNN weights and biases: `1 / sqrt(fan_in)`
/// (`kaiming_uniform_(a = sqrt(5))` reduces to this).
pub fn torch_default_bound(fan_in: usize) -> f64 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f64).sqrt()
    }
}

/// Xavier/Glorot uniform bound: `gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform_bound(fan_in: usize, fan_out: usize, gain: f64) -> f64 {
    gain * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_moments_are_right() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(7);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(a[0], Rng::new(8).next_u64());

        let n = 200_000;
        let mut r = Rng::new(1);
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        let us: Vec<f64> = (0..n).map(|_| r.uniform(0.5)).collect();
        assert!(us.iter().all(|u| (-0.5..0.5).contains(u)));
        // Var of U(-b, b) is b^2 / 3.
        let uvar = us.iter().map(|u| u * u).sum::<f64>() / n as f64;
        assert!((uvar - 0.25 / 3.0).abs() < 0.002, "uniform var {uvar}");
    }
}
