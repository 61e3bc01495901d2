//! The named streams at run time: each a camera with its own hub, source
//! supervisor and publishers, started and stopped on its own, so that one source
//! failing, restarting or sending garbage never reaches another stream's viewers.
//! The server finds them here by name ([`Streams`]); the first is the default
//! stream, served at the URLs nalcast had before it held many.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nalcast_core::hub::{Hub, HubConfig};
use nalcast_core::metric::{Series, StreamLabel};
use nalcast_core::queue::QueueLimits;
use nalcast_sources::publish::{self, Publisher};
use nalcast_sources::{self as source, VideoSettings};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::{Config, LoadError, Options};

use crate::config::StreamConfig;

/// One stream: what the server reads to serve it.
pub struct Stream {
    /// Its settings, as checked.
    pub config: StreamConfig,
    /// Its GOP cache and viewers.
    pub hub: Arc<Hub>,
    /// Its `publish` targets and their state.
    pub publishers: Arc<Vec<Arc<Publisher>>>,
    /// Started on demand and stopped for want of viewers just now.
    idle: AtomicBool,
    /// Viewers holding a [`Seat`].
    seated: Arc<AtomicUsize>,
    /// Its snapshots.
    pub stills: StillDesk,
}

/// A stream's stills (server/snapshot.rs serves them): its decoder, the requests
/// waiting for it, and its MJPEG feed.
#[derive(Default)]
pub struct StillDesk {
    pub(crate) stills: Arc<std::sync::Mutex<nalcast_still::Stills>>,
    /// Requests waiting for the decoder.
    pub(crate) waiting: Arc<AtomicUsize>,
    /// The newest MJPEG picture, while someone watches the MJPEG stream.
    pub(crate) mjpeg: std::sync::Mutex<Option<watch::Sender<Option<nalcast_still::Jpeg>>>>,
}

/// A place counted in `taken`, at most `max` at once (a viewer's in a stream with a
/// `max-viewers` of its own, a snapshot request's in the queue for the decoder);
/// given back on drop.
#[derive(Debug)]
pub struct Seat(Arc<AtomicUsize>);

