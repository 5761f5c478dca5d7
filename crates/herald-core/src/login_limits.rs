//! Limits on guessing passwords and creating accounts. Each failed login counts against the account it named
//! and against the client's address; past a few free failures, each further failure locks that key for a
//! delay that doubles up to a ceiling. So one account guessed from many addresses is slowed (the account's
//! count), and many accounts tried from one address, a password spray, are slowed too (the address's count,
//! with more free failures since an office behind one address has many users). A success clears the
//! account's count. Account creation is a token bucket per address. A refused attempt never reaches the
//! password hash, so a flood of them costs no hashing.
//!
//! The counts live in this node's memory: behind a load balancer, attempts spread over N nodes get up to N
//! times the allowance (docs/operations.md says so).

use crate::CoreError;
use crate::footprint::Footprint;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::keyed::DefaultKeyedStateStore};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The configured limits.
#[derive(Clone, Debug)]
pub struct LoginLimitsConfig {
    /// Failed logins an account may have before each further one locks it.
    pub account_free_failures: u32,
    /// Failed logins an address may have (any accounts) before each further one locks it.
    pub address_free_failures: u32,
    /// The first lock's length; each further failure doubles it.
    pub first_delay: Duration,
    /// The longest lock.
    pub max_delay: Duration,
    /// Failures are forgotten this long after the last one.
    pub forget_after: Duration,
    /// Accounts an address may create per hour.
    pub registrations_per_hour: u32,
}

impl Default for LoginLimitsConfig {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            address_free_failures: 20,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            registrations_per_hour: 20,
        }
    }
}

/// Keys kept per table before the forgotten ones are dropped early (the upkeep drops them every 10 s).
const MAX_KEYS: usize = 200_000;

pub struct LoginLimits {
    config: LoginLimitsConfig,
    accounts: Failures<String>,
    addresses: Failures<IpAddr>,
    registrations: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>,
}

impl LoginLimits {
    pub fn new(config: LoginLimitsConfig) -> Self {
        let per_hour = NonZeroU32::new(config.registrations_per_hour).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(3600) / per_hour.get())
            .unwrap_or_else(|| Quota::per_hour(per_hour))
            .allow_burst(per_hour);
        Self {
            accounts: Failures::new(config.account_free_failures),
            addresses: Failures::new(config.address_free_failures),
            registrations: RateLimiter::keyed(quota),
            config,
        }
    }

    /// May `address` try to log in as `username` now?
    pub fn check_login(&self, username: &str, address: IpAddr) -> Result<(), CoreError> {
        self.check_login_at(&account_key(username), address_key(address), Instant::now())
    }

    /// A login as `username` from `address` failed (wrong password, or no such user).
    pub fn login_failed(&self, username: &str, address: IpAddr) {
        let now = Instant::now();
        self.accounts.failed(account_key(username), now, &self.config);
        self.addresses.failed(address_key(address), now, &self.config);
    }

    /// A login as `username` succeeded: its account's failures are forgotten (not its address's).
    pub fn login_succeeded(&self, username: &str) {
        self.accounts.clear(&account_key(username));
    }

    /// Takes one account creation from `address`'s allowance, or says how long to wait.
    pub fn check_registration(&self, address: IpAddr) -> Result<(), CoreError> {
        use governor::clock::Clock;
        self.registrations.check_key(&address_key(address)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            CoreError::RateLimited { retry_after_ms: wait.as_millis().max(1) as u64 }
        })
    }

    /// Drops what is forgotten.
    pub fn purge(&self) {
        let now = Instant::now();
        self.accounts.purge(now, self.config.forget_after);
        self.addresses.purge(now, self.config.forget_after);
        self.registrations.retain_recent();
        self.registrations.shrink_to_fit();
    }

    pub fn footprints(&self) -> [Footprint; 3] {
        let registrations = self.registrations.len();
        [
            self.accounts.footprint("login_failures_by_account"),
            self.addresses.footprint("login_failures_by_address"),
            Footprint {
                structure: "registration_buckets",
                entries: registrations,
                bytes: registrations * (size_of::<IpAddr>() + 16),
                bound: usize::MAX,
            },
        ]
    }

    fn check_login_at(&self, account: &String, address: IpAddr, now: Instant) -> Result<(), CoreError> {
        let wait = self.accounts.locked_for(account, now).max(self.addresses.locked_for(&address, now));
        if wait.is_zero() {
            return Ok(());
        }
        metrics::counter!("login_attempts_refused_total").increment(1);
        Err(CoreError::RateLimited { retry_after_ms: wait.as_millis().max(1) as u64 })
    }
}

/// Usernames compare case-insensitively, as accounts do.
fn account_key(username: &str) -> String {
    username.trim().to_lowercase()
}

/// An IPv6 client can pick any address of its /64: it counts as one.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Failure counts by key.
struct Failures<K> {
    free: u32,
    entries: Mutex<HashMap<K, Record>>,
}

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Instant,
}

impl<K: Eq + Hash + Clone> Failures<K> {
    fn new(free: u32) -> Self {
        Self { free, entries: Mutex::new(HashMap::new()) }
    }

    fn locked_for(&self, key: &K, now: Instant) -> Duration {
        self.lock().get(key).map_or(Duration::ZERO, |r| r.locked_until.saturating_duration_since(now))
    }

