//! Per-buyer and per-client-IP rate limits on the queue endpoints (`governor`), the cap on a
//! buyer's open event streams, and finding the client's IP behind trusted proxies.
//!
//! On sale day a buyer polling in a tight loop, or a bot farm behind one address, must not take
//! the capacity meant for everyone else. Limits answer 429 with `Retry-After`. Memory stays
//! bounded under millions of distinct keys: upkeep calls [`RateLimits::housekeeping`] every
//! second, which drops every key whose bucket has refilled (a key costs memory only while it is
//! actually being limited or was seen within its refill period).
//!
//! `X-Forwarded-For` is believed only when the connection comes from a configured trusted proxy;
//! otherwise anyone could claim any address and escape the per-IP limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashsale_core::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Why a limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Over a rate: try again after `retry_after` (429 `rate_limited`).
    Rate { retry_after: Duration },
    /// The buyer already holds `max` event streams (429 `too_many_streams`).
    Streams { max: u32 },
}

/// An IP network, `addr/prefix` (or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix in {s:?}"))?
            }
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 { 0 } else { bits >> (width - prefix) }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), self.prefix, 32)
                    == masked(u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128) == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// Rate-limit settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitSettings {
    /// Requests per second per buyer on the queue endpoints (burst: twice that); `None`: off.
    pub per_user: Option<NonZeroU32>,
    /// Order attempts per second per buyer (burst: twice that), a budget of their own: a buyer's
    /// polls never cost them an order; `None`: off.
    pub orders_per_user: Option<NonZeroU32>,
    /// Requests per second per client IP (burst: twice that); `None`: off.
    pub per_ip: Option<NonZeroU32>,
    /// Event streams one buyer may hold open on this instance at once; `None`: no limit.
    pub streams_per_user: Option<NonZeroU32>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// Failed proofs of work a client address may send per minute (burst: as many) before its
/// further failures are answered 429 instead of with a fresh challenge: a client guessing or
/// replaying solutions is slowed down, a buyer whose phone took too long is not.
pub const POW_FAILURES_PER_MINUTE: u32 = 10;

/// Priority-code attempts a buyer may make per minute (burst: as many).
pub const CODE_ATTEMPTS_PER_USER_PER_MINUTE: u32 = 5;
/// Priority-code attempts a client address (an IPv6 /64) may make per minute (burst: as many):
/// at most 1,800 guesses an hour against a code space of 2^100.
pub const CODE_ATTEMPTS_PER_IP_PER_MINUTE: u32 = 30;

/// The key a client address is limited under: an IPv4 address itself, an IPv6 address's /64
/// (one subscriber's network: a host hands itself any number of addresses inside it).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// The limiters of one instance.
#[derive(Debug)]
pub struct RateLimits {
    pow_failures: DefaultKeyedRateLimiter<IpAddr>,
    code_attempts_per_user: DefaultKeyedRateLimiter<UserId>,
    code_attempts_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: Option<DefaultKeyedRateLimiter<UserId>>,
    orders_per_user: Option<DefaultKeyedRateLimiter<UserId>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    streams_per_user: Option<NonZeroU32>,
    /// Open event streams per buyer (only buyers with one open).
    streams: Arc<Mutex<HashMap<UserId, u32>>>,
    trusted_proxies: Vec<IpNet>,
    clock: DefaultClock,
}

/// One of a buyer's event streams; gives its place back when the stream ends or is dropped.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<UserId, u32>>>,
    user: UserId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

fn quota(per_second: NonZeroU32) -> Quota {
    let burst = per_second.saturating_mul(NonZeroU32::new(2).expect("2 is not zero"));
    Quota::per_second(per_second).allow_burst(burst)
}

