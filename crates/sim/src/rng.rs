//! A small, fast, seedable random number generator and the distributions the workloads
//! draw from.
//!
//! xoshiro256++ (Blackman and Vigna, "Scrambled linear pseudorandom number generators",
//! ACM TOMS 2021) seeded through SplitMix64 as its authors recommend: simulation needs a
//! quick repeatable stream, not a cryptographic one.

/// The generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || switchyard_router::splitmix64(&mut x);
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// An independent stream for a named purpose, so that adding draws to one purpose does
    /// not shift the others.
    pub fn fork(&self, stream: u64) -> Self {
        Rng::new(self.s[0] ^ stream.wrapping_mul(0xD134_2543_DE82_EF95))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in (0, 1]: never zero, so that its logarithm is finite.
    pub fn open01(&mut self) -> f64 {
        switchyard_router::unit(self.next_u64()) + 1.0 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (n > 0), by Lemire's multiply-shift; the bias is below
    /// n/2^64, far under anything a simulation can see.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Exponential with the given mean, by inversion.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.open01().ln()
    }

    /// Standard normal, by the Box–Muller transform.
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.open01(), self.open01());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma with shape `k` and scale `theta`, by Marsaglia and Tsang's method (ACM TOMS
    /// 2000), boosting shapes below one with Stuart's theorem.
    pub fn gamma(&mut self, k: f64, theta: f64) -> f64 {
        if k < 1.0 {
            let u = self.open01();
            return self.gamma(k + 1.0, theta) * u.powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.open01();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * theta;
            }
        }
    }
}
