//! A viewer's video packets written, sealed and sent by nalcast itself once the
//! first access unit has gone out through str0m; str0m keeps ICE, DTLS, RTCP and
//! the keyframe requests.
//!
//! Why: through str0m each packet was written into a buffer, queued, kept for
//! resending, copied, sealed into a new buffer and polled out one at a time, and
//! 100 WebRTC viewers cost 3.2-3.7x what 100 wss:// viewers cost
//! (bench/results/webrtc-2026-12-06.md has the profile). Here a picture's packets are
//! written back to back into the viewer's outbox from the payloads every viewer
//! shares, sealed in place (SRTP AES-GCM, RFC 7714, by ring) and sent as runs.
//!
//! The keys: str0m derives the SRTP keys inside and has no way to hand them out.
//! nalcast is its crypto provider (srtp.rs), so the cipher sealing a session's
//! outgoing packets is nalcast's: it offers the key, the IV and the header of the
//! first RTP packet str0m seals while the session has armed the capture. The IV is
//! the salt XOR the SSRC, rollover counter and sequence number (RFC 7714 section
//! 8.1), so the salt follows; the header str0m wrote (the negotiated extension ids,
//! the mid, playout-delay 0) is the template of every later packet, which is then
//! byte for byte what str0m would have sent. Where the viewer chose AES-CM with
//! HMAC-SHA1 (no AES-GCM), nothing is offered and the session stays on str0m's
//! path.
//!
//! Retransmission: NACKs arrive as RTCP, which str0m hands over as raw packets
//! (`enable_raw_packets`: it copies only what goes through str0m, a few RTCP
//! packets a second once this path has taken over); the packets asked for are
//! sealed and sent again from a history of the shared payloads.
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce};

use super::outbox::Outbox;
use super::WebRtc;

/// The sealing tag's length (AES-GCM, both key sizes).
const TAG_LEN: usize = 16;
/// Packets sent again per second at most: a viewer's NACKs cannot make nalcast
/// send more than about this much on top of the stream (1.2 MB/s at 1200 bytes).
const RESENDS_PER_SECOND: u32 = 1000;

/// What the sealing cipher saw of the first RTP packet while a session watched.
pub struct Captured {
    key: LessSafeKey,
    iv: [u8; 12],
    header: Vec<u8>,
}

thread_local! {
    /// Armed (Some) while a session drives its str0m; filled by the first RTP
    /// packet sealed meanwhile.
    static CAPTURE: RefCell<Option<Option<Captured>>> = const { RefCell::new(None) };
}

/// Watches what the sealing cipher is given until `take` (same thread, no await between).
pub fn arm() {
    CAPTURE.with(|c| *c.borrow_mut() = Some(None));
}

/// Ends the watch: what was captured, if anything.
pub fn take() -> Option<Captured> {
    CAPTURE.with(|c| c.borrow_mut().take().flatten())
}

/// Called by the sealing cipher for every packet it seals: an RTP packet's key, IV
/// and header are kept while armed and nothing is kept yet. SRTCP's associated data
/// is an RTCP header, whose second byte is its packet type (200-207); an RTP
/// header's is the marker and a payload type, never 72-79 (RFC 5761 section 4).
pub(super) fn offer(key: &LessSafeKey, iv: &[u8; 12], aad: &[u8]) {
    CAPTURE.with(|c| {
        let Ok(mut slot) = c.try_borrow_mut() else {
            return;
        };
        if let Some(None) = *slot {
            if aad.len() >= 12 && aad[0] >> 6 == 2 && !(200..=207).contains(&aad[1]) {
                *slot = Some(Some(Captured {
                    key: key.clone(),
                    iv: *iv,
                    header: aad.to_vec(),
                }));
            }
        }
    });
}

/// A packet sent, kept for a NACK: the shared payload and what its header said.
struct Sent {
    seq: u64,
    time: u32,
    marker: bool,
    payload: Arc<[u8]>,
}

