//! The hub: one source in, many viewers out. It takes each access unit from the
//! packaging stage (package.rs: numbered, framed, fragmented once), keeps the GOP
//! cache, fans the unit out to every subscriber's queue (members.rs) and says when
//! the source should make a keyframe (keyframe.rs). It never waits for a viewer.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nalcast_h264::{AccessUnit, ParamSets};

use crate::gop::GopCache;
use crate::join::{GopTiming, JoinFacts};
use crate::keyframe::{KeyframeOutcome, KeyframePolicy};
use crate::llhls::{Hls, HlsConfig};
use crate::members::Members;
use crate::metric::{Series, StreamLabel};
use crate::package::{run_id, Packaged, Packaging, HLS_PLAYLIST_VERSIONS};
use crate::protocol::StreamState;
use crate::queue::{QueueLimits, ViewerQueue};
use crate::SharedAu;

/// Access units the hub took in.
pub const FRAMES_IN: Series = Series::counter(
    "nalcast_frames_in_total",
    "access units received from the source",
)
.per_stream();
/// Their bytes.
pub const BYTES_IN: Series = Series::counter(
    "nalcast_bytes_in_total",
    "bytes of access units received from the source",
)
.per_stream();
/// Viewers' queues that overflowed.
pub const VIEWER_SKIPS: Series = Series::counter(
    "nalcast_viewer_skips_total",
    "times a viewer's queue overflowed and skipped to the next keyframe",
)
.per_stream();
/// Viewers now.
pub const VIEWERS: Series = Series::gauge("nalcast_viewers", "viewers connected").per_stream();
/// Hub settings.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Per-viewer queue limits.
    pub queue: QueueLimits,
    /// Most bytes the GOP cache may hold.
    pub gop_max_bytes: usize,
    /// Keyframe requests to the source are at most this frequent.
    pub keyframe_min_interval: Duration,
    /// A joining viewer asks for a keyframe when the GOP cache holds more frames than this.
    pub keyframe_on_join_after: usize,
    /// The LL-HLS stream's settings; None: no HLS.
    pub hls: Option<HlsConfig>,
    /// The stream's name in the per-stream metrics.
    pub stream: StreamLabel,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue: QueueLimits::default(),
            gop_max_bytes: 32 << 20,
            keyframe_min_interval: Duration::from_millis(1000),
            keyframe_on_join_after: 10,
            hls: Some(HlsConfig::default()),
            stream: StreamLabel::default(),
        }
    }
}

/// Counters the hub keeps for /api/stream and tests.
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Access units received from the source.
    pub frames_in: AtomicU64,
    /// Bytes of access units received.
    pub bytes_in: AtomicU64,
    /// Queue overflows (viewer resets to the next keyframe).
    pub skips: AtomicU64,
    /// Keyframes asked of the source.
    pub keyframe_requests: AtomicU64,
}

struct HubState {
    gop: GopCache,
    status: StreamState,
    /// Every subscriber: viewers and internal ones (publishers).
    members: Members,
    /// When to ask the source for a keyframe.
    keyframes: KeyframePolicy,
    last_frame: Option<Instant>,
    /// The GOP timing joins are weighed against.
    gop_timing: GopTiming,
}

/// One stream's hub.
pub struct Hub {
    config: HubConfig,
    /// Taken before `state` when both are.
    packaging: Mutex<Packaging>,
    state: Mutex<HubState>,
    keyframe_wanted: AtomicBool,
    /// Counters.
    pub counters: HubCounters,
    started: Instant,
    /// The HLS stream's version: changes when a part is published.
    hls_version: tokio::sync::watch::Sender<u64>,
    /// How many subscribers (viewers and nalcast's own) there are.
    members: tokio::sync::watch::Sender<usize>,
    /// Counts requests that want the stream without subscribing (HLS, snapshots):
    /// a source started on demand runs while they come.
    demand: tokio::sync::watch::Sender<u64>,
}

/// A snapshot of the hub's state.
#[derive(Clone, Debug)]
pub struct HubStatus {
    /// Parameter sets in force, once known.
    pub params: Option<Arc<ParamSets>>,
    /// Source state.
    pub status: StreamState,
    /// Connected viewers.
    pub viewers: usize,
    /// Frames in the GOP cache.
    pub gop_frames: usize,
    /// Time since the hub started.
    pub uptime: Duration,
    /// Time since the last frame arrived.
    pub since_last_frame: Option<Duration>,
}

