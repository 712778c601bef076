//! Token buckets that bound a zone's traffic in one direction: bytes per
//! second and frames per second, each a bucket of `size` tokens refilled
//! from empty to full in `refill_ms` (Firecracker's rate limiter model).
//!
//! A frame is charged after it moved (it was already read into guest memory,
//! or written to the TAP), so a bucket may go into debt by at most one frame;
//! while any bucket is in debt the direction waits, and [`Limiter::blocked`]
//! says for how long. Over any interval the zone moves at most
//! `size + rate × interval + one frame`.

use std::time::{Duration, Instant};

/// One bucket: `size` tokens, refilled from empty to full in `refill_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// Tokens when full (the burst).
    pub size: u64,
    /// Milliseconds from empty to full.
    pub refill_ms: u64,
}

/// The limits of one direction; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Bytes (the virtio header included).
    pub bytes: Option<Bucket>,
    /// Frames.
    pub frames: Option<Bucket>,
}

/// A limit that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a rate-limit bucket needs a size and a refill time of at least 1 (got size {size}, refill_ms {refill_ms})")]
pub struct BucketError {
    size: u64,
    refill_ms: u64,
}

impl RateLimit {
    /// Checks both buckets.
    pub fn validate(&self) -> Result<(), BucketError> {
        for b in [self.bytes, self.frames].into_iter().flatten() {
            // Bounds keep `elapsed × size` inside u128 arithmetic and a refill
            // interval representable.
            if b.size == 0 || b.refill_ms == 0 || b.size > 1 << 48 || b.refill_ms > 1 << 32 {
                return Err(BucketError { size: b.size, refill_ms: b.refill_ms });
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct State {
    bucket: Bucket,
    /// Tokens now; negative is debt.
    budget: i64,
    /// When `budget` was last brought up to date.
    last: Instant,
}

impl State {
    fn new(bucket: Bucket, now: Instant) -> Self {
        Self { bucket, budget: bucket.size as i64, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let period = u128::from(self.bucket.refill_ms) * 1_000_000;
        let tokens = elapsed * u128::from(self.bucket.size) / period;
        if tokens == 0 {
            return;
        }
        // Advance `last` by the time those whole tokens took, keeping the remainder.
        let used = tokens * period / u128::from(self.bucket.size);
        self.last += Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
        let size = self.bucket.size as i64;
        self.budget = i64::try_from(i128::from(self.budget) + i128::try_from(tokens).unwrap_or(i128::MAX))
            .unwrap_or(size)
            .min(size);
        if self.budget == size {
            self.last = now;
        }
    }

    /// How long until the debt is paid.
    fn wait(&self) -> Option<Duration> {
        if self.budget >= 0 {
            return None;
        }
        let owed = u128::from(self.budget.unsigned_abs());
        let ns = (owed * u128::from(self.bucket.refill_ms) * 1_000_000).div_ceil(u128::from(self.bucket.size));
        Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)).max(Duration::from_millis(1)))
    }
}

/// The buckets of one direction, running.
#[derive(Debug)]
pub struct Limiter {
    bytes: Option<State>,
    frames: Option<State>,
}

impl Limiter {
    /// Full buckets for `limit` (validated by the caller).
    pub fn new(limit: RateLimit) -> Self {
        let now = Instant::now();
        Self { bytes: limit.bytes.map(|b| State::new(b, now)), frames: limit.frames.map(|b| State::new(b, now)) }
    }

    /// Whether the direction must wait, and how long, at `now`.
    pub fn blocked(&mut self, now: Instant) -> Option<Duration> {
        let mut wait = None;
        for s in [self.bytes.as_mut(), self.frames.as_mut()].into_iter().flatten() {
            s.refill(now);
            wait = wait.max(s.wait());
        }
        wait
    }

    /// Charges one frame of `bytes`.
    pub fn charge(&mut self, bytes: usize) {
        if let Some(s) = self.bytes.as_mut() {
            s.budget = s.budget.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(s) = self.frames.as_mut() {
            s.budget = s.budget.saturating_sub(1);
        }
    }

    /// Whether no bucket is configured.
    pub fn unlimited(&self) -> bool {
        self.bytes.is_none() && self.frames.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        // 1000 bytes per 100 ms.
        let mut l = Limiter::new(RateLimit { bytes: Some(Bucket { size: 1000, refill_ms: 100 }), frames: None });
        l.bytes.as_mut().unwrap().last = t0;
        assert_eq!(l.blocked(t0), None);
        l.charge(600);
        assert_eq!(l.blocked(t0), None);
        l.charge(600);
        // 200 bytes of debt: 20 ms.
        assert_eq!(l.blocked(t0), Some(Duration::from_millis(20)));
        assert_eq!(l.blocked(t0 + Duration::from_millis(10)), Some(Duration::from_millis(10)));
        assert_eq!(l.blocked(t0 + Duration::from_millis(20)), None);
        // Never more than full.
        assert_eq!(l.blocked(t0 + Duration::from_secs(10)), None);
        assert_eq!(l.bytes.as_ref().unwrap().budget, 1000);
    }

    #[test]
    fn frames_and_bytes_both_bind_and_the_rate_holds_over_time() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RateLimit {
            bytes: Some(Bucket { size: 1 << 20, refill_ms: 1000 }),
            frames: Some(Bucket { size: 10, refill_ms: 1000 }),
        });
        for s in [l.bytes.as_mut(), l.frames.as_mut()].into_iter().flatten() {
            s.last = t0;
        }
        // Small frames: the frame bucket binds. Simulate 5 s of a sender that
        // sends whenever allowed; it moves at most 10 + 10/s × 5 s + 1 frames.
        let mut now = t0;
        let mut sent = 0;
        while now < t0 + Duration::from_secs(5) {
            match l.blocked(now) {
                None => {
                    l.charge(64);
                    sent += 1;
                }
                Some(w) => now += w,
            }
        }
        assert!((55..=61).contains(&sent), "{sent} frames in 5 s");
    }

    #[test]
    fn unusable_buckets_are_refused() {
        assert!(RateLimit { bytes: Some(Bucket { size: 0, refill_ms: 1 }), frames: None }.validate().is_err());
        assert!(RateLimit { bytes: None, frames: Some(Bucket { size: 1, refill_ms: 0 }) }.validate().is_err());
        assert!(RateLimit::default().validate().is_ok());
        assert!(Limiter::new(RateLimit::default()).unlimited());
    }
}
