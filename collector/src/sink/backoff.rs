//! Retry pacing shared by the spooled outputs: exponential backoff with
//! jitter, so a fleet of nodes whose backend came back does not retry in
//! step.

use std::time::Duration;

/// Cheap jitter; the point is to de-synchronize a fleet of nodes, not
/// cryptography.
pub struct Jitter(u64);

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

impl Jitter {
    pub fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(std::process::id());
        Jitter(seed | 1)
    }

    pub fn up_to(&mut self, d: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ms = d.as_millis() as u64;
        Duration::from_millis(if ms == 0 { 0 } else { self.0 % ms })
    }
}

/// Exponential backoff between two bounds, with up to half again of jitter.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: Jitter,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            rng: Jitter::new(),
        }
    }

    /// The wait before the next attempt after a failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next + self.rng.up_to(self.next / 2);
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }

    /// An attempt succeeded: the next failure waits the initial time again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            assert!(j.up_to(Duration::from_millis(250)) < Duration::from_millis(250));
        }
        assert_eq!(j.up_to(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_wait()).collect();
        for (w, base) in waits.iter().zip([100u64, 200, 400, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(*w >= base && *w < base + base / 2, "{waits:?}");
        }
        b.reset();
        assert!(b.next_wait() < Duration::from_millis(150));
    }
}
