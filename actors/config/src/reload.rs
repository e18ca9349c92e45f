//! When to re-read a file: after its directory has been quiet for a while, free of I/O (time
//! passed in).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Per source, when its pending re-read is due: `quiet` after the last event, but no later
/// than `quiet × 10` after the first, so a file written without pause is still read.
#[derive(Debug)]
pub(crate) struct Debounce {
    quiet: Duration,
    pending: BTreeMap<usize, (Instant, Instant)>,
}

impl Debounce {
    /// Waits for `quiet` without events.
    pub(crate) fn new(quiet: Duration) -> Self {
        Debounce {
            quiet,
            pending: BTreeMap::new(),
        }
    }

    /// How often [`due`](Debounce::due) should be asked.
    pub(crate) fn check_every(&self) -> Duration {
        (self.quiet / 4).max(Duration::from_millis(5))
    }

    /// An event for `source` at `now`.
    pub(crate) fn event(&mut self, source: usize, now: Instant) {
        self.pending
            .entry(source)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    /// The sources due for a re-read at `now` (each once per burst of events).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<usize> {
        let quiet = self.quiet;
        let mut out = Vec::new();
        self.pending.retain(|source, (first, last)| {
            let ready = now >= *last + quiet || now >= *first + quiet * 10;
            if ready {
                out.push(*source);
            }
            !ready
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_events_is_read_once_after_it_is_quiet() {
        let mut debounce = Debounce::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        debounce.event(0, t0);
        debounce.event(0, ms(60));
        debounce.event(1, ms(60));
        assert!(debounce.due(ms(120)).is_empty(), "quiet for only 60 ms");
        assert_eq!(debounce.due(ms(160)), [0, 1]);
        assert!(debounce.due(ms(500)).is_empty(), "once");
    }

    #[test]
    fn a_file_written_without_pause_is_read_all_the_same() {
        let mut debounce = Debounce::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let mut read = 0;
        for n in 0..200u64 {
            let now = t0 + Duration::from_millis(n * 50);
            debounce.event(0, now);
            read += debounce.due(now).len();
        }
        assert!(read >= 9, "read {read} times in 10 s of constant writes");
    }
}