impl Hub {
    /// A hub with no source yet.
    pub fn new(config: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(HubState {
                gop: GopCache::new(config.gop_max_bytes),
                status: StreamState::Starting,
                members: Members::default(),
                keyframes: KeyframePolicy::new(config.keyframe_min_interval),
                last_frame: None,
                gop_timing: GopTiming::default(),
            }),
            packaging: Mutex::new(Packaging::new(
                config.hls.clone(),
                run_id(std::time::SystemTime::now()),
            )),
            config,
            keyframe_wanted: AtomicBool::new(false),
            counters: HubCounters::default(),
            started: Instant::now(),
            hls_version: tokio::sync::watch::channel(0).0,
            members: tokio::sync::watch::channel(0).0,
            demand: tokio::sync::watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Hub state stays consistent even if a holder panicked: carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn packaging(&self) -> MutexGuard<'_, Packaging> {
        self.packaging.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes one access unit to the GOP cache and every viewer, at time `now`.
    pub fn publish(&self, au: AccessUnit, now: Instant) -> Arc<SharedAu> {
        self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(au.data.len() as u64, Ordering::Relaxed);
        let stream = &self.config.stream;
        FRAMES_IN.count_in(stream).increment(1);
        BYTES_IN.count_in(stream).increment(au.data.len() as u64);
        // Packaged under its own lock, held until the fan-out has the access unit,
        // so viewers get access units in the order they were numbered.
        let mut packaging = self.packaging();
        let Packaged { au, hls_version } = packaging.package(au, now);
        if let Some(version) = hls_version {
            HLS_PLAYLIST_VERSIONS.count_in(stream).increment(1);
            self.hls_version.send_replace(version);
        }
        let mut state = self.lock();
        drop(packaging);
        if au.keyframe() {
            let bytes = state.gop.bytes();
            state.gop_timing.keyframe(now, bytes);
        }
        state.gop.push(au.clone());
        state.last_frame = Some(now);
        if state.keyframes.frame(au.keyframe(), now) {
            KeyframeOutcome::Sent.count_in(stream);
            self.ask_for_keyframe();
        }
        if state.status != StreamState::Live {
            state.status = StreamState::Live;
            state.members.push_status(&StreamState::Live, now);
        }
        let overflows = state.members.push_au(&au, now);
        if overflows.viewers > 0 {
            let skips = overflows.viewers;
            self.counters.skips.fetch_add(skips, Ordering::Relaxed);
            VIEWER_SKIPS.count_in(stream).increment(skips);
        }
        if overflows.any() {
            self.request_keyframe_locked(&mut state, now);
        }
        au
    }

    /// Registers a viewer: its queue starts with the status and the GOP cache
    /// (keyframe first), so it can decode at once.
    pub fn subscribe(self: &Arc<Self>, now: Instant) -> Subscription {
        self.join(false, now)
    }

    /// Registers a subscriber of nalcast's own (a publisher to a media server): it
    /// gets what a viewer gets, with the same bounded queue (an overflow asks for a
    /// keyframe too), but it is no viewer: `nalcast_viewers`, `/api/stream`, the
    /// viewer limits and the viewer skip and loss counters leave it out.
    pub fn subscribe_internal(self: &Arc<Self>, now: Instant) -> Subscription {
        self.join(true, now)
    }

    fn join(self: &Arc<Self>, internal: bool, now: Instant) -> Subscription {
        let queue = Arc::new(ViewerQueue::new(self.config.queue));
        let mut state = self.lock();
        queue.push_status(state.status.clone(), now);
        let gop = state.gop.frames();
        let last = gop.len().saturating_sub(1);
        for (i, au) in gop.iter().enumerate() {
            queue.push_au(au.clone(), i < last, now);
        }
        if gop.is_empty() || gop.len() > self.config.keyframe_on_join_after {
            self.request_keyframe_locked(&mut state, now);
        }
        let id = state.members.add(queue.clone(), internal);
        VIEWERS
            .gauge_in(&self.config.stream)
            .set(state.members.viewers() as f64);
        self.members.send_replace(state.members.len());
        let join = state.gop_timing.facts();
        Subscription {
            hub: self.clone(),
            id,
            queue,
            join,
        }
    }

    /// A viewer needs a keyframe: the policy says whether the source is asked now
    /// (keyframe.rs), and the outcome is counted.
    fn request_keyframe_locked(&self, state: &mut HubState, now: Instant) -> KeyframeOutcome {
        let outcome = state.keyframes.request(now);
        outcome.count_in(&self.config.stream);
        if outcome == KeyframeOutcome::Sent {
            self.ask_for_keyframe();
        }
        outcome
    }

    /// Raises the flag the source polls ([`Hub::take_keyframe_request`]).
    fn ask_for_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Relaxed);
        self.counters
            .keyframe_requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the LL-HLS stream (None when HLS is off).
    pub fn with_hls<R>(&self, f: impl FnOnce(&Hls) -> R) -> Option<R> {
        self.packaging().hls().map(f)
    }