impl Seat {
    /// A place, unless `max` are taken.
    pub fn take(taken: &Arc<AtomicUsize>, max: usize) -> Option<Seat> {
        taken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Seat(taken.clone()))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stream {
    /// A stream of `config` with a fresh hub; `publish_index` numbers its first
    /// publisher in the metrics' `target` label.
    pub fn new(config: StreamConfig, queue: QueueLimits, publish_index: usize) -> Stream {
        let hub = Hub::new(HubConfig {
            queue,
            hls: config.hls.then(|| HubConfig::default().hls).flatten(),
            stream: StreamLabel::new(&config.name),
            ..HubConfig::default()
        });
        Stream::with_hub(config, hub, publish_index)
    }

    /// A stream of `config` around `hub`, whose viewers it keeps (a stream whose
    /// source changed on a reload).
    pub fn with_hub(config: StreamConfig, hub: Arc<Hub>, publish_index: usize) -> Stream {
        let publishers = config
            .publish
            .iter()
            .enumerate()
            .map(|(i, target)| {
                Publisher::new(
                    target.clone(),
                    publish_index + i,
                    hub.stream_label().clone(),
                )
            })
            .collect();
        Stream {
            idle: AtomicBool::new(config.on_demand.is_some()),
            seated: Arc::default(),
            stills: Default::default(),
            config,
            hub,
            publishers: Arc::new(publishers),
        }
    }

    /// A stream around an existing hub, with no publishers: for tests and embedding.
    pub fn around(name: &str, source: source::SourceSpec, hub: Arc<Hub>) -> Stream {
        Stream {
            config: StreamConfig {
                name: name.to_owned(),
                source,
                options: source::SourceOptions::default(),
                publish: Vec::new(),
                hls: true,
                on_demand: None,
                max_viewers: None,
            },
            hub,
            publishers: Arc::default(),
            idle: AtomicBool::new(false),
            seated: Arc::default(),
            stills: Default::default(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The kind of its source (test, file, exec, …) for the API and stream-info:
    /// never the command line or path, which may hold a camera password.
    pub fn source_kind(&self) -> &'static str {
        self.config.source.kind()
    }

    /// Its configured picture settings.
    pub fn video(&self) -> VideoSettings {
        self.config.options.video
    }

    /// A place for one more viewer, unless the stream has as many as its
    /// `max-viewers` allows (`None`).
    pub fn seat(&self) -> Option<Seat> {
        Seat::take(&self.seated, self.config.max_viewers.unwrap_or(usize::MAX))
    }

    /// Whether its source is stopped until someone watches (`--on-demand`).
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }
}

/// The streams being served, in their configured order; never empty.
pub struct Streams {
    list: RwLock<Arc<[Arc<Stream>]>>,
}

impl Streams {
    /// The registry of `list`, whose first is the default stream; empty only
    /// until [`Streams::replace`] fills it.
    pub fn new(list: Vec<Arc<Stream>>) -> Arc<Streams> {
        Arc::new(Streams {
            list: RwLock::new(list.into()),
        })
    }

    /// Every stream, in order.
    pub fn all(&self) -> Arc<[Arc<Stream>]> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.all().iter().find(|s| s.name() == name).cloned()
    }

    /// The default stream: the first.
    pub fn default_stream(&self) -> Arc<Stream> {
        self.all()[0].clone()
    }

    /// Serves `list` from now on (a reload).
    ///
    /// # Panics
    /// When `list` is empty.
    pub fn replace(&self, list: Vec<Arc<Stream>>) {
        assert!(!list.is_empty(), "a server has at least one stream");
        *self.list.write().unwrap_or_else(|e| e.into_inner()) = list.into();
    }
}

/// A started stream: its tasks, and the switch that stops them.
pub struct Running {
    /// The stream.
    pub stream: Arc<Stream>,
    stop: watch::Sender<bool>,
    source: JoinHandle<()>,
    publishers: JoinSet<()>,
}

impl Running {
    /// Starts the source and publishers of `stream`.
    pub fn start(stream: Arc<Stream>, publish_options: &publish::PublishOptions) -> Running {
        let (stop, stopped) = watch::channel(false);
        info!(stream = %stream.name(), source = %stream.config.source, "stream started");
        // Everything the source and publishers log names the stream.
        let span = info_span!("stream", name = %stream.name());
        let source = tokio::spawn(
            {
                let stream = stream.clone();
                async move {
                    match stream.config.on_demand {
                        Some(idle) => on_demand(&stream, idle, stopped).await,
                        None => supervise(&stream, stopped).await,
                    }
                }
            }
            .instrument(span.clone()),
        );
        // Publishers read the hub like viewers: started with it, stopped (their
        // ffmpeg reaped) with it.
        let mut publishers = JoinSet::new();
        for publisher in stream.publishers.iter() {
            publishers.spawn(
                publish::supervise(
                    publisher.clone(),
                    stream.hub.clone(),
                    publish::PublishOptions {
                        allow_basic: stream.config.options.rtsp_allow_basic,
                        ..publish_options.clone()
                    },
                    stop.subscribe(),
                )
                .instrument(span.clone()),
            );
        }
        Running {
            stream,
            stop,
            source,
            publishers,
        }
    }

    /// Closes its viewers and stops its source and publishers, waiting at most
    /// `grace` for them; what does not stop in time is killed.
    pub async fn stop(self, grace: Duration) {
        self.stream.hub.close_all();
        self.stop_source(grace).await;
    }

