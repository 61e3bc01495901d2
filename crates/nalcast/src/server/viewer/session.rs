//! One viewer's session: its queue drained into its socket, batch by batch, and the
//! client's few control messages read in between, until either side ends it.
//! Generic over the connection so it runs on a socket, a TLS stream or a test pipe.
use nalcast_core::join::JOINS;
use nalcast_core::metric::{Series, StreamLabel};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nalcast_core::clock::{shutdown_requested, wall_us};
use nalcast_core::join::{CatchUp, Plan, CATCH_UP_BATCH_BYTES};
use nalcast_core::queue::ViewerQueue;
use nalcast_h264::ParamSets;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use super::client::{on_client_frame, MessageRate, Reply, MAX_CLIENT_MESSAGE};
use super::link::Link;
use super::messages::{Batch, StreamFacts};
use super::{Dialect, Ended};
use crate::server::progress::WriteDeadline;
use crate::server::threads::WakeGroup;
use crate::server::websocket::framing::{self as wsf, ClientParser};
use crate::server::AppState;

/// How long items wait in viewers' queues.
pub const QUEUE_DELAY: Series = Series::histogram(
    "nalcast_queue_delay_seconds",
    "time an item waited in a viewer's queue",
)
.per_stream();
/// From a frame's arrival to its last byte written, by kind.
pub const SERVER_LATENCY: Series = Series::histogram(
    "nalcast_server_latency_seconds",
    "from a frame's arrival to its last byte written to a viewer, by frame kind",
)
.labelled("frame", &["key", "delta"])
.per_stream();
/// Bytes written to viewers.
pub const BYTES_OUT: Series =
    Series::counter("nalcast_bytes_out_total", "bytes written to viewers").per_stream();
/// Viewers that left, by reason.
pub const DISCONNECTS: Series =
    Series::counter("nalcast_disconnects_total", "viewers that left, by reason")
        .labelled("reason", &Ended::REASONS)
        .per_stream();

/// Most queue items written in one go (one system call) to a viewer that is behind;
/// the rest go in the next write.
const MAX_BATCH_ITEMS: usize = 32;

/// Per-viewer handles to the hot-path metrics (a registry lookup per use would cost
/// more than the measurement).
struct ViewerMetrics {
    queue_delay: metrics::Histogram,
    /// Server-added delay of keyframes (large: their time is mostly the copy into
    /// the socket) and of the other access units, apart.
    latency_key: metrics::Histogram,
    latency_delta: metrics::Histogram,
    bytes_out: metrics::Counter,
}

impl ViewerMetrics {
    fn new(stream: &StreamLabel) -> Self {
        ViewerMetrics {
            queue_delay: QUEUE_DELAY.observe_in(stream),
            latency_key: SERVER_LATENCY.observe_as_in(stream, "key"),
            latency_delta: SERVER_LATENCY.observe_as_in(stream, "delta"),
            bytes_out: BYTES_OUT.count_in(stream),
        }
    }

    /// Records a batch written at `now`.
    fn sent(&self, batch: &Batch, now: Instant) {
        self.bytes_out.increment(batch.bytes());
        for &(published, key) in batch.live() {
            let h = if key {
                &self.latency_key
            } else {
                &self.latency_delta
            };
            h.record(now.saturating_duration_since(published).as_secs_f64());
        }
    }
}

/// After a write of the join's burst (`bytes` in `took`): goes on with it, or drops
/// the rest for the next keyframe when the link is too slow to finish it sooner;
/// counts how the catch-up ended once it has.
fn weigh_catch_up(
    catch_up: &mut CatchUp,
    queue: &ViewerQueue,
    bytes: u64,
    took: Duration,
    now: Instant,
    stream: &StreamLabel,
) {
    let mut queue = queue.lock();
    let remaining = queue.catch_up_bytes() as u64;
    let start = match catch_up.after_write(bytes, took, remaining, now) {
        Plan::WaitForKeyframe => {
            let dropped = queue.skip_catch_up();
            debug!(
                dropped,
                link_kbit_s = catch_up.link_rate().map(|r| (r * 8.0 / 1000.0) as u64),
                "slow link: the viewer starts at the next keyframe, not after the rest of the catch-up"
            );
            "next_keyframe"
        }
        Plan::Burst if catch_up.active() => return,
        Plan::Burst if queue.catch_up_overtaken() => "overtaken",
        Plan::Burst => "gop",
    };
    drop(queue);
    JOINS.count_as_in(stream, start).increment(1);
}