    /// Changes whenever the HLS stream has a new part.
    pub fn hls_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hls_version.subscribe()
    }

    /// Asks the source for a keyframe at `now` (rate-limited; see [`KeyframeOutcome`]).
    pub fn request_keyframe(&self, now: Instant) -> KeyframeOutcome {
        let mut state = self.lock();
        self.request_keyframe_locked(&mut state, now)
    }

    /// A source starts; `keyframes_on_demand`: whether it makes a keyframe when
    /// [`Hub::take_keyframe_request`] says one is wanted.
    pub fn source_started(&self, keyframes_on_demand: bool) {
        self.lock().keyframes.source_started(keyframes_on_demand);
        // A new encoder starts with a keyframe: nothing asked of the last one stands.
        self.keyframe_wanted.store(false, Ordering::Relaxed);
    }

    /// Whether the running source makes keyframes on demand.
    pub fn keyframes_on_demand(&self) -> bool {
        self.lock().keyframes.on_demand()
    }

    /// For sources that make keyframes on demand: whether one is wanted (clears the request).
    pub fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// The source is gone (crashed, ended, stalled) at `now`: tell every viewer why.
    pub fn source_lost(&self, reason: &str, now: Instant) {
        let lost = StreamState::SourceLost(reason.to_owned());
        let mut state = self.lock();
        state.keyframes.source_lost();
        state.members.push_status(&lost, now);
        state.status = lost;
    }

    /// The source was stopped for want of viewers (started on demand) at `now`:
    /// what is cached is of a picture no longer live, so the next viewer starts
    /// afresh at the restarted source's first keyframe.
    pub fn source_idle(&self, now: Instant) {
        let mut state = self.lock();
        state.keyframes.source_lost();
        state.gop.clear();
        state.last_frame = None;
        state.status = StreamState::Starting;
        state.members.push_status(&StreamState::Starting, now);
    }

    /// Changes whenever a subscriber comes or goes, to their number (viewers and
    /// nalcast's own).
    pub fn member_changes(&self) -> tokio::sync::watch::Receiver<usize> {
        self.members.subscribe()
    }

    /// Changes whenever someone wants the stream without subscribing ([`Hub::wanted`]).
    pub fn demand(&self) -> tokio::sync::watch::Receiver<u64> {
        self.demand.subscribe()
    }

    /// The stream's name in the per-stream metrics.
    pub fn stream_label(&self) -> &StreamLabel {
        &self.config.stream
    }

    /// Ends every viewer with `reason` as the last thing it is told (a stream
    /// removed or replaced): the source is lost for good, as far as they know.
    pub fn end(&self, reason: &str, now: Instant) {
        let ended = StreamState::SourceLost(reason.to_owned());
        let mut state = self.lock();
        state.members.finish_all(&ended, now);
        state.status = ended;
    }

    /// Closes every viewer's queue (shutdown): their tasks end and close their sockets.
    pub fn close_all(&self) {
        self.lock().members.close_all();
    }

    /// The cached GOP: the last keyframe and every access unit since, in decode
    /// order (empty before the first keyframe).
    pub fn gop(&self) -> Vec<Arc<SharedAu>> {
        self.lock().gop.frames().to_vec()
    }

    /// Someone wants the stream without subscribing (an HLS request, a snapshot):
    /// a source started on demand starts.
    pub fn wanted(&self) {
        self.demand.send_modify(|n| *n += 1);
    }

    /// A snapshot for /api/stream and /healthz, at `now`.
    pub fn status(&self, now: Instant) -> HubStatus {
        let params = self.packaging().params().cloned();
        let state = self.lock();
        HubStatus {
            params,
            status: state.status.clone(),
            viewers: state.members.viewers(),
            gop_frames: state.gop.frames().len(),
            uptime: now.saturating_duration_since(self.started),
            since_last_frame: state.last_frame.map(|t| now.saturating_duration_since(t)),
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut state = self.lock();
        state.members.remove(id);
        VIEWERS
            .gauge_in(&self.config.stream)
            .set(state.members.viewers() as f64);
        self.members.send_replace(state.members.len());
    }
}

