//! Streaming statistics for inter-arrival times: O(1) memory per IP, whatever the number of
//! events. Welford's algorithm for mean/variance, min/max, and a fixed-size deterministic
//! reservoir for the median, so profiling in one pass or with restarts gives the same result.

use serde::{Deserialize, Serialize};

/// Samples kept for the median.
pub(crate) const RESERVOIR: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Welford {
    pub n: u64,
    pub mean: f64,
    m2: f64,
    pub min: f64,
    pub max: f64,
    reservoir: Vec<f64>,
}

/// splitmix64: a fixed hash, so reservoir replacement depends only on the sample index.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Welford {
    /// No sample yet (every field at its default).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Adds a sample. Negative or non-finite gaps (clock skew, out-of-order writers) are
    /// ignored rather than allowed to bend the statistics.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() || x < 0.0 {
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        if self.n == 1 || x < self.min {
            self.min = x;
        }
        if self.n == 1 || x > self.max {
            self.max = x;
        }
        if self.reservoir.len() < RESERVOIR {
            self.reservoir.push(x);
        } else {
            let j = (mix(self.n) % self.n) as usize;
            if j < RESERVOIR {
                self.reservoir[j] = x;
            }
        }
    }

    /// Sample standard deviation (0 with fewer than two samples).
    pub(crate) fn stdev(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }

    /// Coefficient of variation, stdev / mean (0 when the mean is 0).
    pub(crate) fn cv(&self) -> f64 {
        if self.mean > 0.0 {
            self.stdev() / self.mean
        } else {
            0.0
        }
    }

    /// Median of the reservoir (exact up to RESERVOIR samples).
    pub fn median(&self) -> f64 {
        if self.reservoir.is_empty() {
            return 0.0;
        }
        let mut v = self.reservoir.clone();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_one_sample() {
        let w = Welford::default();
        assert_eq!(
            (w.n, w.mean, w.stdev(), w.cv(), w.median()),
            (0, 0.0, 0.0, 0.0, 0.0)
        );
        let mut w = Welford::default();
        w.push(2.5);
        assert_eq!(
            (w.n, w.mean, w.min, w.max, w.median(), w.stdev()),
            (1, 2.5, 2.5, 2.5, 2.5, 0.0)
        );
    }

    #[test]
    fn equal_gaps_have_zero_spread() {
        let mut w = Welford::default();
        for _ in 0..10 {
            w.push(0.0);
        }
        assert_eq!(
            (w.n, w.mean, w.stdev(), w.cv(), w.median(), w.max),
            (10, 0.0, 0.0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn negative_and_non_finite_gaps_are_ignored_huge_ones_kept() {
        let mut w = Welford::default();
        w.push(1.0);
        w.push(-5.0);
        w.push(f64::NAN);
        w.push(3.0);
        w.push(1e9);
        assert_eq!(w.n, 3);
        assert_eq!(w.min, 1.0);
        assert_eq!(w.max, 1e9);
        assert_eq!(w.median(), 3.0);
    }

    #[test]
    fn matches_the_two_pass_formulas() {
        let xs: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 / 7.0).collect();
        let mut w = Welford::default();
        xs.iter().for_each(|&x| w.push(x));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
        assert!((w.mean - mean).abs() < 1e-9);
        assert!((w.stdev() - var.sqrt()).abs() < 1e-9);
        // The reservoir median lands inside the sample range and near the true median.
        let mut s = xs.clone();
        s.sort_by(f64::total_cmp);
        assert!(
            (w.median() - s[500]).abs() < 4.0,
            "{} vs {}",
            w.median(),
            s[500]
        );
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let mut a = Welford::default();
        let mut b = Welford::default();
        for i in 0..500 {
            a.push(i as f64 * 0.3);
            b.push(i as f64 * 0.3);
            if i == 250 {
                b = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
            }
        }
        assert_eq!(a, b);
    }
}
