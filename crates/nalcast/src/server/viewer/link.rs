//! What the kernel knows of a viewer's TCP connection (TCP_INFO): how many bytes
//! the peer has acknowledged and for how long the link held data back, the measure
//! of a slow link during a join's catch-up (core/src/join.rs).
use nalcast_core::metric::Series;
use std::os::fd::{AsFd, OwnedFd};

use crate::server::limits::{DescriptorSlot, ViewerSlot};

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

/// Whether the kernel answered TCP_INFO short.
pub const TCP_INFO_UNAVAILABLE: Series = Series::counter(
    "nalcast_tcp_info_unavailable_total",
    "1 once the kernel answered TCP_INFO short (an emulator, a sandbox): joins then measure write times",
);

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
    pub fn of(socket: &impl AsFd, slot: &ViewerSlot) -> Option<Self> {
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
            ask_tcp_info(&SHORT_ANSWER, || {
                nix::sys::socket::getsockopt(&self.fd, TcpInfo)
            })
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

thread_local! {
    /// This thread is asking TCP_INFO: a panic now is nix's length check, caught.
    static PROBING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps the panic hook quiet about the one panic [`ask_tcp_info`] catches (a
/// warning says it in a line of its own); every other panic is printed as
/// before. Call once at start-up.
pub fn quiet_tcp_info_panics() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !PROBING.with(std::cell::Cell::get) {
            print(info);
        }
    }));
}

/// TCP_INFO answered short once: it is not asked again in this process.
#[cfg(target_os = "linux")]
static SHORT_ANSWER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks TCP_INFO through `ask`; `None` when it fails or answers short. nix's typed
/// getsockopt asserts that the kernel filled the whole struct and panics where it
/// did not (qemu-user answers 4 bytes; a sandbox might answer anything): that
/// panic is caught here, once, and TCP_INFO is not asked again in this process,
/// so joins measure write times instead (join.rs). Hand-written around nix rather
/// than with our own getsockopt call, which would need `unsafe` in this crate.
#[cfg(target_os = "linux")]
fn ask_tcp_info<T>(
    short_answer: &std::sync::atomic::AtomicBool,
    ask: impl FnOnce() -> nix::Result<T>,
) -> Option<T> {
    use std::sync::atomic::Ordering;
    if short_answer.load(Ordering::Relaxed) {
        return None;
    }
    PROBING.with(|p| p.set(true));
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(ask));
    PROBING.with(|p| p.set(false));
    match answer {
        Ok(answer) => answer.ok(),
        Err(_) => {
            if !short_answer.swap(true, Ordering::Relaxed) {
                TCP_INFO_UNAVAILABLE.count().increment(1);
                tracing::warn!(
                    "the kernel answered TCP_INFO short (an emulator or a sandbox): joining \
                     viewers' links are measured by write times instead"
                );
            }
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

    /// What nix does when the kernel fills less than the struct (qemu-user: 4 of
    /// 184 bytes): it panics. The join must go on without TCP_INFO, once warned.
    #[test]
    fn a_short_tcp_info_answer_is_none_and_not_asked_again() {
        let short = || -> nix::Result<TcpInfoHead> {
            assert_eq!(
                4usize,
                std::mem::size_of::<TcpInfoHead>(),
                "nix's length check"
            );
            unreachable!()
        };
        let short_answer = std::sync::atomic::AtomicBool::new(false);
        assert!(ask_tcp_info(&short_answer, short).is_none());
        let mut asked = false;
        let fine = || {
            asked = true;
            Ok(TcpInfoHead::default())
        };
        assert!(
            ask_tcp_info(&short_answer, fine).is_none(),
            "not asked again"
        );
        assert!(!asked);
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
