use sandkeeper_domain::Timestamp;

/// The source of the current time. Use cases read time only through this port.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}
