//! Turns a viewer's queue items into the WebSocket messages of its dialect, and
//! writes them together in one vectored write. Payloads are shared, never copied
//! per viewer: each message is a tiny frame header beside the hub's bytes.
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nalcast_core::protocol::{self, StreamInfoMsg};
use nalcast_core::queue::Item;
use nalcast_core::SharedAu;
use nalcast_h264::{ParamSets, UnitType};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Dialect;
use crate::server::websocket::framing::{self as wsf, Header};

/// What stream-info says besides the parameter sets.
#[derive(Clone, Debug, Default)]
pub struct StreamFacts {
    /// The kind of source (never its command line).
    pub source: String,
    /// The frame rate to announce when the SPS carries none.
    pub fps: u32,
}

/// The stream-info message for `params`.
pub fn stream_info(facts: &StreamFacts, params: &ParamSets) -> Bytes {
    let i = &params.info;
    protocol::encode_stream_info(&StreamInfoMsg {
        codec: i.codec.clone(),
        width: i.width,
        height: i.height,
        fps: i.fps.or(Some(f64::from(facts.fps))),
        source: facts.source.clone(),
        baseline: i.baseline_compatible,
        profile: i.profile_name().to_owned(),
    })
}

/// Messages on their way to one viewer, written together in one vectored write.
#[derive(Default)]
pub struct Batch {
    messages: Vec<(Header, Bytes)>,
    /// When the live access units in this batch were published, and whether they
    /// are keyframes (for the latency histogram).
    live: Vec<(Instant, bool)>,
}