/// Sends `batch`; a socket that took nothing of it for the viewer timeout is stuck
/// (`w` carries the deadline, see progress.rs).
async fn send<W: AsyncWrite + Unpin>(w: &mut W, batch: &Batch) -> Result<(), Ended> {
    match batch.write_to(w).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(Ended::Stuck),
        Err(_) => Err(Ended::Error),
    }
}

/// Reads what the client sent: first `early`, then from the connection.
async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut [u8],
    early: &mut &[u8],
) -> std::io::Result<usize> {
    if early.is_empty() {
        return io.read(buf).await;
    }
    let n = early.len().min(buf.len());
    buf[..n].copy_from_slice(&early[..n]);
    *early = &early[n..];
    Ok(n)
}

/// Drives one viewer: queue → socket, and the client's few control messages.
/// `early` holds what the client sent right behind its handshake; `wake` is the
/// wake group of the viewer thread the task runs on; `link` the TCP socket under
/// `io`, when there is one, asked how much the peer acknowledged during the join.
pub async fn serve_viewer<IO>(
    io: IO,
    state: AppState,
    dialect: Dialect,
    early: &[u8],
    wake: Option<Arc<WakeGroup>>,
    mut link: Option<Link>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    // A viewer is stuck when its socket takes no byte for the viewer timeout; one
    // that takes bytes slowly is a slow viewer, which its queue deals with.
    let mut io = WriteDeadline::new(io, state.viewer_timeout);
    let sub = state.stream.hub.subscribe(std::time::Instant::now());
    if let Some(group) = wake {
        sub.queue.wake_through(group);
    }
    let mut shutdown = state.shutdown.clone();
    info!(
        stream = state.stream.name(),
        dialect = dialect.name(),
        viewers = state.stream.hub.status(std::time::Instant::now()).viewers,
        "viewer joined"
    );
    let facts = StreamFacts {
        source: state.stream.source_kind().to_owned(),
        fps: state.stream.video().fps,
    };
    let m = ViewerMetrics::new(state.stream.hub.stream_label());
    let mut sent_params: Option<Arc<ParamSets>> = None;
    let mut batch = Batch::default();
    let mut items = Vec::with_capacity(MAX_BATCH_ITEMS);
    let mut parser = ClientParser::new(MAX_CLIENT_MESSAGE);
    let mut early = early;
    let mut read_buf = [0u8; 1024];
    let mut rate = MessageRate::new(Instant::now());
    // The join's burst goes out in small batches, each measured (the peer's
    // acknowledgements, else the write's time): on a slow link the rest of it may
    // give way to the next keyframe (core/src/join.rs).
    let mut catch_up = CatchUp::new(sub.join);
    let ended = 'serve: loop {
        let max_bytes = if catch_up.active() {
            CATCH_UP_BATCH_BYTES
        } else {
            usize::MAX
        };
        tokio::select! {
            more = sub.queue.next_batch(MAX_BATCH_ITEMS, max_bytes, &mut items) => {
                if !more { break Ended::Shutdown }
                batch.clear();
                let now = Instant::now();
                // A viewer that is behind gets what is queued in few writes; what
                // does not fit in this batch stays queued for the next.
                for (item, queued_at) in items.drain(..) {
                    m.queue_delay.record(now.saturating_duration_since(queued_at).as_secs_f64());
                    batch.add(&item, dialect, &mut sent_params, &facts);
                }
                if let Err(e) = send(&mut io, &batch).await {
                    break e;
                }
                let done = Instant::now();
                m.sent(&batch, done);
                if catch_up.active() {
                    if let Some(p) = link.as_ref().and_then(Link::progress) {
                        catch_up.acknowledged(p.acked, p.link_time);
                    }
                    weigh_catch_up(&mut catch_up, &sub.queue, batch.bytes(), done.saturating_duration_since(now), done, state.stream.hub.stream_label());
                    if !catch_up.active() {
                        link = None; // its second descriptor is needed no more
                    }
                }
            }
            read = read_some(&mut io, &mut read_buf, &mut early) => {
                let n = match read {
                    Ok(0) | Err(_) => break Ended::Client,
                    Ok(n) => n,
                };
                parser.push(&read_buf[..n]);
                loop {
                    let reply = match parser.next_frame() {
                        Ok(None) => break,
                        Ok(Some(frame)) => {
                            on_client_frame(frame, dialect, &mut rate, Instant::now(), wall_us())
                        }
                        Err(e) => {
                            debug!(dialect = dialect.name(), "client broke the protocol: {e}");
                            Reply::End(Ended::Protocol, Some(Batch::close(e.code, e.reason)))
                        }
                    };
                    match reply {
                        Reply::Nothing => {}
                        Reply::Keyframe => {
                            let outcome = state.stream.hub.request_keyframe(std::time::Instant::now());
                            debug!(outcome = outcome.label(), "the viewer asked for a keyframe");
                        }
                        Reply::Send(b) => {
                            if let Err(e) = send(&mut io, &b).await {
                                break 'serve e;
                            }
                        }
                        Reply::End(why, close) => {
                            if let Some(b) = close {
                                let _ = tokio::time::timeout(Duration::from_millis(500), b.write_to(&mut io)).await;
                            }
                            break 'serve why;
                        }
                    }
                }
            }
            _ = shutdown_requested(&mut shutdown) => break Ended::Shutdown,
        }
    };
    if ended == Ended::Shutdown {
        let bye = Batch::close(wsf::CLOSE_GOING_AWAY, "server shutting down");
        let _ = tokio::time::timeout(
            state.viewer_timeout.min(Duration::from_millis(500)),
            bye.write_to(&mut io),
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(100), io.shutdown()).await;
    let lost = sub.queue.lock().total_lost;
    drop(sub);
    DISCONNECTS
        .count_as_in(state.stream.hub.stream_label(), ended.reason())
        .increment(1);
    if ended != Ended::Client {
        info!(
            stream = state.stream.name(),
            dialect = dialect.name(),
            reason = ended.reason(),
            frames_lost = lost,
            "viewer left"
        );
    } else {
        debug!(
            stream = state.stream.name(),
            dialect = dialect.name(),
            frames_lost = lost,
            "viewer left"
        );
    }
    if matches!(ended, Ended::Protocol | Ended::Client) {
        drain_until_closed(&mut io).await;
    }
}

