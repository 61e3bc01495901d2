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
}

impl Series {
    /// An unlabelled counter.
    pub const fn counter(name: &'static str, help: &'static str) -> Series {
        Series {
            name,
            help,
            kind: Kind::Counter,
            label: None,
        }
    }

    /// An unlabelled gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Series {
        Series {
            name,
            help,
            kind: Kind::Gauge,
            label: None,
        }
    }

    /// An unlabelled histogram.
    pub const fn histogram(name: &'static str, help: &'static str) -> Series {
        Series {
            name,
            help,
            kind: Kind::Histogram,
            label: None,
        }
    }

    /// The same series with a label taking these values.
    pub const fn labelled(self, name: &'static str, values: &'static [&'static str]) -> Series {
        Series {
            label: Some(Label { name, values }),
            ..self
        }
    }

    /// The counter (unlabelled).
    pub fn count(&self) -> Counter {
        debug_assert!(
            self.kind == Kind::Counter && self.label.is_none(),
            "{self:?}"
        );
        metrics::counter!(self.name)
    }

    /// The counter with its label at `value`.
    pub fn count_as(&self, value: impl Into<SharedString>) -> Counter {
        let (label, value) = self.label_at(Kind::Counter, value.into());
        metrics::counter!(self.name, label => value)
    }

    /// The gauge (unlabelled).
    pub fn gauge_now(&self) -> Gauge {
        debug_assert!(self.kind == Kind::Gauge && self.label.is_none(), "{self:?}");
        metrics::gauge!(self.name)
    }

    /// The gauge with its label at `value`.
    pub fn gauge_as(&self, value: impl Into<SharedString>) -> Gauge {
        let (label, value) = self.label_at(Kind::Gauge, value.into());
        metrics::gauge!(self.name, label => value)
    }

    /// The histogram (unlabelled).
    pub fn observe(&self) -> Histogram {
        debug_assert!(
            self.kind == Kind::Histogram && self.label.is_none(),
            "{self:?}"
        );
        metrics::histogram!(self.name)
    }

    /// The histogram with its label at `value`.
    pub fn observe_as(&self, value: impl Into<SharedString>) -> Histogram {
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

    /// Creates the series at zero, with each of its label's values (or `values`,
    /// where those are known only now), and describes it. Call once, after the
    /// recorder is installed.
    pub fn register(&self, values: &[String]) {
        let values: Vec<SharedString> = match self.label {
            Some(label) if label.values.is_empty() => {
                values.iter().cloned().map(SharedString::from).collect()
            }
            Some(label) => label.values.iter().map(|&v| v.into()).collect(),
            None => Vec::new(),
        };
        match self.kind {
            Kind::Counter => {
                metrics::describe_counter!(self.name, self.help);
                if self.label.is_none() {
                    self.count().increment(0);
                }
                for value in values {
                    self.count_as(value).increment(0);
                }
            }
            Kind::Gauge => {
                metrics::describe_gauge!(self.name, self.help);
                if self.label.is_none() {
                    self.gauge_now().set(0.0);
                }
                for value in values {
                    self.gauge_as(value).set(0.0);
                }
            }
            Kind::Histogram => {
                metrics::describe_histogram!(self.name, self.help);
                // Registering a histogram creates its series; no sample is recorded.
                if self.label.is_none() {
                    let _ = self.observe();
                }
                for value in values {
                    let _ = self.observe_as(value);
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
