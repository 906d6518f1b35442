//! When a spooled output believes a backend that refuses what it is sent.
//!
//! A refusal of the data itself (OTLP `InvalidArgument` or 400, HTTP 400,
//! 413, 422) moves the records aside to `rejected.jsonl`, so one malformed
//! batch cannot block every finding behind it. But a backend that refuses
//! *everything* is almost never looking at bad data: a gateway answering
//! 400 to missing credentials, an endpoint pointing at the wrong service.
//! Believing it would empty the spool into a file nobody reads. So after
//! [`BELIEVED_IN_A_ROW`] refusals with no delivery between them, refusals
//! are treated as failures that can heal: the records stay spooled and are
//! retried with backoff until the backend takes one.

/// Refused requests in a row that are still moved aside.
pub const BELIEVED_IN_A_ROW: u32 = 8;

/// Consecutive refusals since the last delivery.
#[derive(Debug, Default)]
pub struct RefusalStreak {
    in_a_row: u32,
}

impl RefusalStreak {
    /// Counts a refusal. True when the refused records are to be moved
    /// aside; false once the streak says the output itself is wrong and
    /// they are to stay spooled.
    pub fn believe(&mut self) -> bool {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.in_a_row <= BELIEVED_IN_A_ROW
    }

    /// Refusals in a row so far.
    pub fn in_a_row(&self) -> u32 {
        self.in_a_row
    }

    /// A delivery ends the streak. Returns true when refusals were being
    /// held, so the caller can say they no longer are.
    pub fn delivered(&mut self) -> bool {
        let held = self.in_a_row > BELIEVED_IN_A_ROW;
        self.in_a_row = 0;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_believed_until_they_come_too_many_in_a_row() {
        let mut s = RefusalStreak::default();
        for _ in 0..BELIEVED_IN_A_ROW {
            assert!(s.believe());
        }
        assert!(!s.believe());
        assert!(!s.believe());
        assert_eq!(s.in_a_row(), BELIEVED_IN_A_ROW + 2);
        assert!(s.delivered());
        assert!(s.believe());
        assert!(!s.delivered());
    }
}