/// How long a closed viewer's connection is read after the close frame and FIN.
const LINGER: Duration = Duration::from_secs(1);

/// Reads and drops what the client still sends until it closes its side too (RFC
/// 6455 §7.1.1: the server closes TCP first, then the client). Closing a socket
/// with unread input sends a reset, and a reset can destroy the close frame on its
/// way, so the client would see no close code (without this wait, a client that
/// sent 150 pings or an oversized message lost the close frame in 10 of 12 runs of
/// tests/e2e/websocket_protocol.rs).
async fn drain_until_closed<R: AsyncRead + Unpin>(io: &mut R) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalcast_core::protocol;
    use nalcast_sources::SourceSpec;
    use testkit::websocket::{client_frame, read_server_frame};
    use tokio::io::DuplexStream;

    fn state() -> (AppState, tokio::sync::watch::Sender<bool>) {
        state_around(nalcast_core::Hub::new(Default::default()))
    }

    fn state_around(hub: Arc<nalcast_core::Hub>) -> (AppState, tokio::sync::watch::Sender<bool>) {
        let (mut state, stop) = AppState::with_defaults(hub, SourceSpec::Test);
        state.viewer_timeout = Duration::from_secs(2);
        (state, stop)
    }

    async fn read_frame(io: &mut DuplexStream) -> (u8, Vec<u8>) {
        read_server_frame(io).await.expect("a server frame")
    }

    /// A 10 KB access unit captured now.
    fn access_unit(keyframe: bool, params: &Arc<ParamSets>) -> nalcast_h264::AccessUnit {
        testkit::au::frame(params, keyframe, wall_us(), 10_000)
    }

    #[tokio::test]
    async fn on_a_link_slower_than_the_stream_a_joiner_waits_for_the_next_keyframe() {
        use testkit::{au::params, fixtures::SPS_BASELINE_720P as BASELINE_720P};
        let hub = nalcast_core::Hub::new(nalcast_core::HubConfig {
            hls: None,
            ..Default::default()
        });
        let params = params(BASELINE_720P);
        // A 2 s GOP of 10 KB frames (300 KB/s), then 1.5 s of the next one: the
        // next keyframe is due in 0.5 s, and 450 KB of catch-up are cached.
        let frame = Duration::from_millis(33);
        let now = Instant::now();
        let first = now - Duration::from_millis(3500);
        hub.publish(access_unit(true, &params), first);
        for i in 1..60 {
            hub.publish(access_unit(false, &params), first + frame * i);
        }
        let second = first + Duration::from_secs(2);
        hub.publish(access_unit(true, &params), second);
        for i in 1..45 {
            hub.publish(access_unit(false, &params), second + frame * i);
        }
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let (state, _shutdown) = state_around(hub.clone());
        // The source goes on: frames every 33 ms, the next keyframe 2 s late (so a
        // keyframe overtaking the catch-up is not what ends it here).
        let source = tokio::spawn({
            let (hub, params) = (hub.clone(), params.clone());
            async move {
                for i in 0..300 {
                    tokio::time::sleep(frame).await;
                    hub.publish(access_unit(i == 60, &params), std::time::Instant::now());
                }
            }
        });
        let viewer = tokio::spawn(serve_viewer(
            server,
            state,
            Dialect::Framed,
            &[],
            None,
            None,
        ));
        // The link: 8 KB every 80 ms, 100 KB/s, a third of the stream's rate.
        let mut catch_up = 0;
        let skipped = loop {
            let (op, payload) = tokio::time::timeout(Duration::from_secs(20), async {
                tokio::time::sleep(Duration::from_millis(80)).await;
                read_frame(&mut client).await
            })
            .await
            .expect("the server keeps sending");
            assert_eq!(op, wsf::OP_BINARY);
            match payload[0] {
                protocol::MSG_ACCESS_UNIT => {
                    catch_up += 1;
                    assert!(
                        catch_up < 45,
                        "the whole catch-up went out on a link slower than the stream"
                    );
                }
                protocol::MSG_SKIPPED => {
                    break u32::from_le_bytes(payload[1..5].try_into().expect("u32"))
                }
                _ => {}
            }
        };
        assert!(
            catch_up >= 1,
            "the cached keyframe (the first picture) comes first"
        );
        // The link is measured over the first ~48 KB, and then the rest is dropped:
        // far fewer than the 20 frames the link carries until the keyframe comes.
        assert!(catch_up <= 12, "{catch_up} catch-up frames before the skip");
        assert!(
            skipped + catch_up >= 45,
            "{skipped} skipped after {catch_up} sent"
        );
        drop(client);
        source.abort();
        let _ = viewer.await;
    }

    #[tokio::test]
    async fn pings_are_answered_and_binary_messages_close_the_connection() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (state, _shutdown) = state();
        let viewer = tokio::spawn(serve_viewer(
            server,
            state,
            Dialect::Framed,
            &[],
            None,
            None,
        ));
        // The status of the (not yet started) source comes first.
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!((op, payload[0]), (wsf::OP_BINARY, protocol::MSG_STATUS));
        client
            .write_all(&client_frame(0x89, b"hi", [1, 2, 3, 4]))
            .await
            .expect("ping");
        assert_eq!(
            read_frame(&mut client).await,
            (wsf::OP_PONG, b"hi".to_vec())
        );
        let ping = br#"{"type":"ping","t":12.5}"#;
        // Split mid-frame: the parser waits for the rest.
        let bytes = client_frame(0x81, ping, [5, 6, 7, 8]);
        client.write_all(&bytes[..5]).await.expect("part");
        client.write_all(&bytes[5..]).await.expect("rest");
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!((op, payload[0]), (wsf::OP_BINARY, protocol::MSG_PONG));
        client
            .write_all(&client_frame(0x82, &[1, 2, 3], [0; 4]))
            .await
            .expect("binary");
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, wsf::OP_CLOSE);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1003);
        viewer.await.expect("the viewer task ends");
    }
}
