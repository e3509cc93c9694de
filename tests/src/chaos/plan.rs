//! What a run does, and the seeded generator that draws its plan.

use std::time::{Duration, SystemTime};

/// What one run does.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub cycles: usize,
    /// The chats the workers ask for; the same ones in every cycle, so that sessions outlive
    /// the kills and the next cycle reuses or replaces them.
    pub chats: usize,
    /// Workers per chat: more than one makes calls for one chat race.
    pub workers_per_chat: usize,
    pub seed: u64,
    /// `--ttl` of the servers (requests also ask for 1 to 3 s).
    pub ttl: Duration,
    /// `--orphan-grace` of the servers and of `sandkeeper maintain` (at least 1 s).
    pub orphan_grace: Duration,
    /// The latest moment of the kill after the load started.
    pub longest_load: Duration,
}

impl ChaosConfig {
    /// The full run of `cargo xtask chaos`.
    pub fn full(seed: u64) -> Self {
        Self {
            cycles: 12,
            chats: 6,
            workers_per_chat: 2,
            seed,
            ttl: Duration::from_secs(2),
            orphan_grace: Duration::from_secs(1),
            longest_load: Duration::from_secs(3),
        }
    }

    /// The short run of the black-box suite: a few cycles, both recovery paths.
    pub fn short(seed: u64) -> Self {
        Self { cycles: 3, chats: 4, longest_load: Duration::from_millis(2500), ..Self::full(seed) }
    }
}

/// The seed of `SANDKEEPER_CHAOS_SEED`, else a fresh one.
pub fn seed_from_env() -> u64 {
    std::env::var("SANDKEEPER_CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.trim().parse().ok())
        .unwrap_or_else(fresh_seed)
}

/// A seed from the clock and the process id; printed by every run, so any run can be replayed.
pub fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    SeededRng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// A small deterministic generator (SplitMix64): the same seed gives the same plan on every
/// machine and every version of every crate.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration in `low..=high`, to the millisecond.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }
}

/// A UUID drawn from the generator, so that a seed names the same chats.
pub(super) fn uuid_from(rng: &mut SeededRng) -> String {
    let high = u128::from(rng.next_u64()) << 64;
    uuid::Builder::from_random_bytes((high | u128::from(rng.next_u64())).to_be_bytes())
        .into_uuid()
        .to_string()
}

/// A duration as sandkeeper's flags take it.
pub(super) fn duration_arg(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_replays_a_seed() {
        let first: Vec<u64> = (0..5).scan(SeededRng::new(42), |r, _| Some(r.next_u64())).collect();
        let again: Vec<u64> = (0..5).scan(SeededRng::new(42), |r, _| Some(r.next_u64())).collect();
        let other: Vec<u64> = (0..5).scan(SeededRng::new(43), |r, _| Some(r.next_u64())).collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
        let mut rng = SeededRng::new(7);
        for _ in 0..1000 {
            let d = rng.between(Duration::from_millis(300), Duration::from_millis(500));
            assert!((Duration::from_millis(300)..=Duration::from_millis(500)).contains(&d));
        }
    }
}
