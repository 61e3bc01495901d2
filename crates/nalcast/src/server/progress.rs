//! The write-progress deadline: a connection whose socket takes no byte of what
//! nalcast has to send for the limit (`--viewer-timeout`) is dropped.
//!
//! "Progress" is the socket accepting bytes, which it does as the client
//! acknowledges what it read: a client that reads slowly but steadily makes
//! progress, however small its receive window; one that reads nothing (or is gone)
//! makes none. The kernel's TCP_USER_TIMEOUT cannot say this: on a zero window it
//! counts from the first window probe until the client's window opens wide enough
//! for the whole next queued segment (Linux resets `icsk_probes_tstamp` only then),
//! so a reader whose window reopens a kilobyte at a time while 4–7 KB segments wait
//! was cut while reading (kernel 6.18, `ss -ti`: persist timer, bytes_acked
//! growing ~3 KB/s, reset at the timeout).
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};

/// `inner`, whose writes fail with `TimedOut` once the socket has taken nothing
/// for `limit` while a write waited. Reads pass through.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Runs while writes wait without progress; none while they progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// `inner` with a write-progress deadline of `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection underneath, without the deadline.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Passes a write's outcome on: progress ends a stall, a wait starts or
    /// continues one and fails once it has lasted `limit`.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => {
                let limit = self.limit;
                let stall = self.stalled.get_or_insert_with(|| Box::pin(sleep(limit)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing of what it was sent for the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_fails_the_write_at_the_limit() {
        let (near, _far) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(near, LIMIT);
        let started = tokio::time::Instant::now();
        let err = w
            .write_all(&[0u8; 4096])
            .await
            .expect_err("nothing is read");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMIT);
    }

    /// A reader taking 100 bytes a second, far slower than the writer, keeps the
    /// write going past the limit many times over: each byte taken is progress.
    #[tokio::test(start_paused = true)]
    async fn a_slow_steady_reader_is_never_cut() {
        let (near, mut far) = tokio::io::duplex(100);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 100];
            let mut got = 0;
            while got < 2000 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                got += far.read(&mut buf).await.expect("read");
            }
            got
        });
        let mut w = WriteDeadline::new(near, LIMIT);
        w.write_all(&[1u8; 2000])
            .await
            .expect("a slow reader is served");
        assert_eq!(reader.await.expect("reader"), 2000);
    }

    /// The limit counts one stall, not the time since the first: a reader that
    /// stops for just under the limit, again and again, is served.
    #[tokio::test(start_paused = true)]
    async fn each_stall_is_timed_from_its_own_start() {
        let (near, mut far) = tokio::io::duplex(10);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 10];
            for _ in 0..10 {
                tokio::time::sleep(LIMIT - Duration::from_millis(100)).await;
                far.read_exact(&mut buf).await.expect("read");
            }
        });
        let mut w = WriteDeadline::new(near, LIMIT);
        w.write_all(&[2u8; 100]).await.expect("served");
        reader.await.expect("reader");
    }
}