/// A session's own sending of its RTP packets.
pub struct Sender {
    key: LessSafeKey,
    salt: [u8; 12],
    /// The first packet's header as str0m wrote it: sequence number, time and
    /// marker are put in for each packet.
    header: Vec<u8>,
    ssrc: [u8; 4],
    history: VecDeque<Sent>,
    keep: usize,
    /// Packets sent again in the current second, and when it began.
    resent: (u32, Instant),
}

impl Sender {
    /// From what the cipher saw: `pt` and `ssrc` are the session's, `seqs` the
    /// (extended) sequence numbers it wrote through str0m. None when the packet is
    /// not one of them or its header is not one this path can repeat (CSRCs,
    /// padding).
    pub fn new(
        captured: Captured,
        pt: u8,
        ssrc: u32,
        seqs: Range<u64>,
        keep: usize,
    ) -> Option<Sender> {
        let Captured { key, iv, header } = captured;
        let h = &header;
        let cc = usize::from(h[0] & 0x0f);
        let padding = h[0] & 0x20 != 0;
        let extension = h[0] & 0x10 != 0;
        let expected = if extension && h.len() >= 16 {
            16 + 4 * usize::from(u16::from_be_bytes([h[14], h[15]]))
        } else {
            12
        };
        if cc != 0 || padding || h.len() != expected || h[1] & 0x7f != pt {
            return None;
        }
        if h[8..12] != ssrc.to_be_bytes() {
            return None;
        }
        let seq16 = u16::from_be_bytes([h[2], h[3]]);
        let seq = extend(seqs.end.checked_sub(1)?, seq16).filter(|s| seqs.contains(s))?;
        let ssrc = ssrc.to_be_bytes();
        Some(Sender {
            key,
            // The IV is the salt XOR the packet's index, so XOR undoes it.
            salt: xor_index(iv, ssrc, seq),
            header,
            ssrc,
            history: VecDeque::with_capacity(keep),
            keep,
            resent: (0, Instant::now()),
        })
    }

    /// The IV of packet `seq` (RFC 7714 section 8.1).
    fn nonce(&self, seq: u64) -> [u8; 12] {
        xor_index(self.salt, self.ssrc, seq)
    }

    /// The SSRC the packets go out under.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes(self.ssrc)
    }

    /// The SRTP packet's size for a payload.
    fn size(&self, payload: &[u8]) -> usize {
        self.header.len() + payload.len() + TAG_LEN
    }

    /// Appends the sealed packet to `out`; false if it could not be sealed.
    fn seal(&self, out: &mut Vec<u8>, seq: u64, time: u32, marker: bool, payload: &[u8]) -> bool {
        let start = out.len();
        out.extend_from_slice(&self.header);
        let header = &mut out[start..];
        header[1] = (header[1] & 0x7f) | (u8::from(marker) << 7);
        header[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        header[4..8].copy_from_slice(&time.to_be_bytes());
        out.extend_from_slice(payload);
        let (aad, body) = out[start..].split_at_mut(self.header.len());
        let nonce = Nonce::assume_unique_for_key(self.nonce(seq));
        match self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*aad), body)
        {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                true
            }
            Err(_) => false,
        }
    }

    /// Seals and sends a packet, and keeps it for a NACK.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        outbox: &mut Outbox,
        webrtc: &WebRtc,
        path: (SocketAddr, SocketAddr),
        seq: u64,
        time: u32,
        marker: bool,
        payload: &Arc<[u8]>,
    ) {
        let len = self.size(payload);
        outbox.push_with(webrtc, path.0, path.1, len, |out| {
            self.seal(out, seq, time, marker, payload)
        });
        if self.history.len() == self.keep {
            self.history.pop_front();
        }
        self.history.push_back(Sent {
            seq,
            time,
            marker,
            payload: payload.clone(),
        });
    }

    /// Sends again the packets a NACK names (16-bit sequence numbers) that are
    /// still kept, within the resend budget; the number sent again.
    pub fn resend(
        &mut self,
        outbox: &mut Outbox,
        webrtc: &WebRtc,
        path: (SocketAddr, SocketAddr),
        asked: impl IntoIterator<Item = u16>,
        now: Instant,
    ) -> u32 {
        if now.duration_since(self.resent.1) >= Duration::from_secs(1) {
            self.resent = (0, now);
        }
        let (Some(first), Some(last)) = (self.history.front(), self.history.back()) else {
            return 0;
        };
        let mut resent = 0;
        let (first, last) = (first.seq, last.seq);
        for seq16 in asked {
            let Some(seq) = extend(last, seq16).filter(|s| *s >= first) else {
                continue;
            };
            if self.resent.0 >= RESENDS_PER_SECOND {
                break;
            }
            self.resent.0 += 1;
            resent += 1;
            let sent = &self.history[(seq - first) as usize];
            let len = self.size(&sent.payload);
            let (time, marker, payload) = (sent.time, sent.marker, sent.payload.clone());
            outbox.push_with(webrtc, path.0, path.1, len, |out| {
                self.seal(out, seq, time, marker, &payload)
            });
        }
        resent
    }
}