    /// Stops its source and publishers, waiting at most `grace` for them; the
    /// viewers stay, for the source that takes its place.
    pub async fn stop_source(mut self, grace: Duration) {
        let name = self.stream.name().to_owned();
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        let publishers = tokio::time::timeout_at(deadline, async {
            while self.publishers.join_next().await.is_some() {}
        });
        let (source, publishers) = tokio::join!(
            tokio::time::timeout_at(deadline, &mut self.source),
            publishers
        );
        if publishers.is_err() {
            // Dropping them kills their ffmpeg (kill_on_drop, process group).
            warn!(stream = %name, "some publishers did not stop in time");
            self.publishers.shutdown().await;
        }
        if source.is_err() {
            warn!(stream = %name, "the source did not stop in time");
            self.source.abort();
        }
    }
}

/// Runs the stream's source until `stop`, restarting it as it fails.
async fn supervise(stream: &Stream, stop: watch::Receiver<bool>) {
    source::supervise(
        stream.config.source.clone(),
        stream.config.options.clone(),
        stream.hub.clone(),
        stop,
    )
    .await;
}

/// How long a stopping source has to end before it is killed.
const SOURCE_GRACE: Duration = Duration::from_millis(800);

/// Runs the stream's source while someone wants it: from the first subscriber (a
/// viewer, a publisher) or HLS or snapshot request, until `idle` after the last one, and again
/// at the next; until `stop`.
async fn on_demand(stream: &Stream, idle: Duration, mut stop: watch::Receiver<bool>) {
    let name = stream.name();
    let mut members = stream.hub.member_changes();
    let mut hls = stream.hub.demand();
    loop {
        // Idle: wait for someone.
        stream.idle.store(true, Ordering::Relaxed);
        loop {
            if *members.borrow_and_update() > 0 {
                break;
            }
            // (`changed` marks the demand seen as it returns: a request is acted
            // on here, not looked for afterwards.)
            tokio::select! {
                _ = members.changed() => {}
                asked = hls.changed() => if asked.is_ok() { break },
                _ = stop.changed() => return,
            }
        }
        info!(stream = %name, "starting the source for a viewer (on demand)");
        stream.idle.store(false, Ordering::Relaxed);
        let (stop_source, source_stopped) = watch::channel(false);
        let mut source = tokio::spawn(source::supervise(
            stream.config.source.clone(),
            stream.config.options.clone(),
            stream.hub.clone(),
            source_stopped,
        ));
        // Running: until `idle` has passed with nobody.
        let ended = loop {
            let nobody = *members.borrow_and_update() == 0;
            tokio::select! {
                () = tokio::time::sleep(idle), if nobody => break false,
                _ = members.changed() => {}
                // An HLS or snapshot request starts the idle time again.
                _ = hls.changed() => {}
                _ = stop.changed() => break true,
            }
        };
        if !ended {
            info!(stream = %name, idle_s = idle.as_secs_f64(), "stopping the source: nobody watched (on demand)");
        }
        let _ = stop_source.send(true);
        if tokio::time::timeout(SOURCE_GRACE, &mut source)
            .await
            .is_err()
        {
            warn!(stream = %name, "the source did not stop in time");
            source.abort();
        }
        stream.hub.source_idle(std::time::Instant::now());
        if ended {
            return;
        }
    }
}

/// What a reload did, by stream name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Started.
    pub added: Vec<String>,
    /// Ended.
    pub removed: Vec<String>,
    /// Restarted with new settings.
    pub changed: Vec<String>,
    /// Left running as they were.
    pub kept: Vec<String>,
}

/// Every running stream, and the registry the server reads them from.
pub struct Fleet {
    streams: Arc<Streams>,
    running: Vec<Running>,
    queue: QueueLimits,
    publish_options: publish::PublishOptions,
    /// The `target` label of the next publisher.
    next_publisher: usize,
    /// Creates a new stream's per-stream metric series (its name, its publishers'
    /// `target` labels).
    register: fn(&StreamLabel, &[String]),
}

impl Fleet {
    /// Starts a stream of each of `configs` (never empty), in order.
    pub fn start(
        configs: &[StreamConfig],
        queue: QueueLimits,
        publish_options: publish::PublishOptions,
        register: fn(&StreamLabel, &[String]),
    ) -> Fleet {
        let mut fleet = Fleet {
            streams: Streams::new(Vec::new()),
            running: Vec::new(),
            queue,
            publish_options,
            next_publisher: 0,
            register,
        };
        fleet.running = configs.iter().map(|c| fleet.start_one(c, None)).collect();
        fleet
            .streams
            .replace(fleet.running.iter().map(|r| r.stream.clone()).collect());
        fleet
    }

    /// The registry the server reads.
    pub fn streams(&self) -> Arc<Streams> {
        self.streams.clone()
    }

