//! The restart rule of every supervised child, the source and each publisher: wait
//! before starting it again, twice as long after each failure up to a cap, and start
//! afresh after a run that lasted. Pure: the caller says how long a run lasted.
use std::time::Duration;

/// The rule's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run longer than this earns the first delay again.
    pub fresh_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(250),
            max: Duration::from_secs(10),
            fresh_after: Duration::from_secs(10),
        }
    }
}

/// One child's restarts under a [`Backoff`].
#[derive(Clone, Debug)]
pub struct Retries {
    rule: Backoff,
    next: Duration,
}

impl Retries {
    /// A child that has not failed yet.
    pub fn new(rule: Backoff) -> Self {
        Retries {
            rule,
            next: rule.min,
        }
    }

    /// A run that lasted `ran` ended: a long one earns a fresh start.
    pub fn ended(&mut self, ran: Duration) {
        if ran > self.rule.fresh_after {
            self.next = self.rule.min;
        }
    }

    /// The delay before the next start; the one after it is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.rule.max);
        delay
    }

    /// The longest delay, for a child refused by what it talks to (which will not
    /// change its mind soon, and may be counting attempts).
    pub fn longest(&mut self) -> Duration {
        self.next = self.rule.max;
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_rule_as_a_table() {
        let rule = Backoff::default();
        let quick = 100 * MS;
        let long = 11_000 * MS;
        // (what happened, the delay before the next start)
        let steps: &[(&str, Duration, Duration)] = &[
            ("fails at once", quick, 250 * MS),
            ("again", quick, 500 * MS),
            ("again", quick, 1_000 * MS),
            ("again", quick, 2_000 * MS),
            ("again", quick, 4_000 * MS),
            ("again", quick, 8_000 * MS),
            ("capped", quick, 10_000 * MS),
            ("capped", quick, 10_000 * MS),
            ("a run that lasted: fresh", long, 250 * MS),
            ("doubles again", quick, 500 * MS),
        ];
        let mut retries = Retries::new(rule);
        for &(what, ran, delay) in steps {
            retries.ended(ran);
            assert_eq!(retries.next_delay(), delay, "{what}");
        }
    }

    #[test]
    fn a_refusal_waits_longest_and_stays_there_until_a_run_lasts() {
        let mut retries = Retries::new(Backoff::default());
        retries.ended(MS);
        assert_eq!(retries.longest(), Duration::from_secs(10));
        retries.ended(MS);
        assert_eq!(retries.next_delay(), Duration::from_secs(10));
        retries.ended(Duration::from_secs(60));
        assert_eq!(retries.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn a_run_of_exactly_the_threshold_is_not_long() {
        let rule = Backoff::default();
        let mut retries = Retries::new(rule);
        retries.next_delay();
        retries.ended(rule.fresh_after);
        assert_eq!(retries.next_delay(), Duration::from_millis(500));
    }
}