/// RFC 7714 section 8.1: `bytes` XOR (00 00, SSRC, rollover counter, sequence
/// number), the packet's index being `seq` (extended: the rollover counter above
/// the 16-bit number). From the salt it makes the IV, from the IV the salt.
fn xor_index(mut bytes: [u8; 12], ssrc: [u8; 4], seq: u64) -> [u8; 12] {
    let roc = ((seq >> 16) as u32).to_be_bytes();
    let seq = (seq as u16).to_be_bytes();
    for i in 0..4 {
        bytes[2 + i] ^= ssrc[i];
        bytes[6 + i] ^= roc[i];
    }
    bytes[10] ^= seq[0];
    bytes[11] ^= seq[1];
    bytes
}

/// The extended sequence number with the low 16 bits `seq16` at or before `last`.
fn extend(last: u64, seq16: u16) -> Option<u64> {
    last.checked_sub(u64::from((last as u16).wrapping_sub(seq16)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::aead::{UnboundKey, AES_128_GCM};

    fn key(bytes: &[u8]) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_128_GCM, bytes).unwrap())
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 7714's test vector (section 16.1.1, AEAD_AES_128_GCM): the packet sealed
    /// here is the RFC's, byte for byte, with the salt learnt from the IV the way a
    /// session learns it from str0m's first packet.
    #[test]
    fn a_packet_is_sealed_as_rfc_7714_says() {
        let key_bytes = hex("000102030405060708090a0b0c0d0e0f");
        let salt = hex("517569642070726f2071756f");
        let plain = hex(
            "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e6973 20646976697361 20696e20706172 74657320747265 73",
        );
        let sealed = hex(
            "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bca be633bd50d294e6f42a5f47a51c7d19b 36de3adf8833899d7f27beb16a9152cf 765ee4390cce",
        );
        let (header, payload) = plain.split_at(12);
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let seq16 = u16::from_be_bytes([header[2], header[3]]);
        // The IV str0m would pass for this packet (ROC 0).
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq16.to_be_bytes());
        for (i, s) in salt.iter().enumerate() {
            iv[i] ^= s;
        }
        // Capture as a session does, then seal.
        arm();
        offer(&key(&key_bytes), &iv, header);
        let captured = take().expect("an RTP header is captured");
        assert!(take().is_none(), "disarmed");
        let pt = header[1] & 0x7f;
        let sender = Sender::new(captured, pt, ssrc, 0xf17b..0xf17c, 4).expect("usable");
        assert_eq!(&sender.salt[..], &salt[..]);
        let mut out = Vec::new();
        assert!(sender.seal(&mut out, 0xf17b, 0x8041f8d3, false, payload));
        assert_eq!(out, sealed);
        assert_eq!(out.len(), sender.size(payload));
    }

    /// The capture takes only RTP (not SRTCP), only while armed, only the first.
    #[test]
    fn only_the_first_rtp_packet_while_armed_is_captured() {
        let k = key(&[1; 16]);
        let rtp = [0x80u8, 0xe0, 0, 5, 0, 0, 0, 9, 1, 2, 3, 4];
        let rtcp = [0x81u8, 200, 0, 6, 1, 2, 3, 4, 0x80, 0, 0, 1];
        offer(&k, &[0; 12], &rtp);
        assert!(take().is_none(), "not armed");
        arm();
        offer(&k, &[1; 12], &rtcp);
        offer(&k, &[2; 12], &rtp);
        offer(&k, &[3; 12], &rtp);
        let c = take().unwrap();
        assert_eq!((c.iv, c.header.as_slice()), ([2; 12], &rtp[..]));
        // Another payload type, another SSRC or a number not written: not ours.
        let again = |iv| Captured {
            key: k.clone(),
            iv,
            header: rtp.to_vec(),
        };
        assert!(Sender::new(again([0; 12]), 0x60, 0x01020304, 0..10, 4).is_some());
        assert!(Sender::new(again([0; 12]), 0x61, 0x01020304, 0..10, 4).is_none());
        assert!(Sender::new(again([0; 12]), 0x60, 7, 0..10, 4).is_none());
        assert!(Sender::new(again([0; 12]), 0x60, 0x01020304, 6..10, 4).is_none());
    }

    /// A NACK gets the very packets again (same bytes), only those still kept,
    /// across the 16-bit wrap, and never more than the budget.
    #[tokio::test]
    async fn a_nack_gets_the_same_packets_again() {
        let webrtc = super::super::on_loopback().await;
        let source = webrtc.addresses()[0];
        webrtc.socket_for(source).unwrap().writable().await.unwrap();
        let viewer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let path = (source, viewer.local_addr().unwrap());
        let header = vec![0x80u8, 0x60, 0xff, 0xfe, 0, 0, 0, 0, 1, 2, 3, 4];
        let first = 0x1_fffe_u64;
        let mut sender = Sender::new(
            Captured {
                key: key(&[9; 16]),
                iv: [0; 12],
                header,
            },
            0x60,
            0x01020304,
            first..first + 1,
            3,
        )
        .unwrap();
        let mut outbox = Outbox::default();
        let payloads: Vec<Arc<[u8]>> = (0..5u8)
            .map(|i| Arc::from(vec![i; 100 + i as usize]))
            .collect();
        for (i, p) in payloads.iter().enumerate() {
            sender.send(&mut outbox, &webrtc, path, first + i as u64, 90, i == 4, p);
            outbox.flush(&webrtc);
        }
        let mut buf = vec![0u8; 2048];
        let mut originals = Vec::new();
        for _ in 0..5 {
            let n = viewer.recv(&mut buf).await.unwrap();
            originals.push(buf[..n].to_vec());
        }
        // The last three are kept (0x2_0000..=0x2_0002, 16-bit 0, 1, 2); 0xfffe is not,
        // and 7 is too far back.
        sender.resend(
            &mut outbox,
            &webrtc,
            path,
            [0xfffe, 2, 0, 7],
            Instant::now(),
        );
        outbox.flush(&webrtc);
        for want in [4, 2] {
            let n = viewer.recv(&mut buf).await.unwrap();
            assert_eq!(buf[..n], originals[want][..], "packet {want} again");
        }
        // The budget: none once spent.
        sender.resent.0 = RESENDS_PER_SECOND;
        sender.resend(&mut outbox, &webrtc, path, [0], Instant::now());
        outbox.flush(&webrtc);
        sender.resend(
            &mut outbox,
            &webrtc,
            path,
            [1],
            Instant::now() + Duration::from_secs(1),
        );
        outbox.flush(&webrtc);
        let n = viewer.recv(&mut buf).await.unwrap();
        assert_eq!(
            buf[..n],
            originals[3][..],
            "after a second the budget is back"
        );
    }
}