/// A viewer's membership in the hub; leaving is dropping it.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    /// The viewer's queue.
    pub queue: Arc<ViewerQueue>,
    /// What its catch-up is weighed against.
    pub join: JoinFacts,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Item;
    use crate::test_support::access_unit;

    fn drain(sub: &Subscription) -> Vec<(u32, bool, bool)> {
        let mut q = sub.queue.lock();
        let mut out = Vec::new();
        while let Some((item, _)) = q.pop() {
            if let Item::Au { au, catch_up } = item {
                out.push((au.seq, au.keyframe(), catch_up));
            }
        }
        out
    }

    #[test]
    fn joining_viewer_gets_gop_from_keyframe() {
        let hub = Hub::new(HubConfig::default());
        hub.publish(access_unit(false, 100), std::time::Instant::now()); // before any keyframe: not cached
        hub.publish(access_unit(true, 100), std::time::Instant::now());
        hub.publish(access_unit(false, 100), std::time::Instant::now());
        hub.publish(access_unit(false, 100), std::time::Instant::now());
        let sub = hub.subscribe(std::time::Instant::now());
        assert_eq!(
            drain(&sub),
            [(1, true, true), (2, false, true), (3, false, false)]
        );
        hub.publish(access_unit(false, 100), std::time::Instant::now());
        assert_eq!(drain(&sub), [(4, false, false)]);
    }

    #[test]
    fn a_joining_viewer_learns_when_the_next_keyframe_is_due() {
        let hub = Hub::new(HubConfig::default());
        let t0 = Instant::now();
        hub.publish(access_unit(true, 1000), t0);
        assert_eq!(
            hub.subscribe(std::time::Instant::now()).join,
            JoinFacts::default(),
            "one GOP: unknown"
        );
        for i in 1..60u32 {
            hub.publish(access_unit(false, 100), t0 + Duration::from_millis(33) * i);
        }
        let t1 = t0 + Duration::from_secs(2);
        hub.publish(access_unit(true, 1000), t1);
        let facts = hub.subscribe(std::time::Instant::now()).join;
        assert_eq!(facts.next_keyframe_at, Some(t1 + Duration::from_secs(2)));
        let rate = facts.stream_rate.expect("a whole GOP was seen");
        assert!((rate - (1000.0 + 59.0 * 100.0) / 2.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn joining_late_in_a_long_gop_asks_for_a_keyframe_once() {
        let hub = Hub::new(HubConfig::default());
        hub.source_started(true);
        hub.publish(access_unit(true, 10), std::time::Instant::now());
        for _ in 0..20 {
            hub.publish(access_unit(false, 10), std::time::Instant::now());
        }
        let _a = hub.subscribe(std::time::Instant::now());
        let _b = hub.subscribe(std::time::Instant::now());
        assert!(hub.take_keyframe_request());
        assert!(!hub.take_keyframe_request());
        assert_eq!(hub.counters.keyframe_requests.load(Ordering::Relaxed), 1);
    }

    /// A hub that has had a keyframe at `t` and has just granted (and the source
    /// taken) a keyframe request: another one now is inside the rate limit.
    fn hub_that_just_granted_a_keyframe() -> (Arc<Hub>, Instant) {
        let hub = Hub::new(HubConfig::default());
        hub.source_started(true);
        let t = Instant::now();
        hub.publish(access_unit(true, 10), t);
        assert_eq!(
            hub.request_keyframe(std::time::Instant::now()),
            KeyframeOutcome::Sent
        );
        assert!(hub.take_keyframe_request());
        (hub, t)
    }

    #[test]
    fn only_a_source_that_can_make_keyframes_is_asked_for_one() {
        let hub = Hub::new(HubConfig::default());
        assert_eq!(
            hub.request_keyframe(std::time::Instant::now()),
            KeyframeOutcome::NoSource
        );
        hub.source_started(false);
        assert!(!hub.keyframes_on_demand());
        hub.publish(access_unit(true, 10), std::time::Instant::now());
        assert_eq!(
            hub.request_keyframe(std::time::Instant::now()),
            KeyframeOutcome::Unsupported
        );
        for _ in 0..20 {
            hub.publish(access_unit(false, 10), std::time::Instant::now());
        }
        // A late join asks too, and is answered the same way.
        let _late = hub.subscribe(std::time::Instant::now());
        assert!(!hub.take_keyframe_request());
        assert_eq!(hub.counters.keyframe_requests.load(Ordering::Relaxed), 0);
        // The camera restarts as a source that can.
        hub.source_lost("restart", std::time::Instant::now());
        assert_eq!(
            hub.request_keyframe(std::time::Instant::now()),
            KeyframeOutcome::NoSource
        );
        hub.source_started(true);
        assert!(hub.keyframes_on_demand());
        assert_eq!(
            hub.request_keyframe(std::time::Instant::now()),
            KeyframeOutcome::Sent
        );
        assert!(hub.take_keyframe_request());
    }

    #[test]
    fn a_keyframe_request_inside_the_interval_is_granted_later_not_lost() {
        let (hub, t) = hub_that_just_granted_a_keyframe();
        // Asked again at once: too soon, so nothing yet...
        assert_eq!(
            hub.request_keyframe(std::time::Instant::now()),
            KeyframeOutcome::Deferred
        );
        assert!(!hub.take_keyframe_request());
        hub.publish(access_unit(false, 10), t + Duration::from_millis(500));
        assert!(!hub.take_keyframe_request());
        // ...but granted once the interval has passed.
        hub.publish(access_unit(false, 10), t + Duration::from_millis(1100));
        assert!(hub.take_keyframe_request());
        assert_eq!(hub.counters.keyframe_requests.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_keyframe_that_comes_by_itself_answers_a_pending_request() {
        let (hub, t) = hub_that_just_granted_a_keyframe();
        hub.request_keyframe(std::time::Instant::now());
        hub.publish(access_unit(true, 10), t + Duration::from_millis(500));
        hub.publish(access_unit(false, 10), t + Duration::from_millis(1500));
        assert!(!hub.take_keyframe_request());
    }

    #[test]
    fn an_internal_subscriber_gets_the_stream_but_is_no_viewer() {
        let hub = Hub::new(HubConfig::default());
        hub.publish(access_unit(true, 100), std::time::Instant::now());
        hub.publish(access_unit(false, 100), std::time::Instant::now());
        let publisher = hub.subscribe_internal(std::time::Instant::now());
        assert_eq!(hub.status(std::time::Instant::now()).viewers, 0);
        let viewer = hub.subscribe(std::time::Instant::now());
        assert_eq!(hub.status(std::time::Instant::now()).viewers, 1);
        hub.publish(access_unit(false, 100), std::time::Instant::now());
        let expected = [(0, true, true), (1, false, false), (2, false, false)];
        assert_eq!(drain(&publisher), expected);
        assert_eq!(drain(&viewer), expected);
        drop(viewer);
        assert_eq!(hub.status(std::time::Instant::now()).viewers, 0);
        let again = hub.subscribe(std::time::Instant::now());
        drop(publisher);
        assert_eq!(
            hub.status(std::time::Instant::now()).viewers,
            1,
            "the publisher leaving frees no viewer"
        );
        drop(again);
        assert_eq!(hub.status(std::time::Instant::now()).viewers, 0);
    }

    #[test]
    fn slow_viewer_does_not_affect_others() {
        let hub = Hub::new(HubConfig {
            queue: QueueLimits {
                max_bytes: 1000,
                max_delay: Duration::from_secs(10),
            },
            ..HubConfig::default()
        });
        let slow = hub.subscribe(std::time::Instant::now());
        let fast = hub.subscribe(std::time::Instant::now());
        let mut fast_seen = 0;
        for i in 0..30 {
            hub.publish(access_unit(i % 10 == 0, 100), std::time::Instant::now());
            fast_seen += drain(&fast).len();
        }
        assert_eq!(fast_seen, 30);
        assert!(slow.queue.lock().bytes() <= 1000);
        assert!(hub.counters.skips.load(Ordering::Relaxed) >= 1);
        drop(slow);
        assert_eq!(hub.status(std::time::Instant::now()).viewers, 1);
    }
}