    /// Makes the running set `configs` (checked, never empty): streams not in it
    /// end, their viewers told why; new ones start; those whose settings changed
    /// get a new source (and keep their viewers, unless HLS was turned on or off);
    /// the rest run on untouched, their viewers losing nothing.
    pub async fn reload(&mut self, configs: &[StreamConfig]) -> Changes {
        let mut changes = Changes::default();
        let mut old: Vec<Running> = std::mem::take(&mut self.running);
        let mut retired = Vec::new();
        let mut next = Vec::with_capacity(configs.len());
        for config in configs {
            let Some(at) = old.iter().position(|r| r.stream.name() == config.name) else {
                changes.added.push(config.name.clone());
                next.push(self.start_one(config, None));
                continue;
            };
            let running = old.swap_remove(at);
            if running.stream.config == *config {
                changes.kept.push(config.name.clone());
                next.push(running);
                continue;
            }
            changes.changed.push(config.name.clone());
            let keep_hub = running.stream.config.hls == config.hls;
            let hub = keep_hub.then(|| running.stream.hub.clone());
            if keep_hub {
                running.stop_source(SOURCE_GRACE).await;
            } else {
                running.stream.hub.end(
                    "the stream's settings changed: reconnect",
                    std::time::Instant::now(),
                );
                retired.push(running);
            }
            next.push(self.start_one(config, hub));
        }
        // Those left in `old` are no longer configured: new viewers cannot find
        // them from now on, and those watching are told why before they close.
        self.streams
            .replace(next.iter().map(|r| r.stream.clone()).collect());
        self.running = next;
        for running in old {
            changes.removed.push(running.stream.name().to_owned());
            running.stream.hub.end(
                "this stream was removed from nalcast's settings",
                std::time::Instant::now(),
            );
            retired.push(running);
        }
        // Their viewers end on their own, after their last status.
        futures_util::future::join_all(retired.into_iter().map(|r| r.stop_source(SOURCE_GRACE)))
            .await;
        changes
    }

    fn start_one(&mut self, config: &StreamConfig, hub: Option<Arc<Hub>>) -> Running {
        let index = self.next_publisher;
        self.next_publisher += config.publish.len();
        let stream = match hub {
            Some(hub) => Stream::with_hub(config.clone(), hub, index),
            None => {
                let stream = Stream::new(config.clone(), self.queue, index);
                let targets: Vec<String> = stream
                    .publishers
                    .iter()
                    .map(|p| p.index.to_string())
                    .collect();
                (self.register)(stream.hub.stream_label(), &targets);
                stream
            }
        };
        Running::start(Arc::new(stream), &self.publish_options)
    }

    /// Stops every stream: their viewers' connections close and their sources end,
    /// within `grace`.
    pub async fn stop(self, grace: Duration) {
        futures_util::future::join_all(self.running.into_iter().map(|r| r.stop(grace))).await;
    }
}

/// Settings reloads, by how they ended.
pub const RELOADS: Series = Series::counter(
    "nalcast_reloads_total",
    "Settings reloads (SIGHUP), by result: applied, refused (the settings did not check out; the log says why)",
)
.labelled("result", &["applied", "refused"]);

/// SIGHUP (`systemctl reload nalcast`): reads the settings again and applies the
/// streams' (added, removed, changed). Settings that are not the streams' are read
/// once, at start: a change to one is named in the log, and waits for a restart.
/// Settings that do not check out are refused with the reason, and the running
/// streams stay as they are.
pub async fn reload(fleet: &mut Fleet, running: &Config) {
    info!("reloading the settings (SIGHUP)");
    let new = match Options::load(std::env::args_os()) {
        Ok(options) => Config::resolve(options),
        Err(LoadError::File(e)) => Err(e),
        Err(LoadError::Usage(e)) => Err(e.to_string()),
    };
    let checked = new.and_then(|config| {
        for stream in &config.streams {
            source::preflight(&stream.source)
                .map_err(|e| format!("stream '{}': {e}", stream.name))?;
        }
        let targets: Vec<_> = config
            .streams
            .iter()
            .flat_map(|s| s.publish.iter().cloned())
            .collect();
        publish::preflight(&targets)?;
        Ok(config)
    });
    let config = match checked {
        Ok(config) => config,
        Err(e) => {
            error!("settings not reloaded, the streams run on as they were: {e}");
            RELOADS.count_as("refused").increment(1);
            return;
        }
    };
    // Every setting but the streams, compared as printed (the Debug form names
    // credentials only as set or not).
    let others = |c: &Config| {
        format!(
            "{:?}",
            Config {
                streams: Vec::new(),
                ..c.clone()
            }
        )
    };
    if others(&config) != others(running) {
        warn!("settings other than the streams changed: they take effect when nalcast restarts");
    }
    let changes = fleet.reload(&config.streams).await;
    RELOADS.count_as("applied").increment(1);
    info!(
        added = ?changes.added,
        removed = ?changes.removed,
        restarted = ?changes.changed,
        unchanged = changes.kept.len(),
        "settings reloaded"
    );
}
