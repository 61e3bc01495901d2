//! What the kernel knows of a viewer's TCP connection (TCP_INFO): how many bytes
//! the peer has acknowledged and for how long the link held data back, the measure
//! of a slow link during a join's catch-up (core/src/join.rs).
use std::os::fd::{AsFd, OwnedFd};

use crate::server::limits::{DescriptorSlot, Slot};

/// The head of Linux's `struct tcp_info` (linux/tcp.h), up to `tcpi_rwnd_limited`
/// (Linux 4.10; nalcast's builds need glibc 2.31, whose distributions run 5.4 and
/// later): the kernel fills what fits, so this also works on kernels whose struct
/// has grown since, and on the 32-bit Pis (every field has a fixed size). Plain
/// integers only, so any bytes the kernel writes make a valid value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfoHead {
    state: [u8; 8],
    times_and_counts: [u32; 24],
    pacing_rates: [u64; 2],
    /// Bytes the peer has acknowledged.
    pub bytes_acked: u64,
    bytes_received: u64,
    segments: [u32; 6],
    delivery_rate: u64,
    /// Microseconds the connection had data to send (sending, or held back by the
    /// peer's receive window or the send buffer).
    pub busy_time: u64,
    /// Of which, microseconds held back by the peer's receive window.
    pub rwnd_limited: u64,
}

/// A viewer connection's progress, as the kernel counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the peer has acknowledged.
    pub acked: u64,
    /// Time the link was what held the data back: busy, less the time the peer's
    /// receive window did (a reader that did not read is not a slow link).
    pub link_time: std::time::Duration,
}

#[cfg(target_os = "linux")]
use nix::{getsockopt_impl, libc, sockopt_impl};

#[cfg(target_os = "linux")]
sockopt_impl!(
    /// `getsockopt(IPPROTO_TCP, TCP_INFO)`, as far as [`TcpInfoHead`] reaches.
    TcpInfo,
    GetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_INFO,
    TcpInfoHead
);

/// A viewer's TCP socket, asked about its progress: a second descriptor of it,
/// held while the join's catch-up is measured and then dropped, and the
/// connection slot that counts it.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
    _counted: Option<DescriptorSlot>,
}

impl Link {
    /// The link of `socket`, counted against the connection budget through the
    /// viewer's `slot`; `None` when the budget or the process has no descriptor
    /// to spare (the join then measures write times instead).
    pub fn of(socket: &impl AsFd, slot: &Slot) -> Option<Self> {
        let counted = slot.descriptor().ok()?;
        Self::uncounted(socket).map(|link| Link {
            _counted: counted,
            ..link
        })
    }

    /// The link of `socket`, outside any budget (tests).
    pub fn uncounted(socket: &impl AsFd) -> Option<Self> {
        socket
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(|fd| Link { fd, _counted: None })
    }

    /// The connection's progress so far; `None` where the kernel does not say.
    pub fn progress(&self) -> Option<Progress> {
        #[cfg(target_os = "linux")]
        {
            nix::sys::socket::getsockopt(&self.fd, TcpInfo)
                .ok()
                .map(|i| Progress {
                    acked: i.bytes_acked,
                    link_time: std::time::Duration::from_micros(
                        i.busy_time.saturating_sub(i.rwnd_limited),
                    ),
                })
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn the_kernel_counts_what_the_peer_acknowledged() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let link = Link::uncounted(&server).expect("a second descriptor");
        let before = link.progress().expect("TCP_INFO on Linux");
        let data = vec![7u8; 100_000];
        server.write_all(&data).expect("write");
        let mut got = vec![0u8; data.len()];
        client.read_exact(&mut got).expect("read");
        // The client has read it all, so its ACKs are on their way: await them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let after = loop {
            let now = link.progress().expect("TCP_INFO");
            if now.acked >= before.acked + data.len() as u64 {
                break now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "acknowledged within 5 s"
            );
            std::thread::yield_now();
        };
        // Busy time is counted in jiffies (1-4 ms): a loopback transfer may add none.
        assert!(after.link_time >= before.link_time);
        let not_tcp = std::fs::File::open("/dev/null").expect("file");
        let file = Link::uncounted(&not_tcp).expect("a second descriptor");
        assert_eq!(file.progress(), None);
    }

    #[test]
    fn the_head_lines_up_with_the_kernels_struct() {
        assert_eq!(
            std::mem::offset_of!(TcpInfoHead, bytes_acked),
            std::mem::offset_of!(nix::libc::tcp_info, tcpi_bytes_acked)
        );
        assert_eq!(
            std::mem::offset_of!(TcpInfoHead, busy_time),
            std::mem::offset_of!(nix::libc::tcp_info, tcpi_busy_time)
        );
        assert_eq!(
            std::mem::offset_of!(TcpInfoHead, rwnd_limited),
            std::mem::offset_of!(nix::libc::tcp_info, tcpi_rwnd_limited)
        );
    }
}
