//! One book of metrics: each series nalcast exports is a [`Series`] constant defined
//! once, beside the code that counts it, and both that code and the start-up
//! registration (`nalcast::server::series`) name it through the constant. A typo can
//! no longer make a second series while the registered one stays at 0, and
//! `scripts/check-structure.sh` fails when a metric name is spelt in two files or a
//! series is defined and not registered.
//!
//! Names and label values are snake_case, as Prometheus practice has them.

use metrics::{Counter, Gauge, Histogram, SharedString};

/// What kind of series, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// A series' one label and the values it is created with at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    /// The label's name.
    pub name: &'static str,
    /// Every value it takes; empty where the values are only known at start-up
    /// (a `--publish` target's place).
    pub values: &'static [&'static str],
}

/// One metric series: its name, what it means and its label, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// The name, `nalcast_…`.
    pub name: &'static str,
    /// What `/metrics` says it counts (`# HELP`).
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The label, for a labelled series.
    pub label: Option<Label>,
    /// Counted per stream, with a `stream` label (before its own label, if any).
    pub per_stream: bool,
}

/// The name of the label every per-stream series has.
pub const STREAM_LABEL: &str = "stream";

/// A stream's name as the value of the per-stream series' `stream` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLabel(SharedString);

impl StreamLabel {
    /// The label of the stream called `name`.
    pub fn new(name: &str) -> StreamLabel {
        StreamLabel(SharedString::from(name.to_owned()))
    }

    /// The stream's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for StreamLabel {
    /// The stream of a nalcast with one: "camera".
    fn default() -> Self {
        StreamLabel(SharedString::const_str("camera"))
    }
}

impl Series {
    /// An unlabelled counter.
    pub const fn counter(name: &'static str, help: &'static str) -> Series {
        Series {
            name,
            help,
            kind: Kind::Counter,
            label: None,
            per_stream: false,
        }
    }

