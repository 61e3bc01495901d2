//! When to ask the source for a keyframe: a viewer that joined with a long GOP, or
//! whose queue overflowed, needs one; the source is asked at most once per interval,
//! a request inside it is kept and granted when it ends (never lost: a viewer
//! waiting for a keyframe would otherwise wait a whole GOP), and a keyframe that
//! comes by itself answers it. Sources that cannot make one are not asked. Pure:
//! every event comes with its time.
use std::time::{Duration, Instant};

use crate::metric::Series;

/// Keyframe requests, by outcome.
pub const KEYFRAME_REQUESTS: Series = Series::counter(
    "nalcast_keyframe_requests_total",
    "keyframes viewers needed, by what became of the request: sent to the source, \
     deferred (asked again too soon), unsupported (the source cannot make one), \
     no_source",
)
.labelled("outcome", &KeyframeOutcome::LABELS)
.per_stream();

/// What became of a request for a keyframe (`nalcast_keyframe_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyframeOutcome {
    /// Passed to the source, which makes one.
    Sent,
    /// Asked again too soon: kept, and sent when the interval ends (unless the
    /// source sends a keyframe by itself first).
    Deferred,
    /// The source cannot make keyframes on demand: viewers wait for its next one.
    Unsupported,
    /// No source is running: the next one starts with a keyframe anyway.
    NoSource,
}

impl KeyframeOutcome {
    /// Every outcome, as the metric labels them.
    pub const LABELS: [&'static str; 4] = [
        KeyframeOutcome::Sent.label(),
        KeyframeOutcome::Deferred.label(),
        KeyframeOutcome::Unsupported.label(),
        KeyframeOutcome::NoSource.label(),
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            KeyframeOutcome::Sent => "sent",
            KeyframeOutcome::Deferred => "deferred",
            KeyframeOutcome::Unsupported => "unsupported",
            KeyframeOutcome::NoSource => "no_source",
        }
    }

    /// Counts it in `nalcast_keyframe_requests_total` of `stream`.
    pub fn count_in(self, stream: &crate::metric::StreamLabel) {
        KEYFRAME_REQUESTS
            .count_as_in(stream, self.label())
            .increment(1);
    }
}

/// Whether the running source can make a keyframe when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Maker {
    NoSource,
    Unable,
    Able,
}

/// The request policy's state.
#[derive(Clone, Debug)]
pub struct KeyframePolicy {
    min_interval: Duration,
    maker: Maker,
    /// A keyframe was asked for while the last request was too recent.
    pending: bool,
    /// When the source was last asked.
    last_request: Option<Instant>,
}

impl KeyframePolicy {
    /// No source yet; the source is asked at most once per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        KeyframePolicy {
            min_interval,
            maker: Maker::NoSource,
            pending: false,
            last_request: None,
        }
    }

    /// A source starts, able to make keyframes on demand or not. A new encoder
    /// starts with a keyframe: nothing asked of the last one stands.
    pub fn source_started(&mut self, on_demand: bool) {
        self.maker = if on_demand {
            Maker::Able
        } else {
            Maker::Unable
        };
        self.pending = false;
    }

    /// The source is gone.
    pub fn source_lost(&mut self) {
        self.maker = Maker::NoSource;
    }

    /// Whether the running source makes keyframes on demand.
    pub fn on_demand(&self) -> bool {
        self.maker == Maker::Able
    }

    /// A viewer needs a keyframe at `now`. [`KeyframeOutcome::Sent`]: ask the
    /// source now.
    pub fn request(&mut self, now: Instant) -> KeyframeOutcome {
        match self.maker {
            Maker::NoSource => KeyframeOutcome::NoSource,
            Maker::Unable => KeyframeOutcome::Unsupported,
            Maker::Able => {
                self.pending = true;
                if self.grant(now) {
                    KeyframeOutcome::Sent
                } else {
                    KeyframeOutcome::Deferred
                }
            }
        }
    }

    /// An access unit arrived at `now`: a keyframe answers what was pending; after
    /// another, whether a deferred request is due to go to the source now.
    pub fn frame(&mut self, keyframe: bool, now: Instant) -> bool {
        if keyframe {
            self.pending = false;
            return false;
        }
        self.grant(now)
    }

    /// Lets the pending request go unless the last one is too recent.
    fn grant(&mut self, now: Instant) -> bool {
        let recent = self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < self.min_interval);
        if !self.pending || recent {
            return false;
        }
        self.pending = false;
        self.last_request = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyframeOutcome::*;

    /// One event and what the policy answers: a request's outcome, or whether a
    /// frame lets a deferred request go.
    enum Event {
        Started(bool),
        Lost,
        Request(KeyframeOutcome),
        Delta(bool),
        Key,
    }
    use Event::*;

    fn run(steps: &[(u64, Event)]) {
        let t0 = Instant::now();
        let mut policy = KeyframePolicy::new(Duration::from_millis(1000));
        for (i, (ms, event)) in steps.iter().enumerate() {
            let now = t0 + Duration::from_millis(*ms);
            match event {
                Started(able) => policy.source_started(*able),
                Lost => policy.source_lost(),
                Request(expected) => assert_eq!(policy.request(now), *expected, "step {i}"),
                Delta(asks) => assert_eq!(policy.frame(false, now), *asks, "step {i}"),
                Key => assert!(!policy.frame(true, now), "step {i}"),
            }
        }
    }

    #[test]
    fn no_source_and_unable_sources_are_not_asked() {
        run(&[
            (0, Request(NoSource)),
            (0, Started(false)),
            (0, Request(Unsupported)),
            (2000, Delta(false)),
            (2000, Started(true)),
            (2000, Lost),
            (2000, Request(NoSource)),
        ]);
    }

    #[test]
    fn at_most_one_request_per_interval_and_none_lost() {
        run(&[
            (0, Started(true)),
            (0, Request(Sent)),
            (100, Request(Deferred)),
            (200, Request(Deferred)),
            (500, Delta(false)),
            // The interval has passed: the next frame lets the kept request go, once.
            (1000, Delta(true)),
            (1033, Delta(false)),
            (1500, Request(Deferred)),
            (2000, Delta(true)),
        ]);
    }

    #[test]
    fn a_keyframe_that_comes_by_itself_answers_the_pending_request() {
        run(&[
            (0, Started(true)),
            (0, Request(Sent)),
            (100, Request(Deferred)),
            (400, Key),
            (1500, Delta(false)),
        ]);
    }

    #[test]
    fn a_restarted_source_forgets_what_was_asked_of_the_last_one() {
        run(&[
            (0, Started(true)),
            (0, Request(Sent)),
            (100, Request(Deferred)),
            (200, Lost),
            (300, Started(true)),
            (1500, Delta(false)),
            // The interval still counts from the last request made.
            (1500, Request(Sent)),
        ]);
    }
}