impl Batch {
    /// Empties the batch for reuse.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.live.clear();
    }

    /// A batch of one message.
    pub fn one(opcode: u8, payload: Bytes) -> Self {
        let mut batch = Batch::default();
        batch.push(opcode, payload);
        batch
    }

    /// A close message with `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> Self {
        Batch::one(wsf::OP_CLOSE, Bytes::from(wsf::close_payload(code, reason)))
    }

    fn push(&mut self, opcode: u8, payload: Bytes) {
        self.messages
            .push((Header::new(opcode, payload.len()), payload));
    }

    /// The messages: (opcode, payload).
    pub fn messages(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.messages
            .iter()
            .map(|(h, p)| (h.as_bytes()[0] & 0x0f, p.as_ref()))
    }

    /// When the live access units were published, and whether each is a keyframe.
    pub fn live(&self) -> &[(Instant, bool)] {
        &self.live
    }

    /// Bytes on the wire, headers included.
    pub fn bytes(&self) -> u64 {
        self.messages
            .iter()
            .map(|(h, p)| (h.as_bytes().len() + p.len()) as u64)
            .sum()
    }

    /// Adds the messages that carry `item` in `dialect`. `sent_params` is the
    /// parameter set the viewer last got a stream-info for: a framed viewer gets a
    /// new one before the first access unit that uses other parameter sets.
    pub fn add(
        &mut self,
        item: &Item,
        dialect: Dialect,
        sent_params: &mut Option<Arc<ParamSets>>,
        facts: &StreamFacts,
    ) {
        match (item, dialect) {
            (Item::Au { au, catch_up }, Dialect::Framed) => {
                self.announce(au, sent_params, facts, None);
                let message = if *catch_up {
                    au.message_catch_up()
                } else {
                    au.message.clone()
                };
                self.push(wsf::OP_BINARY, message);
                self.note_live(au, *catch_up);
            }
            (Item::Au { au, catch_up }, Dialect::Fmp4) => {
                // Only an access unit the packager refused has none (it was logged).
                let Some(fmp4) = &au.fmp4 else { return };
                self.announce(au, sent_params, facts, Some(&fmp4.init));
                let message = if *catch_up {
                    protocol::with_catch_up(&fmp4.message)
                } else {
                    fmp4.message.clone()
                };
                self.push(wsf::OP_BINARY, message);
                self.note_live(au, *catch_up);
            }
            (Item::Au { au, catch_up }, Dialect::Raw) => {
                let unit = &au.au;
                for i in 0..unit.nals.len() {
                    // Broadway.js needs only parameter sets and slices.
                    if matches!(
                        unit.nal_type(i),
                        Some(
                            UnitType::SeqParameterSet
                                | UnitType::PicParameterSet
                                | UnitType::SliceLayerWithoutPartitioningIdr
                                | UnitType::SliceLayerWithoutPartitioningNonIdr
                                | UnitType::SliceDataPartitionALayer
                                | UnitType::SliceDataPartitionBLayer
                                | UnitType::SliceDataPartitionCLayer
                        )
                    ) {
                        self.push(wsf::OP_BINARY, unit.nal(i));
                    }
                }
                self.note_live(au, *catch_up);
            }
            (Item::Skipped(n), Dialect::Framed | Dialect::Fmp4) => {
                self.push(wsf::OP_BINARY, protocol::encode_skipped(*n))
            }
            (Item::Status(s), Dialect::Framed | Dialect::Fmp4) => {
                self.push(wsf::OP_BINARY, protocol::encode_status(s))
            }
            (Item::Skipped(_) | Item::Status(_), Dialect::Raw) => {}
        }
    }

    /// A stream-info (and for fMP4 viewers the init segment) before the first
    /// access unit whose parameter sets the viewer has not been told of.
    fn announce(
        &mut self,
        au: &SharedAu,
        sent_params: &mut Option<Arc<ParamSets>>,
        facts: &StreamFacts,
        init: Option<&Bytes>,
    ) {
        if sent_params
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, au.params()))
        {
            return;
        }
        self.push(wsf::OP_BINARY, stream_info(facts, au.params()));
        if let Some(init) = init {
            self.push(wsf::OP_BINARY, init.clone());
        }
        *sent_params = Some(au.params().clone());
    }

    fn note_live(&mut self, au: &SharedAu, catch_up: bool) {
        if !catch_up {
            self.live.push((au.published, au.keyframe()));
        }
    }

    /// Writes everything, however the socket splits it.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.messages.len() * 2);
        for (header, payload) in &self.messages {
            slices.push(IoSlice::new(header.as_bytes()));
            if !payload.is_empty() {
                slices.push(IoSlice::new(payload));
            }
        }
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = w.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalcast_core::protocol::{StreamState, MSG_SKIPPED, MSG_STATUS, MSG_STREAM_INFO};

    use testkit::au::{frame, params};
    use testkit::fixtures::{SPS_BASELINE_720P as BASELINE_720P, SPS_MAIN_360P as MAIN_360P};

    fn unit(seq: u32, keyframe: bool, params: &Arc<ParamSets>) -> Item {
        let au = frame(params, keyframe, 1000 * u64::from(seq), 3);
        Item::Au {
            au: Arc::new(SharedAu::new(seq, au, Instant::now())),
            catch_up: seq == 1,
        }
    }

    fn facts() -> StreamFacts {
        StreamFacts {
            source: "test".into(),
            fps: 25,
        }
    }

    fn kinds(batch: &Batch) -> Vec<(u8, u8)> {
        batch.messages().map(|(op, p)| (op, p[0])).collect()
    }

    #[test]
    fn framed_viewers_get_stream_info_before_the_first_unit_and_at_each_change() {
        let (a, b) = (params(BASELINE_720P), params(MAIN_360P));
        let mut sent = None;
        let mut batch = Batch::default();
        for item in [unit(1, true, &a), unit(2, false, &a), unit(3, true, &b)] {
            batch.add(&item, Dialect::Framed, &mut sent, &facts());
        }
        let info = (wsf::OP_BINARY, MSG_STREAM_INFO);
        let unit = (wsf::OP_BINARY, protocol::MSG_ACCESS_UNIT);
        assert_eq!(kinds(&batch), [info, unit, unit, info, unit]);
        let widths: Vec<u64> = batch
            .messages()
            .filter(|(_, p)| p[0] == MSG_STREAM_INFO)
            .map(|(_, p)| {
                let json: serde_json::Value =
                    serde_json::from_slice(&p[1..]).expect("stream-info is JSON");
                json["width"].as_u64().expect("width")
            })
            .collect();
        assert_eq!(widths, [1280, 640]);
        // The catch-up unit is flagged, the live ones are timed.
        let flags: Vec<u8> = batch
            .messages()
            .filter(|(_, p)| p[0] == protocol::MSG_ACCESS_UNIT)
            .map(|(_, p)| p[1] & protocol::FLAG_CATCH_UP)
            .collect();
        assert_eq!(flags, [protocol::FLAG_CATCH_UP, 0, 0]);
        assert_eq!(batch.live().len(), 2);
        assert_eq!(
            batch.live().iter().map(|l| l.1).collect::<Vec<_>>(),
            [false, true]
        );
    }

    /// `item` as the hub makes it for /ws/fmp4 viewers: `init` stands for the
    /// parameter sets' init segment.
    fn with_fmp4(item: Item, init: &'static [u8]) -> Item {
        let Item::Au { au, catch_up } = item else {
            return item;
        };
        let au = Arc::try_unwrap(au).expect("not shared yet");
        let fmp4 = nalcast_core::Fmp4Unit {
            init: protocol::encode_init_segment(init),
            message: protocol::encode_fragment(0, au.seq, 0, b"moof+mdat"),
        };
        Item::Au {
            au: Arc::new(au.with_fmp4(fmp4)),
            catch_up,
        }
    }

    #[test]
    fn fmp4_viewers_get_an_init_segment_after_each_stream_info() {
        let (a, b) = (params(BASELINE_720P), params(MAIN_360P));
        let mut sent = None;
        let mut batch = Batch::default();
        let items = [
            with_fmp4(unit(1, true, &a), b"init-a"),
            with_fmp4(unit(2, false, &a), b"init-a"),
            // Packaging failed: nothing to send.
            unit(3, false, &a),
            with_fmp4(unit(4, true, &b), b"init-b"),
            Item::Skipped(2),
        ];
        for item in &items {
            batch.add(item, Dialect::Fmp4, &mut sent, &facts());
        }
        let got: Vec<(u8, Vec<u8>)> = batch
            .messages()
            .map(|(_, p)| {
                let tail = match p[0] {
                    protocol::MSG_INIT_SEGMENT => p[1..].to_vec(),
                    protocol::MSG_FRAGMENT => vec![p[1], p[2]],
                    _ => Vec::new(),
                };
                (p[0], tail)
            })
            .collect();
        use protocol::{MSG_FRAGMENT as FRAG, MSG_INIT_SEGMENT as INIT};
        let catch_up = protocol::FLAG_CATCH_UP;
        assert_eq!(
            got,
            [
                (MSG_STREAM_INFO, vec![]),
                (INIT, b"init-a".to_vec()),
                (FRAG, vec![catch_up, 1]),
                (FRAG, vec![0, 2]),
                (MSG_STREAM_INFO, vec![]),
                (INIT, b"init-b".to_vec()),
                (FRAG, vec![0, 4]),
                (MSG_SKIPPED, vec![]),
            ]
        );
    }

    #[test]
    fn raw_viewers_get_parameter_sets_and_slices_only() {
        let a = params(BASELINE_720P);
        let mut sent = None;
        let mut batch = Batch::default();
        let skipped = Item::Skipped(4);
        let status = Item::Status(StreamState::SourceLost(String::new()));
        for item in [unit(1, true, &a), skipped, status, unit(2, false, &a)] {
            batch.add(&item, Dialect::Raw, &mut sent, &facts());
        }
        // NAL unit types after the start code: SPS, PPS, IDR, then a slice; no SEI,
        // no stream-info, skipped or status messages.
        let types: Vec<u8> = batch.messages().map(|(_, p)| p[4] & 0x1f).collect();
        assert_eq!(types, [7, 8, 5, 1]);
        assert!(sent.is_none());
    }

    #[test]
    fn framed_viewers_hear_of_skips_and_status() {
        let mut batch = Batch::default();
        let status = Item::Status(StreamState::SourceLost(String::new()));
        for item in [Item::Skipped(3), status] {
            batch.add(&item, Dialect::Framed, &mut None, &facts());
        }
        let kinds: Vec<u8> = batch.messages().map(|(_, p)| p[0]).collect();
        assert_eq!(kinds, [MSG_SKIPPED, MSG_STATUS]);
        assert!(batch.live().is_empty());
    }

    #[tokio::test]
    async fn a_batch_is_written_whole_however_the_socket_splits_it() {
        let a = params(BASELINE_720P);
        let mut batch = Batch::default();
        for seq in 1..=40 {
            batch.add(
                &unit(seq, seq == 1, &a),
                Dialect::Framed,
                &mut None,
                &facts(),
            );
        }
        // A pipe far smaller than the batch: many partial writes.
        let (mut client, mut server) = tokio::io::duplex(7);
        let expected = batch.bytes() as usize;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
                .await
                .expect("read");
            got
        });
        batch.write_to(&mut server).await.expect("written");
        drop(server);
        let got = reader.await.expect("reader");
        assert_eq!(got.len(), expected);
        let mut rest = &got[..];
        let mut n = 0;
        while let Some((op, payload, used)) = testkit::websocket::parse_server_frame(rest) {
            assert_eq!(op, wsf::OP_BINARY);
            assert!(!payload.is_empty());
            rest = &rest[used..];
            n += 1;
        }
        assert!(rest.is_empty());
        assert_eq!(n, batch.messages().count());
    }
}
