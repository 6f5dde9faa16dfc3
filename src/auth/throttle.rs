//! Throttling sign-in and registration, per account and per client address.
//!
//! Each key gets a burst of `max` attempts that refills evenly over the window (GCRA,
//! through governor). Every attempt counts, successful or not: that keeps the check
//! before the password verification, so a throttled guess costs us no argon2 work and
//! tells the attacker nothing. Unknown emails are throttled like known ones (the key
//! is the email's blind index), so throttling reveals no accounts either.
//!
//! State is per instance: with N instances behind a balancer an attacker gets at most
//! N times the limit. Documented in the README.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Error;

pub struct LoginThrottle {
    per_account: DefaultKeyedRateLimiter<Vec<u8>>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("accounts_tracked", &self.per_account.len())
            .field("addresses_tracked", &self.per_ip.len())
            .finish()
    }
}

fn quota(max: u32, window: Duration) -> Quota {
    let max = NonZeroU32::new(max.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = (window / max.get()).max(Duration::from_millis(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(max)
}

impl LoginThrottle {
    pub fn new(max_per_account: u32, max_per_ip: u32, window: Duration) -> LoginThrottle {
        LoginThrottle {
            per_account: RateLimiter::keyed(quota(max_per_account, window)),
            per_ip: RateLimiter::keyed(quota(max_per_ip, window)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts an attempt from `ip`; 429 when the address is over its limit.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        match ip {
            Some(ip) => self
                .per_ip
                .check_key(&ip)
                .map_err(|not_until| self.too_many(not_until.wait_time_from(self.clock.now()))),
            None => Ok(()),
        }
    }

    /// Counts an attempt on the account keyed by `account_key` from `ip`.
    pub fn check(&self, account_key: &[u8], ip: Option<IpAddr>) -> Result<(), Error> {
        self.check_ip(ip)?;
        self.per_account
            .check_key(&account_key.to_vec())
            .map_err(|not_until| self.too_many(not_until.wait_time_from(self.clock.now())))
    }

    fn too_many(&self, wait: Duration) -> Error {
        metrics::counter!("auth_throttled_total").increment(1);
        Error::TooManyRequests {
            retry_after: wait.max(Duration::from_secs(1)),
        }
    }

    /// Forgets keys whose limits have fully refilled, so memory stays bounded.
    pub fn prune(&self) {
        self.per_account.retain_recent();
        self.per_ip.retain_recent();
        self.per_account.shrink_to_fit();
        self.per_ip.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_past_the_limit_is_refused_with_a_wait() {
        let throttle = LoginThrottle::new(3, 100, Duration::from_secs(900));
        for _ in 0..3 {
            throttle.check(b"ada", None).unwrap();
        }
        match throttle.check(b"ada", None) {
            Err(Error::TooManyRequests { retry_after }) => {
                assert!(retry_after >= Duration::from_secs(1));
                assert!(retry_after <= Duration::from_secs(300));
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Another account is unaffected.
        throttle.check(b"bob", None).unwrap();
    }

    #[test]
    fn one_address_is_limited_across_accounts() {
        let throttle = LoginThrottle::new(100, 2, Duration::from_secs(60));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        throttle.check(b"a", Some(ip)).unwrap();
        throttle.check(b"b", Some(ip)).unwrap();
        assert!(throttle.check(b"c", Some(ip)).is_err());
    }
}