    /// An unlabelled gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Series {
        Series {
            name,
            help,
            kind: Kind::Gauge,
            label: None,
            per_stream: false,
        }
    }

    /// An unlabelled histogram.
    pub const fn histogram(name: &'static str, help: &'static str) -> Series {
        Series {
            name,
            help,
            kind: Kind::Histogram,
            label: None,
            per_stream: false,
        }
    }

    /// The same series with a label taking these values.
    pub const fn labelled(self, name: &'static str, values: &'static [&'static str]) -> Series {
        Series {
            label: Some(Label { name, values }),
            ..self
        }
    }

    /// The same series, counted per stream.
    pub const fn per_stream(self) -> Series {
        Series {
            per_stream: true,
            ..self
        }
    }

    /// The counter of `stream` (a per-stream series without a label of its own).
    pub fn count_in(&self, stream: &StreamLabel) -> Counter {
        debug_assert!(
            self.kind == Kind::Counter && self.per_stream && self.label.is_none(),
            "{self:?}"
        );
        metrics::counter!(self.name, STREAM_LABEL => stream.0.clone())
    }

    /// The counter of `stream` with its own label at `value`.
    pub fn count_as_in(&self, stream: &StreamLabel, value: impl Into<SharedString>) -> Counter {
        debug_assert!(self.per_stream, "{self:?}");
        let (label, value) = self.label_at(Kind::Counter, value.into());
        metrics::counter!(self.name, STREAM_LABEL => stream.0.clone(), label => value)
    }

    /// The gauge of `stream` (per stream, without a label of its own).
    pub fn gauge_in(&self, stream: &StreamLabel) -> Gauge {
        debug_assert!(
            self.kind == Kind::Gauge && self.per_stream && self.label.is_none(),
            "{self:?}"
        );
        metrics::gauge!(self.name, STREAM_LABEL => stream.0.clone())
    }

    /// The gauge of `stream` with its own label at `value`.
    pub fn gauge_as_in(&self, stream: &StreamLabel, value: impl Into<SharedString>) -> Gauge {
        debug_assert!(self.per_stream, "{self:?}");
        let (label, value) = self.label_at(Kind::Gauge, value.into());
        metrics::gauge!(self.name, STREAM_LABEL => stream.0.clone(), label => value)
    }

    /// The histogram of `stream` (per stream, without a label of its own).
    pub fn observe_in(&self, stream: &StreamLabel) -> Histogram {
        debug_assert!(
            self.kind == Kind::Histogram && self.per_stream && self.label.is_none(),
            "{self:?}"
        );
        metrics::histogram!(self.name, STREAM_LABEL => stream.0.clone())
    }

    /// The histogram of `stream` with its own label at `value`.
    pub fn observe_as_in(&self, stream: &StreamLabel, value: impl Into<SharedString>) -> Histogram {
        debug_assert!(self.per_stream, "{self:?}");
        let (label, value) = self.label_at(Kind::Histogram, value.into());
        metrics::histogram!(self.name, STREAM_LABEL => stream.0.clone(), label => value)
    }

    /// The counter (unlabelled).
    pub fn count(&self) -> Counter {
        debug_assert!(
            self.kind == Kind::Counter && self.label.is_none() && !self.per_stream,
            "{self:?}"
        );
        metrics::counter!(self.name)
    }

    /// The counter with its label at `value`.
    pub fn count_as(&self, value: impl Into<SharedString>) -> Counter {
        debug_assert!(!self.per_stream, "{self:?}");
        let (label, value) = self.label_at(Kind::Counter, value.into());
        metrics::counter!(self.name, label => value)
    }

    /// The gauge (unlabelled).
    pub fn gauge_now(&self) -> Gauge {
        debug_assert!(
            self.kind == Kind::Gauge && self.label.is_none() && !self.per_stream,
            "{self:?}"
        );
        metrics::gauge!(self.name)
    }

    /// The gauge with its label at `value`.
    pub fn gauge_as(&self, value: impl Into<SharedString>) -> Gauge {
        debug_assert!(!self.per_stream, "{self:?}");
        let (label, value) = self.label_at(Kind::Gauge, value.into());
        metrics::gauge!(self.name, label => value)
    }

    /// The histogram (unlabelled).
    pub fn observe(&self) -> Histogram {
        debug_assert!(
            self.kind == Kind::Histogram && self.label.is_none() && !self.per_stream,
            "{self:?}"
        );
        metrics::histogram!(self.name)
    }

    /// The histogram with its label at `value`.
    pub fn observe_as(&self, value: impl Into<SharedString>) -> Histogram {
        debug_assert!(!self.per_stream, "{self:?}");
        let (label, value) = self.label_at(Kind::Histogram, value.into());
        metrics::histogram!(self.name, label => value)
    }

    /// The label's name, checking (in debug builds, so in every test) that `value`
    /// is one the series was registered with.
    fn label_at(&self, kind: Kind, value: SharedString) -> (&'static str, SharedString) {
        debug_assert_eq!(self.kind, kind, "{}", self.name);
        let Some(label) = self.label else {
            debug_assert!(false, "{} has no label", self.name);
            return ("", value);
        };
        debug_assert!(
            label.values.is_empty() || label.values.contains(&value.as_ref()),
            "{}: {}={value:?} is not among the registered {:?}",
            self.name,
            label.name,
            label.values
        );
        (label.name, value)
    }

    /// Describes the series and, unless it is per stream ([`Series::register_stream`]
    /// creates those), creates it at zero with each of its label's values (or
    /// `values`, where those are known only now). Call once, after the recorder is
    /// installed.
    pub fn register(&self, values: &[String]) {
        match self.kind {
            Kind::Counter => metrics::describe_counter!(self.name, self.help),
            Kind::Gauge => metrics::describe_gauge!(self.name, self.help),
            Kind::Histogram => metrics::describe_histogram!(self.name, self.help),
        }
        if !self.per_stream {
            self.create(None, values);
        }
    }

    /// Creates a per-stream series at zero for `stream`, with each of its own
    /// label's values (or `values`, where those are known only now).
    pub fn register_stream(&self, stream: &StreamLabel, values: &[String]) {
        if self.per_stream {
            self.create(Some(stream), values);
        }
    }

    fn create(&self, stream: Option<&StreamLabel>, values: &[String]) {
        let values: Vec<SharedString> = match self.label {
            Some(label) if label.values.is_empty() => {
                values.iter().cloned().map(SharedString::from).collect()
            }
            Some(label) => label.values.iter().map(|&v| v.into()).collect(),
            None => Vec::new(),
        };
        match (self.kind, stream) {
            (Kind::Counter, None) => {
                if self.label.is_none() {
                    self.count().increment(0);
                }
                for value in values {
                    self.count_as(value).increment(0);
                }
            }
            (Kind::Counter, Some(stream)) => {
                if self.label.is_none() {
                    self.count_in(stream).increment(0);
                }
                for value in values {
                    self.count_as_in(stream, value).increment(0);
                }
            }
            (Kind::Gauge, None) => {
                if self.label.is_none() {
                    self.gauge_now().set(0.0);
                }
                for value in values {
                    self.gauge_as(value).set(0.0);
                }
            }
            (Kind::Gauge, Some(stream)) => {
                if self.label.is_none() {
                    self.gauge_in(stream).set(0.0);
                }
                for value in values {
                    self.gauge_as_in(stream, value).set(0.0);
                }
            }
            // Making a histogram's handle creates its series; no sample is recorded.
            (Kind::Histogram, None) => {
                if self.label.is_none() {
                    let _ = self.observe();
                }
                for value in values {
                    let _ = self.observe_as(value);
                }
            }
            (Kind::Histogram, Some(stream)) => {
                if self.label.is_none() {
                    let _ = self.observe_in(stream);
                }
                for value in values {
                    let _ = self.observe_as_in(stream, value);
                }
            }
        }
    }

    /// Whether the name and label values follow the book's style: `nalcast_`,
    /// snake_case, counters ending `_total`.
    pub fn is_well_named(&self) -> bool {
        let snake = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let name_ok = self.name.starts_with("nalcast_")
            && snake(self.name)
            && (self.kind == Kind::Counter) == self.name.ends_with("_total");
        let label_ok = self
            .label
            .is_none_or(|l| snake(l.name) && l.values.iter().all(|v| snake(v)));
        name_ok && label_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_style_check_catches_what_it_should() {
        let good = Series::counter("nalcast_things_total", "things")
            .labelled("reason", &["too_many", "client_closed"]);
        assert!(good.is_well_named());
        for bad in [
            Series::counter("nalcast_things", "a counter without _total"),
            Series::gauge("nalcast_things_total", "a gauge with _total"),
            Series::counter("things_total", "no prefix"),
            Series::counter("nalcast_Things_total", "capitals"),
            good.labelled("reason", &["max-viewers"]),
            good.labelled("reason", &["client closed"]),
        ] {
            assert!(!bad.is_well_named(), "{bad:?}");
        }
    }
}
