//! A timer a loop of the runtime keeps across its wakeups (the WebRTC
//! task, each call's media loop), moved to the loop's next deadline.
//!
//! Owns only the tokio timer; what the deadline is, each loop decides.

use std::time::Instant;

/// One timer a media loop keeps across its wakeups: moving it costs less
/// than a new timer at every packet (registered in tokio's timer wheel,
/// then dropped). Unset, it waits thirty years, as tokio's own "never"
/// does: a deadline that could pass while the process runs would, once
/// passed, leave the alarm ringing at every later wakeup.
pub(super) struct Alarm {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    unset: tokio::time::Instant,
}

impl Alarm {
    /// An alarm set for nothing.
    pub(super) fn new() -> Self {
        let unset = tokio::time::Instant::now() + std::time::Duration::from_secs(30 * 365 * 86_400);
        Self {
            sleep: Box::pin(tokio::time::sleep_until(unset)),
            unset,
        }
    }

    /// The alarm set for `at` (or for nothing): await it to wait until then.
    pub(super) fn at(
        &mut self,
        at: Option<Instant>,
    ) -> &mut std::pin::Pin<Box<tokio::time::Sleep>> {
        let at = at.map_or(self.unset, Into::into);
        if self.sleep.deadline() != at {
            self.sleep.as_mut().reset(at);
        }
        &mut self.sleep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    /// Whether `alarm`, set for `at`, rings within `within`.
    async fn rings(alarm: &mut Alarm, at: Option<Instant>, within: Duration) -> bool {
        timeout(within, alarm.at(at)).await.is_ok()
    }

    #[tokio::test]
    async fn an_alarm_rings_when_due_and_can_be_moved_after_ringing() {
        let mut alarm = Alarm::new();
        let short = Duration::from_millis(30);
        assert!(!rings(&mut alarm, None, short).await, "unset, it waits");
        let due = Instant::now() + Duration::from_millis(20);
        assert!(rings(&mut alarm, Some(due), Duration::from_secs(5)).await);
        assert!(Instant::now() >= due, "not before it is due");
        // Rung, then moved later or unset: it waits again.
        let later = Instant::now() + Duration::from_secs(60);
        assert!(!rings(&mut alarm, Some(later), short).await);
        assert!(!rings(&mut alarm, None, short).await);
        // A deadline already past rings at once.
        assert!(rings(&mut alarm, Some(Instant::now()), short).await);
    }
}