impl RateLimits {
    /// Limiters for `settings`.
    pub fn new(settings: &LimitSettings) -> RateLimits {
        let failures = NonZeroU32::new(POW_FAILURES_PER_MINUTE).expect("not zero");
        RateLimits {
            pow_failures: RateLimiter::keyed(Quota::per_minute(failures)),
            code_attempts_per_user: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(CODE_ATTEMPTS_PER_USER_PER_MINUTE).expect("not zero"),
            )),
            code_attempts_per_ip: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(CODE_ATTEMPTS_PER_IP_PER_MINUTE).expect("not zero"),
            )),
            per_user: settings.per_user.map(|r| RateLimiter::keyed(quota(r))),
            orders_per_user: settings.orders_per_user.map(|r| RateLimiter::keyed(quota(r))),
            per_ip: settings.per_ip.map(|r| RateLimiter::keyed(quota(r))),
            streams_per_user: settings.streams_per_user,
            streams: Arc::default(),
            trusted_proxies: settings.trusted_proxies.clone(),
            clock: DefaultClock::default(),
        }
    }

    /// A place for one more event stream of `user`; 429 `too_many_streams` when they hold as many
    /// as allowed (each stream holds a connection for up to ten minutes: without a cap one buyer
    /// could hold hundreds).
    pub fn open_stream(&self, user: &UserId) -> Result<StreamSlot, Limited> {
        let mut open = self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(user.clone()).or_insert(0);
        if let Some(max) = self.streams_per_user {
            if *count >= max.get() {
                return Err(Limited::Streams { max: max.get() });
            }
        }
        *count += 1;
        Ok(StreamSlot { streams: self.streams.clone(), user: user.clone() })
    }

    /// Counts one queue request of `user` from `ip`; 429 `rate_limited` when either is over its
    /// limit.
    pub fn check(&self, user: &UserId, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.check_against(self.per_user.as_ref(), user, ip)
    }

    /// Counts one order attempt of `user` from `ip`, against the buyer's order budget (not the one
    /// their polls spend) and the client IP's.
    pub fn check_order(&self, user: &UserId, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.check_against(self.orders_per_user.as_ref(), user, ip)
    }

    fn check_against(
        &self,
        per_user: Option<&DefaultKeyedRateLimiter<UserId>>,
        user: &UserId,
        ip: Option<IpAddr>,
    ) -> Result<(), Limited> {
        let refused = |scope: &'static str, wait: Duration| {
            metrics::counter!("rate_limited_total", "scope" => scope).increment(1);
            Limited::Rate { retry_after: wait }
        };
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            limiter.check_key(&address_key(ip)).map_err(|n| refused("ip", n.wait_time_from(self.clock.now())))?;
        }
        if let Some(limiter) = per_user {
            limiter.check_key(user).map_err(|n| refused("user", n.wait_time_from(self.clock.now())))?;
        }
        Ok(())
    }

    /// Counts a refused proof of work from `ip`; 429 `rate_limited` once the address failed more
    /// than [`POW_FAILURES_PER_MINUTE`] in a minute.
    pub fn pow_failed(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        let Some(ip) = ip else { return Ok(()) };
        self.pow_failures.check_key(&address_key(ip)).map_err(|n| {
            metrics::counter!("rate_limited_total", "scope" => "pow_failures").increment(1);
            Limited::Rate { retry_after: n.wait_time_from(self.clock.now()) }
        })
    }

    /// Counts one priority-code attempt of `user` from `ip`: 429 once either is over its own
    /// budget ([`CODE_ATTEMPTS_PER_USER_PER_MINUTE`], [`CODE_ATTEMPTS_PER_IP_PER_MINUTE`]), so codes
    /// cannot be guessed at speed. Always on, whatever the queue's limits.
    pub fn check_code(&self, user: &UserId, ip: Option<IpAddr>) -> Result<(), Limited> {
        let refused = |scope: &'static str, wait: Duration| {
            metrics::counter!("rate_limited_total", "scope" => scope).increment(1);
            Limited::Rate { retry_after: wait }
        };
        if let Some(ip) = ip {
            self.code_attempts_per_ip
                .check_key(&address_key(ip))
                .map_err(|n| refused("code_ip", n.wait_time_from(self.clock.now())))?;
        }
        self.code_attempts_per_user
            .check_key(user)
            .map_err(|n| refused("code_user", n.wait_time_from(self.clock.now())))
    }

    /// Forgets keys whose buckets are full again, so memory follows current traffic only.
    pub fn housekeeping(&self) {
        tidy("pow_failures", Some(&self.pow_failures));
        tidy("code_user", Some(&self.code_attempts_per_user));
        tidy("code_ip", Some(&self.code_attempts_per_ip));
        tidy("user", self.per_user.as_ref());
        tidy("orders_per_user", self.orders_per_user.as_ref());
        tidy("ip", self.per_ip.as_ref());
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    /// address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted(peer) {
            return Some(peer);
        }
        let hops = forwarded_for.unwrap_or("").split(',').rev().map(str::trim);
        for hop in hops {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusted(ip) => continue,
                Ok(ip) => return Some(ip),
                // Garbage in the header: stop believing it here.
                Err(_) => break,
            }
        }
        Some(peer)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }
}

