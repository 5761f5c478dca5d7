//! Reconnect delays: exponential backoff with jitter.
//!
//! The cap of attempt `n` (0-based) is `min(max, base × 2ⁿ)`: with the defaults 1 s, 2 s, 4 s, 8 s, 16 s,
//! 30 s, 30 s … The delay is drawn at random below the cap ([`Jitter`]), so that a whole population of
//! clients cut off at the same instant does not come back at the same instant.
//!
//! The arithmetic is pure ([`BackoffConfig::cap`], [`BackoffConfig::delay`] take the attempt and the
//! random fraction as arguments); only [`Backoff::next_delay`] draws a random number.

use std::time::Duration;

/// How the delay is drawn below the cap of an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, cap]` ("full jitter"). Spreads a herd the most; the default.
    #[default]
    Full,
    /// Uniform in `[cap / 2, cap]` (the sketch in `docs/protocol.md`): never much sooner than the cap.
    Half,
    /// Exactly the cap, no randomness.
    None,
}

/// The backoff schedule: the first cap, the largest cap, and the jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The cap of the first attempt (1 s by default).
    pub base: Duration,
    /// The largest cap (30 s by default).
    pub max: Duration,
    /// How the delay is drawn below the cap.
    pub jitter: Jitter,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), max: Duration::from_secs(30), jitter: Jitter::Full }
    }
}

impl BackoffConfig {
    /// The cap of attempt `attempt` (0-based): `min(max, base × 2^attempt)`, without overflow.
    pub fn cap(&self, attempt: u32) -> Duration {
        1u32.checked_shl(attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |cap| cap.min(self.max))
    }

    /// The delay of attempt `attempt` for a random `fraction` in `[0, 1]` (clamped into it).
    pub fn delay(&self, attempt: u32, fraction: f64) -> Duration {
        let cap = self.cap(attempt);
        let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        match self.jitter {
            Jitter::Full => cap.mul_f64(fraction),
            Jitter::Half => {
                let half = cap / 2;
                half + (cap - half).mul_f64(fraction)
            }
            Jitter::None => cap,
        }
    }
}

/// A running backoff: counts the attempts since the last success.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A backoff at attempt 0.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// The schedule.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// How many delays were handed out since the last [`reset`](Self::reset): the attempt the next delay is for.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The cap of the next delay.
    pub fn next_cap(&self) -> Duration {
        self.config.cap(self.attempt)
    }

    /// The next delay, with a fresh random jitter; advances the attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// The next delay for a given random `fraction` in `[0, 1]`; advances the attempt.
    pub fn next_delay_with(&mut self, fraction: f64) -> Duration {
        let delay = self.config.delay(self.attempt, fraction);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Back to attempt 0, after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn caps_double_from_base_up_to_max() {
        let config = BackoffConfig::default();
        let caps: Vec<u64> = (0..8).map(|n| config.cap(n).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn caps_never_overflow() {
        let config = BackoffConfig { base: secs(1), max: secs(30), jitter: Jitter::Full };
        for attempt in [31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(config.cap(attempt), secs(30), "attempt {attempt}");
        }
        let huge = BackoffConfig { base: Duration::MAX, max: Duration::MAX, jitter: Jitter::None };
        assert_eq!(huge.cap(5), Duration::MAX);
    }

    #[test]
    fn a_max_below_base_caps_everything() {
        let config = BackoffConfig { base: secs(10), max: secs(3), jitter: Jitter::None };
        assert_eq!(config.cap(0), secs(3));
        assert_eq!(config.cap(4), secs(3));
    }

    #[test]
    fn full_jitter_spans_zero_to_cap() {
        let config = BackoffConfig::default();
        assert_eq!(config.delay(3, 0.0), Duration::ZERO);
        assert_eq!(config.delay(3, 1.0), secs(8));
        assert_eq!(config.delay(3, 0.5), secs(4));
        // Out-of-range fractions are clamped, NaN counts as 0.
        assert_eq!(config.delay(3, 7.0), secs(8));
        assert_eq!(config.delay(3, -1.0), Duration::ZERO);
        assert_eq!(config.delay(3, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn half_jitter_spans_half_cap_to_cap() {
        let config = BackoffConfig { jitter: Jitter::Half, ..BackoffConfig::default() };
        assert_eq!(config.delay(2, 0.0), secs(2));
        assert_eq!(config.delay(2, 1.0), secs(4));
        assert_eq!(config.delay(9, 0.0), secs(15));
    }

    #[test]
    fn no_jitter_is_the_cap() {
        let config = BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() };
        assert_eq!(config.delay(1, 0.1), secs(2));
    }

    #[test]
    fn attempts_advance_and_reset() {
        let mut backoff = Backoff::new(BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() });
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay_with(0.3).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.attempt(), 7);
        backoff.reset();
        assert_eq!(backoff.attempt(), 0);
        assert_eq!(backoff.next_cap(), secs(1));
    }

    #[test]
    fn random_delays_stay_within_their_cap() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        for attempt in 0..50u32 {
            let cap = backoff.next_cap();
            let delay = backoff.next_delay();
            assert!(delay <= cap, "attempt {attempt}: {delay:?} > {cap:?}");
        }
    }
}