    fn failed(&self, key: K, now: Instant, config: &LoginLimitsConfig) {
        let mut entries = self.lock();
        if entries.len() >= MAX_KEYS && !entries.contains_key(&key) {
            entries.retain(|_, r| now.saturating_duration_since(r.last_failure) < config.forget_after);
            if entries.len() >= MAX_KEYS {
                // Still full of recent failures: an attack wider than the table. Keep the locked keys.
                entries.retain(|_, r| r.locked_until > now);
            }
        }
        let record = entries.entry(key).or_insert(Record { failures: 0, last_failure: now, locked_until: now });
        if now.saturating_duration_since(record.last_failure) >= config.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures > self.free {
            record.locked_until = now + delay(record.failures - self.free, config);
        }
    }

    fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    fn purge(&self, now: Instant, forget_after: Duration) {
        let mut entries = self.lock();
        entries.retain(|_, r| r.locked_until > now || now.saturating_duration_since(r.last_failure) < forget_after);
        if entries.capacity() > 2 * entries.len().max(16) {
            entries.shrink_to_fit();
        }
    }

    fn footprint(&self, structure: &'static str) -> Footprint {
        let entries = self.lock();
        Footprint {
            structure,
            entries: entries.len(),
            bytes: crate::footprint::hash_map_bytes(&*entries),
            bound: MAX_KEYS,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Record>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lock after the `over`-th failure past the free ones: the first delay, doubled each time, capped.
fn delay(over: u32, config: &LoginLimitsConfig) -> Duration {
    let doublings = over.saturating_sub(1).min(30);
    config.first_delay.saturating_mul(1 << doublings).min(config.max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits::new(LoginLimitsConfig {
            account_free_failures: 3,
            address_free_failures: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            registrations_per_hour: 2,
        })
    }

    fn fail(l: &LoginLimits, account: &str, address: IpAddr, now: Instant) {
        l.accounts.failed(account_key(account), now, &l.config);
        l.addresses.failed(address_key(address), now, &l.config);
    }

    fn wait(l: &LoginLimits, account: &str, address: IpAddr, now: Instant) -> Option<u64> {
        match l.check_login_at(&account_key(account), address_key(address), now) {
            Ok(()) => None,
            Err(CoreError::RateLimited { retry_after_ms }) => Some(retry_after_ms),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_account_is_locked_for_doubling_delays_after_its_free_failures() {
        let l = limits();
        let t = Instant::now();
        // Each failure from another address, so only the account's count matters.
        let addr = |i: u8| IpAddr::from([10, 0, 0, i]);
        for i in 0..3 {
            assert_eq!(wait(&l, "Alice", addr(i), t), None, "free failure {i}");
            fail(&l, "alice", addr(i), t);
        }
        assert_eq!(wait(&l, "alice", addr(9), t), None, "three free failures");
        fail(&l, "alice", addr(3), t);
        assert_eq!(wait(&l, "ALICE ", addr(9), t), Some(1000), "the 4th failure locks for the first delay");
        assert_eq!(wait(&l, "alice", addr(9), t + Duration::from_secs(1)), None, "and only that long");
        let t2 = t + Duration::from_secs(1);
        fail(&l, "alice", addr(4), t2);
        assert_eq!(wait(&l, "alice", addr(9), t2), Some(2000), "then twice as long");
        for i in 5..20 {
            fail(&l, "alice", addr(i), t2);
        }
        assert_eq!(wait(&l, "alice", addr(99), t2), Some(60_000), "capped");
        assert_eq!(wait(&l, "bob", addr(99), t2), None, "other accounts are not locked");
        l.login_succeeded("Alice");
        assert_eq!(wait(&l, "alice", addr(99), t2), None, "a success clears the account");
    }

    #[test]
    fn a_spray_from_one_address_is_slowed_across_accounts() {
        let l = limits();
        let t = Instant::now();
        let attacker = IpAddr::from([192, 0, 2, 1]);
        for i in 0..5 {
            fail(&l, &format!("user{i}"), attacker, t);
        }
        assert_eq!(wait(&l, "user99", attacker, t), None, "five free failures for the address");
        fail(&l, "user5", attacker, t);
        assert_eq!(wait(&l, "user100", attacker, t), Some(1000), "a fresh account from that address waits");
        assert_eq!(wait(&l, "user100", IpAddr::from([192, 0, 2, 2]), t), None, "another address does not");
        // An IPv6 client moving within its /64 is the same address.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        for i in 0..6 {
            fail(&l, &format!("v6-{i}"), v6(i), t);
        }
        assert!(wait(&l, "v6-x", v6(1000), t).is_some(), "one /64 counts as one address");
    }

    #[test]
    fn failures_are_forgotten_and_purged() {
        let l = limits();
        let t = Instant::now();
        let addr = IpAddr::from([10, 1, 1, 1]);
        for _ in 0..4 {
            fail(&l, "carol", addr, t);
        }
        assert!(wait(&l, "carol", addr, t).is_some());
        let later = t + Duration::from_secs(601);
        assert_eq!(wait(&l, "carol", addr, later), None);
        fail(&l, "carol", addr, later);
        assert_eq!(wait(&l, "carol", addr, later), None, "the count started over after forget_after");
        l.accounts.purge(later + Duration::from_secs(601), l.config.forget_after);
        assert_eq!(l.accounts.lock().len(), 0, "purged");
    }

    #[test]
    fn registrations_are_a_bucket_per_address() {
        let l = limits();
        let a = IpAddr::from([203, 0, 113, 7]);
        assert!(l.check_registration(a).is_ok());
        assert!(l.check_registration(a).is_ok());
        match l.check_registration(a) {
            Err(CoreError::RateLimited { retry_after_ms }) => assert!(retry_after_ms > 1_000_000, "{retry_after_ms}"),
            other => panic!("the third in an hour must wait: {other:?}"),
        }
        assert!(l.check_registration(IpAddr::from([203, 0, 113, 8])).is_ok());
    }
}
