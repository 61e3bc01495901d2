//! A session's outgoing datagrams, sent in runs: an access unit's SRTP packets
//! are written back to back into one buffer (sealed in place by sender.rs, or
//! copied from str0m's output), and a system call for each packet was the largest
//! part of what a WebRTC viewer cost (a 720p picture is a dozen packets or more). Linux's
//! UDP segmentation offload (`UDP_SEGMENT`, Linux 4.18) sends a run of equal-sized
//! datagrams to one address in one call: the kernel splits the run into datagrams
//! (or the network card does). The packets of a picture are equal-sized but the
//! last of each NAL unit's fragments, so a picture is one call or a few.
//!
//! Where the kernel refuses it (an older kernel, a device without checksum
//! offload), nalcast says so once and sends each datagram on its own from then on.
//! A full socket buffer drops what does not fit, as a congested network would:
//! NACKs and keyframes recover.
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::warn;

use super::WebRtc;

/// Datagrams in one run at most (the kernel's UDP_MAX_SEGMENTS is 64 before Linux
/// 6.x raised it).
const MAX_SEGMENTS: usize = 64;
/// Bytes in one run at most: one UDP datagram's payload before segmentation.
const MAX_RUN_BYTES: usize = 65_000;

/// Whether segmentation offload still works here (cleared on the first refusal).
static SEGMENTATION: AtomicBool = AtomicBool::new(true);

/// The datagrams of a run, back to back in one buffer: one source and destination,
/// each datagram the size of the first but the last, which may be shorter.
#[derive(Default)]
pub struct Outbox {
    path: Option<(SocketAddr, SocketAddr)>,
    run: Vec<u8>,
    /// The first datagram's size, and how many there are.
    segment: usize,
    count: usize,
    /// The last datagram's size.
    last: usize,
    /// Bytes the kernel took since the owner last read this (`nalcast_bytes_out_total`).
    pub sent: u64,
}

impl Outbox {
    /// Adds a datagram, first sending the run so far when this one cannot join it.
    pub fn push(
        &mut self,
        webrtc: &WebRtc,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.push_with(webrtc, source, destination, contents.len(), |run| {
            run.extend_from_slice(contents);
            true
        });
    }

    /// Adds a datagram of `len` bytes that `write` appends to the run (the
    /// sealing of a packet in place); `write` returning false leaves it out.
    pub fn push_with(
        &mut self,
        webrtc: &WebRtc,
        source: SocketAddr,
        destination: SocketAddr,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
    ) {
        if !self.joins(source, destination, len) {
            self.flush(webrtc);
        }
        let start = self.run.len();
        if !write(&mut self.run) {
            self.run.truncate(start);
            return;
        }
        debug_assert_eq!(self.run.len() - start, len, "the datagram's promised size");
        if self.count == 0 {
            self.segment = len;
        }
        self.path = Some((source, destination));
        self.count += 1;
        self.last = len;
    }

    fn joins(&self, source: SocketAddr, destination: SocketAddr, len: usize) -> bool {
        self.count == 0
            || (self.path == Some((source, destination))
                && self.last == self.segment
                && len <= self.segment
                && self.count < MAX_SEGMENTS
                && self.run.len() + len <= MAX_RUN_BYTES)
    }

    /// Sends the run.
    pub fn flush(&mut self, webrtc: &WebRtc) {
        let Some((source, destination)) = self.path.take() else {
            return;
        };
        if let Some(socket) = webrtc.socket_for(source) {
            self.sent += send(socket, destination, &self.run, self.segment, self.count);
        }
        self.run.clear();
        self.count = 0;
    }
}

