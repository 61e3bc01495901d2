//! A session's outgoing datagrams, sent in runs: str0m hands over an access unit's
//! SRTP packets one by one, and a system call for each was the largest part of
//! what a WebRTC viewer cost (a 720p picture is a dozen packets or more). Linux's
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

use str0m::net::DatagramSend;
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

/// The datagrams of a run: one source and destination, each datagram the size of
/// the first but the last, which may be shorter.
#[derive(Default)]
pub struct Outbox {
    path: Option<(SocketAddr, SocketAddr)>,
    datagrams: Vec<DatagramSend>,
    bytes: usize,
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
        contents: DatagramSend,
    ) {
        if !self.joins(source, destination, contents.len()) {
            self.flush(webrtc);
        }
        self.path = Some((source, destination));
        self.bytes += contents.len();
        self.datagrams.push(contents);
    }

    fn joins(&self, source: SocketAddr, destination: SocketAddr, len: usize) -> bool {
        let Some(first) = self.datagrams.first() else {
            return true;
        };
        let size = first.len();
        let last = self.datagrams[self.datagrams.len() - 1].len();
        self.path == Some((source, destination))
            && last == size
            && len <= size
            && self.datagrams.len() < MAX_SEGMENTS
            && self.bytes + len <= MAX_RUN_BYTES
    }

    /// Sends the run.
    pub fn flush(&mut self, webrtc: &WebRtc) {
        let Some((source, destination)) = self.path.take() else {
            return;
        };
        let mut datagrams = std::mem::take(&mut self.datagrams);
        let bytes = std::mem::take(&mut self.bytes);
        if let Some(socket) = webrtc.socket_for(source) {
            self.sent += send(socket, destination, &datagrams, bytes);
        }
        datagrams.clear();
        self.datagrams = datagrams;
    }
}

/// Sends a run, in one call where the kernel can; the bytes it took.
fn send(
    socket: &UdpSocket,
    destination: SocketAddr,
    datagrams: &[DatagramSend],
    bytes: usize,
) -> u64 {
    if datagrams.len() > 1 && SEGMENTATION.load(Ordering::Relaxed) {
        match send_run(socket, destination, datagrams) {
            Ok(()) => return bytes as u64,
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
    for datagram in datagrams {
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

/// One `sendmsg` with `UDP_SEGMENT`: the datagrams as one buffer cut at the first's size.
fn send_run(
    socket: &UdpSocket,
    destination: SocketAddr,
    datagrams: &[DatagramSend],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    let segment = datagrams[0].len() as u16;
    let slices: Vec<IoSlice> = datagrams.iter().map(|d| IoSlice::new(d)).collect();
    let address = SockaddrStorage::from(destination);
    socket.try_io(Interest::WRITABLE, || {
        sendmsg(
            socket.as_raw_fd(),
            &slices,
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
            outbox.push(&webrtc, source, to_viewer, vec![i as u8; len].into());
        }
        outbox.push(&webrtc, source, to_other, vec![99; 500].into());
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
        outbox.path = Some((a, b));
        outbox.datagrams.push(vec![0; 1200].into());
        outbox.bytes = 1200;
        assert!(outbox.joins(a, b, 1200));
        assert!(outbox.joins(a, b, 800));
        assert!(!outbox.joins(a, b, 1300), "longer than the first");
        assert!(!outbox.joins(b, a, 1200), "another path");
        outbox.datagrams.push(vec![0; 800].into());
        assert!(!outbox.joins(a, b, 800), "after the shorter last");
        assert!(!outbox.joins(a, b, 1200), "after the shorter last");
    }
}
