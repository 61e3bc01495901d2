//! The named streams at run time: each a camera with its own hub, source
//! supervisor and publishers, started and stopped on its own, so that one source
//! failing, restarting or sending garbage never reaches another stream's viewers.
//! The server finds them here by name ([`Streams`]); the first is the default
//! stream, served at the URLs nalcast had before it held many.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nalcast_core::hub::{Hub, HubConfig};
use nalcast_core::queue::QueueLimits;
use nalcast_sources::publish::{self, Publisher};
use nalcast_sources::{self as source, VideoSettings};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

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
}

impl Stream {
    /// A stream of `config` with a fresh hub; `publish_index` numbers its first
    /// publisher in the metrics' `target` label.
    pub fn new(config: StreamConfig, queue: QueueLimits, publish_index: usize) -> Stream {
        let hub = Hub::new(HubConfig {
            queue,
            hls: config.hls.then(|| HubConfig::default().hls).flatten(),
            ..HubConfig::default()
        });
        let publishers = config
            .publish
            .iter()
            .enumerate()
            .map(|(i, target)| Publisher::new(target.clone(), publish_index + i))
            .collect();
        Stream {
            idle: AtomicBool::new(config.on_demand.is_some()),
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
            },
            hub,
            publishers: Arc::default(),
            idle: AtomicBool::new(false),
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
    /// The registry of `list`, whose first is the default stream.
    ///
    /// # Panics
    /// When `list` is empty: configuration always makes one stream.
    pub fn new(list: Vec<Arc<Stream>>) -> Arc<Streams> {
        assert!(!list.is_empty(), "a server has at least one stream");
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
        let source = tokio::spawn({
            let stream = stream.clone();
            async move {
                match stream.config.on_demand {
                    Some(idle) => on_demand(&stream, idle, stopped).await,
                    None => supervise(&stream, stopped).await,
                }
            }
        });
        // Publishers read the hub like viewers: started with it, stopped (their
        // ffmpeg reaped) with it.
        let mut publishers = JoinSet::new();
        for publisher in stream.publishers.iter() {
            publishers.spawn(publish::supervise(
                publisher.clone(),
                stream.hub.clone(),
                publish_options.clone(),
                stop.subscribe(),
            ));
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
    pub async fn stop(mut self, grace: Duration) {
        let name = self.stream.name().to_owned();
        self.stream.hub.close_all();
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
/// viewer, a publisher) or HLS request, until `idle` after the last one, and again
/// at the next; until `stop`.
async fn on_demand(stream: &Stream, idle: Duration, mut stop: watch::Receiver<bool>) {
    let name = stream.name();
    let mut members = stream.hub.member_changes();
    let mut hls = stream.hub.hls_demand();
    loop {
        // Idle: wait for someone.
        stream.idle.store(true, Ordering::Relaxed);
        loop {
            if *members.borrow_and_update() > 0 || hls.has_changed().unwrap_or(false) {
                hls.borrow_and_update();
                break;
            }
            tokio::select! {
                _ = members.changed() => {}
                _ = hls.changed() => {}
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
                // An HLS request starts the idle time again.
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
