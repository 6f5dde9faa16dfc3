//! A token bucket per connection, driven by the `now` each input carries.
//!
//! A browser sends a burst of candidates when gathering starts and then little; the
//! bucket lets that burst through and stops a client that floods the room (and the peer
//! it relays to). Integer arithmetic in thousandths of a token keeps it exact.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// How many messages a connection may send: `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub burst: u32,
    pub per_second: u32,
}

impl RateLimit {
    /// A browser's first gathering sends 10 to 30 candidates in well under a second;
    /// afterwards it pings every 5 s and renegotiates rarely.
    pub const DEFAULT: RateLimit = RateLimit {
        burst: 60,
        per_second: 20,
    };
}

/// The tokens a connection has left. The server's `/v1/ws` gateway uses the same
/// bucket for its client messages, with its own limit and an origin of its choosing.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Thousandths of a token.
    milli_tokens: u64,
    last: Millis,
}

const COST: u64 = 1000;

impl TokenBucket {
    pub fn full(limit: RateLimit, now: Millis) -> TokenBucket {
        TokenBucket {
            milli_tokens: u64::from(limit.burst) * COST,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, limit: RateLimit, now: Millis) -> bool {
        let elapsed_ms = now.as_millis().saturating_sub(self.last.as_millis());
        // `per_second` tokens a second is `per_second` thousandths a millisecond.
        let refill = elapsed_ms.saturating_mul(u64::from(limit.per_second));
        let capacity = u64::from(limit.burst) * COST;
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(capacity);
        self.last = self.last.max(now);
        if self.milli_tokens >= COST {
            self.milli_tokens -= COST;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        burst: 3,
        per_second: 2,
    };

    #[test]
    fn a_burst_up_to_the_limit_passes_and_the_next_is_refused() {
        let now = Millis::from_millis(1_000);
        let mut bucket = TokenBucket::full(LIMIT, now);
        assert!((0..3).all(|_| bucket.try_take(LIMIT, now)));
        assert!(!bucket.try_take(LIMIT, now));
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let start = Millis::from_millis(0);
        let mut bucket = TokenBucket::full(LIMIT, start);
        while bucket.try_take(LIMIT, start) {}
        assert!(!bucket.try_take(LIMIT, Millis::from_millis(499)));
        assert!(bucket.try_take(LIMIT, Millis::from_millis(500)));
        assert!(!bucket.try_take(LIMIT, Millis::from_millis(500)));
    }

    #[test]
    fn a_long_silence_refills_only_up_to_the_burst() {
        let mut bucket = TokenBucket::full(LIMIT, Millis::from_millis(0));
        let later = Millis::from_millis(3_600_000);
        assert!((0..3).all(|_| bucket.try_take(LIMIT, later)));
        assert!(!bucket.try_take(LIMIT, later));
    }
}