/// Sends a run of `count` datagrams, each `segment` bytes but the last, in one call
/// where the kernel can; the bytes it took.
fn send(
    socket: &UdpSocket,
    destination: SocketAddr,
    run: &[u8],
    segment: usize,
    count: usize,
) -> u64 {
    if count > 1 && SEGMENTATION.load(Ordering::Relaxed) {
        match send_run(socket, destination, run, segment) {
            Ok(()) => return run.len() as u64,
            // A full socket buffer: the run is dropped, as a congested link would.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return 0,
            // What a kernel or device without UDP segmentation says (an unknown
            // control message, no checksum offload): never again.
            Err(e) if is_unsupported(&e) => {
                if SEGMENTATION.swap(false, Ordering::Relaxed) {
                    warn!("WebRTC: the kernel refuses UDP segmentation offload ({e}); sending each datagram on its own");
                }
            }
            // Anything else (an unreachable viewer) is this destination's: tried
            // one by one below, segmentation kept for the others.
            Err(_) => {}
        }
    }
    let mut sent = 0;
    for datagram in run.chunks(segment.max(1)) {
        if let Ok(n) = socket.try_send_to(datagram, destination) {
            sent += n as u64;
        }
    }
    sent
}

fn is_unsupported(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|code| {
        [
            Errno::EIO,
            Errno::EINVAL,
            Errno::ENOPROTOOPT,
            Errno::EOPNOTSUPP,
        ]
        .iter()
        .any(|&errno| errno as i32 == code)
    })
}

/// One `sendmsg` with `UDP_SEGMENT`: the run cut by the kernel at `segment` bytes.
fn send_run(
    socket: &UdpSocket,
    destination: SocketAddr,
    run: &[u8],
    segment: usize,
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    let segment = segment as u16;
    let address = SockaddrStorage::from(destination);
    socket.try_io(Interest::WRITABLE, || {
        sendmsg(
            socket.as_raw_fd(),
            &[IoSlice::new(run)],
            &[ControlMessage::UdpGsoSegments(&segment)],
            MsgFlags::empty(),
            Some(&address),
        )
        .map(drop)
        .map_err(std::io::Error::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture's packets (equal-sized, the last shorter), then one of another
    /// size and one to another viewer: each arrives as the datagram it was, in order,
    /// whether sent in runs or one by one.
    #[tokio::test]
    async fn runs_arrive_as_the_datagrams_they_were() {
        let webrtc = super::super::on_loopback().await;
        let source = webrtc.addresses()[0];
        // tokio sends only once it has seen the socket writable (as it has long
        // before a session sends).
        webrtc.socket_for(source).unwrap().writable().await.unwrap();
        let viewer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to_viewer = viewer.local_addr().unwrap();
        let to_other = other.local_addr().unwrap();
        let sizes = [1200, 1200, 1200, 1200, 700, 1200, 300, 1150];
        let mut outbox = Outbox::default();
        for (i, &len) in sizes.iter().enumerate() {
            outbox.push(&webrtc, source, to_viewer, &vec![i as u8; len]);
        }
        outbox.push(&webrtc, source, to_other, &[99; 500]);
        outbox.flush(&webrtc);

        let mut buf = vec![0u8; 65536];
        for (i, &len) in sizes.iter().enumerate() {
            let n = viewer.recv(&mut buf).await.unwrap();
            assert_eq!(n, len, "datagram {i}");
            assert!(buf[..n].iter().all(|&b| b == i as u8), "datagram {i}");
        }
        let n = other.recv(&mut buf).await.unwrap();
        assert_eq!((n, buf[0]), (500, 99));
        assert_eq!(outbox.sent, sizes.iter().sum::<usize>() as u64 + 500);
    }

    /// Which datagrams join a run: same path, the first's size, or one shorter to end it.
    #[test]
    fn a_run_is_equal_sizes_and_a_shorter_last() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut outbox = Outbox::default();
        assert!(outbox.joins(a, b, 1200));
        let add = |outbox: &mut Outbox, len: usize| {
            outbox.path = Some((a, b));
            if outbox.count == 0 {
                outbox.segment = len;
            }
            outbox.run.resize(outbox.run.len() + len, 0);
            outbox.count += 1;
            outbox.last = len;
        };
        add(&mut outbox, 1200);
        assert!(outbox.joins(a, b, 1200));
        assert!(outbox.joins(a, b, 800));
        assert!(!outbox.joins(a, b, 1300), "longer than the first");
        assert!(!outbox.joins(b, a, 1200), "another path");
        add(&mut outbox, 800);
        assert!(!outbox.joins(a, b, 800), "after the shorter last");
        assert!(!outbox.joins(a, b, 1200), "after the shorter last");
    }
}