/// Forgets the limiter's full buckets and reports how many keys it still holds, under its own
/// `scope` (one gauge per limiter: written under one name, the limiters would overwrite each other).
fn tidy<K: std::hash::Hash + Eq + Clone>(scope: &'static str, limiter: Option<&DefaultKeyedRateLimiter<K>>) {
    if let Some(limiter) = limiter {
        limiter.retain_recent();
        limiter.shrink_to_fit();
        metrics::gauge!("rate_limiter_keys", "scope" => scope).set(limiter.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: u32, per_ip: u32, proxies: &[&str]) -> RateLimits {
        RateLimits::new(&LimitSettings {
            per_user: NonZeroU32::new(per_user),
            orders_per_user: NonZeroU32::new(2),
            per_ip: NonZeroU32::new(per_ip),
            streams_per_user: NonZeroU32::new(2),
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn a_buyer_holds_at_most_the_allowed_streams_and_gets_each_back_when_it_ends() {
        let limits = limits(5, 0, &[]);
        let (alice, bob) = (UserId::try_from("alice".to_owned()).unwrap(), UserId::try_from("bob".to_owned()).unwrap());
        let first = limits.open_stream(&alice).unwrap();
        let _second = limits.open_stream(&alice).unwrap();
        assert!(matches!(limits.open_stream(&alice), Err(Limited::Streams { max: 2 })));
        let _bobs = limits.open_stream(&bob).expect("another buyer's streams do not count");
        drop(first);
        let _third = limits.open_stream(&alice).expect("a stream that ended gives its place back");
        assert!(limits.open_stream(&alice).is_err());
    }

    #[test]
    fn an_ipv6_subscriber_is_one_address_however_many_it_hands_itself() {
        let limits = limits(1_000, 5, &[]);
        let alice = UserId::try_from("alice".to_owned()).unwrap();
        // 2001:db8:1:2::/64 hands itself a new address for each request: one budget (5/s, burst 10).
        let mut served = 0;
        for host in 1..=50u16 {
            let ip: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
            if limits.check(&alice, Some(ip)).is_ok() {
                served += 1;
            }
        }
        assert_eq!(served, 10);
        // The next /64 is another subscriber; IPv4 addresses stay their own.
        assert!(limits.check(&alice, Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
        assert_eq!(address_key("10.0.0.7".parse().unwrap()), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_address_that_keeps_failing_proofs_of_work_is_slowed_down() {
        let limits = limits(5, 0, &[]);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..POW_FAILURES_PER_MINUTE {
            limits.pow_failed(Some(ip)).unwrap();
        }
        assert!(matches!(limits.pow_failed(Some("2001:db8::2".parse().unwrap())), Err(Limited::Rate { .. })));
        assert!(limits.pow_failed(Some("192.0.2.1".parse().unwrap())).is_ok(), "another address");
    }

    #[test]
    fn polls_never_spend_a_buyers_order_budget() {
        let limits = limits(5, 0, &[]);
        let alice = UserId::try_from("alice".to_owned()).unwrap();
        while limits.check(&alice, None).is_ok() {}
        // Out of polls, the buyer can still order (and retry) within the order budget (2/s, burst 4)...
        for _ in 0..4 {
            limits.check_order(&alice, None).unwrap();
        }
        // ...which is a limit of its own.
        assert!(matches!(limits.check_order(&alice, None), Err(Limited::Rate { .. })));
    }

    #[test]
    fn a_buyer_over_the_limit_is_told_when_to_retry() {
        let limits = limits(5, 0, &[]);
        let alice = UserId::try_from("alice".to_owned()).unwrap();
        let bob = UserId::try_from("bob".to_owned()).unwrap();
        for _ in 0..10 {
            limits.check(&alice, None).unwrap();
        }
        match limits.check(&alice, None) {
            Err(Limited::Rate { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        limits.check(&bob, None).unwrap();
    }

    #[test]
    fn one_address_is_limited_across_buyers() {
        let limits = limits(0, 3, &[]);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for i in 0..6 {
            limits.check(&UserId::try_from(format!("u{i}")).unwrap(), Some(ip)).unwrap();
        }
        assert!(limits.check(&UserId::try_from("u7".to_owned()).unwrap(), Some(ip)).is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let limits = limits(1, 1, &["10.0.0.0/8", "::1"]);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(limits.client_ip(Some(proxy), Some("203.0.113.9, 10.0.0.5")), Some(client));
        assert_eq!(limits.client_ip(Some(stranger), Some("203.0.113.9")), Some(stranger));
        assert_eq!(limits.client_ip(Some(proxy), Some("junk")), Some(proxy));
        assert_eq!(limits.client_ip(Some(proxy), None), Some(proxy));
        assert_eq!(limits.client_ip(None, Some("203.0.113.9")), None);
    }

    #[test]
    fn networks_match_by_prefix() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<IpNet>().unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }

    #[test]
    fn housekeeping_forgets_keys_whose_buckets_refilled() {
        let limits = limits(1000, 0, &[]);
        for i in 0..1000 {
            limits.check(&UserId::try_from(format!("u{i}")).unwrap(), None).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        limits.housekeeping();
        assert_eq!(limits.per_user.as_ref().unwrap().len(), 0);
    }
}
