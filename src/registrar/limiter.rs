//! Failed-authentication limiter: counts failures per key (a source address,
//! a username) in a sliding window and blocks a key that exceeds the limit.
//! Pure: time is passed in. It must not decide what a failure is.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: u64,
    failures: u32,
    blocked_until: u64,
}

/// Per-key failure counting and blocking.
#[derive(Debug)]
pub struct Limiter {
    max_failures: u32,
    window: u64,
    block: u64,
    entries: HashMap<String, Entry>,
}

impl Limiter {
    /// `max_failures` within `window` seconds blocks a key for `block` seconds.
    pub fn new(max_failures: u32, window: u64, block: u64) -> Self {
        Self {
            max_failures,
            window,
            block,
            entries: HashMap::new(),
        }
    }

    /// Whether `key` is blocked at `now` (unix seconds).
    pub fn is_blocked(&self, key: &str, now: u64) -> bool {
        self.entries.get(key).is_some_and(|e| e.blocked_until > now)
    }

    /// Records a failure; returns true when this failure starts a block.
    pub fn fail(&mut self, key: &str, now: u64) -> bool {
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: 0,
        });
        if now >= e.window_start + self.window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= self.max_failures && e.blocked_until <= now {
            e.blocked_until = now + self.block;
            e.failures = 0;
            e.window_start = now;
            return true;
        }
        false
    }

    /// Forgets entries that neither block nor count any more.
    pub fn prune(&mut self, now: u64) {
        let window = self.window;
        self.entries
            .retain(|_, e| e.blocked_until > now || now < e.window_start + window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_and_releases() {
        let mut l = Limiter::new(3, 60, 300);
        assert!(!l.fail("ip:1", 0));
        assert!(!l.fail("ip:1", 10));
        assert!(l.fail("ip:1", 20));
        assert!(l.is_blocked("ip:1", 21));
        assert!(!l.is_blocked("ip:2", 21));
        assert!(l.is_blocked("ip:1", 319));
        assert!(!l.is_blocked("ip:1", 320));
        l.prune(1000);
        assert!(l.entries.is_empty());
    }

    #[test]
    fn window_slides() {
        let mut l = Limiter::new(3, 60, 300);
        l.fail("u", 0);
        l.fail("u", 50);
        assert!(!l.fail("u", 61), "window restarted at 61");
        assert!(!l.is_blocked("u", 62));
    }
}
