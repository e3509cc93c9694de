use std::sync::Mutex;

use sandkeeper_domain::Timestamp;

use crate::Clock;

/// A clock that says what it is told.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(now: Timestamp) -> Self {
        Self { now: Mutex::new(now) }
    }

    pub fn set(&self, now: Timestamp) {
        *self.now.lock().unwrap() = now;
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        *self.now.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap()
    }
}
