//! Which key each request names: a key space of `count` keys, drawn
//! uniformly or by a Zipf law (a few hot keys, a long tail), as the cache
//! workloads in the literature and memtier's `--key-pattern` do.

use crate::rng::Rng;

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key of rank `k` (1-based) drawn with weight `1 / k^s`.
    Zipf(f64),
}

/// A key space and how requests draw from it.
#[derive(Debug, Clone)]
pub struct KeySpace {
    count: u64,
    zipf: Option<Zipf>,
}

impl KeySpace {
    /// `count` keys (at least 1) drawn by `dist`.
    pub fn new(count: u64, dist: KeyDist) -> Self {
        let count = count.max(1);
        let zipf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf(s) => Some(Zipf::new(count, s)),
        };
        Self { count, zipf }
    }

    /// Keys in the space.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many keys, drawn how: `100000 keys, uniform`.
    pub fn describe(&self) -> String {
        match &self.zipf {
            None => format!("{} keys, uniform", self.count),
            Some(z) => format!("{} keys, zipf {}", self.count, z.s),
        }
    }

    /// A key number in `0..count`.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        match &self.zipf {
            None => rng.next_u64() % self.count,
            Some(zipf) => zipf.sample(rng) - 1,
        }
    }
}

/// Parses `uniform` or `zipf[:S]` (S defaults to 0.99, YCSB's constant).
pub fn parse_key_dist(text: &str) -> Result<KeyDist, String> {
    match text.split_once(':') {
        None if text == "uniform" => Ok(KeyDist::Uniform),
        None if text == "zipf" => Ok(KeyDist::Zipf(0.99)),
        Some(("zipf", s)) => match s.parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(KeyDist::Zipf(s)),
            _ => Err(format!(
                "zipf's exponent must be a number above 0, not {s:?}"
            )),
        },
        _ => Err(format!(
            "{text:?} is no key distribution: give uniform or zipf[:S]"
        )),
    }
}

/// Zipf sampling by rejection-inversion (Hörmann and Derflinger, 1996): O(1)
/// memory and time per draw whatever the key count, where a table of the
/// distribution would take 8 bytes per key.
#[derive(Debug, Clone)]
struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        let mut z = Self {
            n: n as f64,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.threshold = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `1..=n`.
    fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let u = self.h_integral_n + unit * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, exact near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, exact near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share of draws each of the first ranks gets matches `1/k^s / H`
    /// computed directly, for exponents below, at and above 1.
    #[test]
    fn zipf_draws_follow_the_law() {
        for s in [0.5, 0.99, 1.0, 1.5] {
            let n = 1000u64;
            let harmonic: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
            let keys = KeySpace::new(n, KeyDist::Zipf(s));
            let mut rng = Rng::new(7);
            let draws = 400_000;
            let mut counts = vec![0u64; n as usize];
            for _ in 0..draws {
                counts[keys.pick(&mut rng) as usize] += 1;
            }
            for rank in [1u64, 2, 10, 100] {
                let expected = (rank as f64).powf(-s) / harmonic;
                let got = counts[rank as usize - 1] as f64 / draws as f64;
                // Four standard deviations of a binomial share.
                let sd = (expected * (1.0 - expected) / draws as f64).sqrt();
                assert!(
                    (got - expected).abs() < 4.0 * sd + 1e-4,
                    "s {s} rank {rank}: {got} against {expected}"
                );
            }
        }
    }

    #[test]
    fn uniform_draws_cover_the_space_and_stay_in_it() {
        let keys = KeySpace::new(10, KeyDist::Uniform);
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[keys.pick(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        let one = KeySpace::new(1, KeyDist::Zipf(0.99));
        assert!((0..100).all(|_| one.pick(&mut rng) == 0));
    }

    #[test]
    fn distributions_parse_or_say_why_not() {
        assert_eq!(parse_key_dist("uniform"), Ok(KeyDist::Uniform));
        assert_eq!(parse_key_dist("zipf"), Ok(KeyDist::Zipf(0.99)));
        assert_eq!(parse_key_dist("zipf:1.2"), Ok(KeyDist::Zipf(1.2)));
        assert!(parse_key_dist("zipf:0").is_err());
        assert!(parse_key_dist("zipf:x").is_err());
        assert!(parse_key_dist("normal")
            .unwrap_err()
            .contains("uniform or zipf"));
    }
}
