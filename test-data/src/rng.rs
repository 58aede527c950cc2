//! A small seeded PRNG (SplitMix64), written here rather than taken from `rand`.
//!
//! Datasets must be byte-identical across crate versions, platforms and years: a benchmark
//! from last month and a test fixture from CI must describe the same objects. `rand` documents
//! that its algorithms and value streams may change between releases, and float helpers built
//! on `ln`/`exp`/`cos` may round differently from one libm to another. So this module only
//! uses 64-bit integer arithmetic (wrapping add, multiply, xor, shift), and the generators
//! built on it use integers, or `f64` `+ - * /` alone (which IEEE 754 rounds identically
//! everywhere). Changing a constant or the order of draws here changes every dataset: treat
//! that as a breaking change.

/// The SplitMix64 increment (the golden ratio in 64-bit fixed point).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit state, passes BigCrush, and
/// any seed, including 0, is fine.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `[0, bound)`, 0 when `bound` is 0. Multiply-shift without a rejection loop:
    /// the bias (under `bound / 2^64`) is irrelevant here, and every call takes exactly one
    /// draw, so the stream of a file never depends on the values drawn before.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        debug_assert!(low <= high, "between({low}, {high})");
        low + self.below(high - low + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance_per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A log-uniform-ish size: an octave `e` in `[0, octaves)`, then uniform in
    /// `[base * 2^e, base * 2^(e+1))`. Integer-only stand-in for `exp(uniform)`.
    pub fn octave_spread(&mut self, base: u64, octaves: u64) -> u64 {
        let low = base << self.below(octaves);
        low + self.below(low)
    }

    /// A log-normal-ish size: the octave is the number of heads in 8 fair coin flips
    /// (binomial, so middle octaves are common and the tail is heavy), then uniform within
    /// it. Returns values in `[1, 512)` with mean about 37.9.
    pub fn binomial_octave_spread(&mut self) -> u64 {
        let octave = (self.next_u64() & 0xFF).count_ones();
        let low = 1u64 << octave;
        low + self.below(low)
    }
}

/// The SplitMix64 finaliser. It is a bijection on `u64`, which the generators use to turn a
/// file's ordinal into an identifier that is both random-looking and unique.
pub fn mix64(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_pinned() {
        // Reference values of SplitMix64 for seed 1234567 (from the authors' C code). If
        // this fails, every generated dataset changed.
        let mut rng = SplitMix64::new(1234567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, vec![6457827717110365317, 3203168211198807973, 9817491932198370423]);
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(10) < 10);
            assert!((5..=9).contains(&rng.between(5, 9)));
            let spread = rng.octave_spread(8, 9);
            assert!((8..8 << 9).contains(&spread));
            assert!((1..512).contains(&rng.binomial_octave_spread()));
        }
        assert_eq!(rng.below(0), 0);
    }
}
