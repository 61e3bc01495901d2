//! Accepting connections: connection slots (in all and per client address, see
//! limits.rs), socket tuning with a write-progress deadline, TLS with a handshake
//! deadline, HTTP/1.1 with a header deadline (so slowloris-style clients that
//! connect and then send nothing, or a byte now and then, are dropped, and so are
//! idle keep-alive connections), WebSocket upgrades, and graceful shutdown.
//! Hand-written over hyper rather than `axum::serve` because that one offers neither
//! TLS nor a header timeout.
use nalcast_core::metric::Series;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use nalcast_core::clock::shutdown_requested;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::Service;
use tracing::{debug, warn};

use super::host::HostPolicy;
use super::limits::{ConnectionLimits, ConnectionSlot, Refused};
use super::progress::WriteDeadline;

/// Connections refused at accept, by limit.
pub const CONNECTIONS_REJECTED: Series = Series::counter(
    "nalcast_connections_rejected_total",
    "connections refused at accept, by reason",
)
.labelled("reason", &["max_connections", "max_connections_per_ip"]);
/// accept() failures.
pub const ACCEPT_ERRORS: Series = Series::counter(
    "nalcast_accept_errors_total",
    "accept() calls that failed (out of file descriptors, for one)",
);

/// How connections on one listener are handled.
#[derive(Clone)]
pub struct ListenOptions {
    /// Kernel send buffer per connection.
    pub send_buffer: usize,
    /// Time a client has for the TLS handshake, and then for each request's headers
    /// (counted from the end of the previous response on a keep-alive connection).
    pub header_timeout: Duration,
    /// Longest time a client's socket may take none of what nalcast has to send
    /// before the connection is dropped (see progress.rs).
    pub write_timeout: Duration,
    /// TLS, when this listener speaks HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Open-connection slots, shared by every listener (descriptors are the process's).
    pub connections: ConnectionLimits,
    /// Names served: plain HTTP on the TLS port is redirected to these only.
    pub hosts: Arc<HostPolicy>,
}

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Most bytes of one request's head (request line and headers) a connection may
/// buffer; a longer head gets 431. hyper's default let every unfinished request
/// hold about 408 KB (4000 x 120 KB of headers: 561 MB); nalcast's requests
/// need a few hundred bytes, a browser's cookies and credentials a few KB. Also
/// what hyper queues of a response before writing it (hyper's minimum is 8 KiB).
/// With --max-connections 4096 at most 64 MiB of heads are buffered in all.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in one request (hyper's default is 100).
pub const MAX_HEADERS: usize = 48;

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: ListenOptions,
    shutdown: watch::Receiver<bool>,
) {
    let opts = Arc::new(opts);
    let mut stop = shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than
                    // spin, and say so once a minute, not ten times a second.
                    ACCEPT_ERRORS.count().increment(1);
                    note_accept_error(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown_requested(&mut stop) => return,
        };
        // Refused before anything is spent on it: no task, no TLS, no parsing.
        let slot = match opts.connections.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                refuse(&tcp, peer, why, opts.tls.is_none());
                continue;
            }
        };
        tune_socket(&tcp, &opts);
        tokio::spawn(connection(
            tcp,
            peer,
            app.clone(),
            opts.clone(),
            shutdown.clone(),
            slot,
        ));
    }
}

/// Counts a connection over the limits and closes it; a plain-HTTP client gets a
/// one-line answer first if its socket takes it at once (never waited for).
fn refuse(tcp: &TcpStream, peer: SocketAddr, why: Refused, plain_http: bool) {
    let (status, reason, text) = match why {
        Refused::Total => (
            "503 Service Unavailable",
            "max_connections",
            "the server has as many connections as it takes (--max-connections)\n",
        ),
        Refused::PerAddress => (
            "429 Too Many Requests",
            "max_connections_per_ip",
            "too many connections from your address (--max-connections-per-ip)\n",
        ),
    };
    CONNECTIONS_REJECTED.count_as(reason).increment(1);
    note_refusal(peer, reason);
    if plain_http {
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = tcp.try_write(answer.as_bytes());
    }
}

/// A warning that may be logged at most once a minute: a flood of refused
/// connections or failing accepts would otherwise fill the log.
struct OncePerMinute {
    start: std::sync::OnceLock<Instant>,
    next_s: AtomicU64,
}

impl OncePerMinute {
    const fn new() -> Self {
        OncePerMinute {
            start: std::sync::OnceLock::new(),
            next_s: AtomicU64::new(0),
        }
    }

    /// Whether the warning may be logged now (then not again for a minute).
    fn due(&self) -> bool {
        let now_s = self.start.get_or_init(Instant::now).elapsed().as_secs();
        let due = self.next_s.load(Ordering::Relaxed);
        now_s >= due
            && self
                .next_s
                .compare_exchange(due, now_s + 60, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Logs refused connections: a warning at most once a minute, else at debug level.
fn note_refusal(peer: SocketAddr, reason: &str) {
    static WARNING: OncePerMinute = OncePerMinute::new();
    if WARNING.due() {
        warn!(%peer, "connections refused ({reason}; counted in {}, next warning in a minute at the earliest)", CONNECTIONS_REJECTED.name);
    } else {
        debug!(%peer, "connection refused ({reason})");
    }
}

/// Logs accept() failures: a warning at most once a minute, else at debug level.
fn note_accept_error(e: &std::io::Error) {
    static WARNING: OncePerMinute = OncePerMinute::new();
    if WARNING.due() {
        warn!("cannot accept a connection: {e} (counted in {}; next warning in a minute at the earliest)", ACCEPT_ERRORS.name);
    } else {
        debug!("cannot accept a connection: {e}");
    }
}

/// Every connection: no Nagle delay (frames go out at once), and a bounded kernel
/// send buffer with little of it unsent, so a slow viewer shows up in its queue
/// (and gets skipped to the next keyframe) instead of hiding seconds of video in
/// the kernel. The write-progress deadline is nalcast's own (progress.rs), not
/// the kernel's TCP_USER_TIMEOUT, which cuts slow but steady readers.
fn tune_socket(tcp: &TcpStream, opts: &ListenOptions) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let sock = socket2::SockRef::from(tcp);
    if let Err(e) = sock.set_send_buffer_size(opts.send_buffer) {
        debug!("cannot set the socket send buffer: {e}");
    }
    // Of the send buffer, at most this much may wait unsent (TCP_NOTSENT_LOWAT): a
    // write then returns as the link takes bytes, which is how a joining viewer's
    // session measures a slow link, and what is still queued in nalcast (not in
    // the kernel) can give way to a newer keyframe. In-flight data is not limited.
    #[cfg(target_os = "linux")]
    if let Err(e) = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        debug!("cannot set TCP_NOTSENT_LOWAT: {e}");
    }
}

/// Most bytes a connection's kernel buffer holds unsent.
#[cfg(target_os = "linux")]
const NOTSENT_LOWAT: u32 = 32 * 1024;

/// One accepted connection; `_slot` is held until it closes or becomes a viewer
/// (which holds a slot of its own, see limits.rs).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    opts: Arc<ListenOptions>,
    shutdown: watch::Receiver<bool>,
    _slot: ConnectionSlot,
) {
    // Every write, TLS records included, must make progress: a client that never
    // reads its responses is dropped wherever the writer waits (hyper between
    // pipelined responses, where no header timer runs; a TLS handshake; a viewer).
    let deadline = |tcp| WriteDeadline::new(tcp, opts.write_timeout);
    let Some(tls) = opts.tls.clone() else {
        return http(deadline(tcp), peer, app, opts.header_timeout, shutdown).await;
    };
    enum Start {
        Tls(Box<tokio_rustls::server::TlsStream<WriteDeadline<TcpStream>>>),
        Plain(TcpStream),
    }
    let handshake = async move {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Ok(None);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return Ok(Some(Start::Plain(tcp)));
        }
        let stream = tokio_rustls::TlsAcceptor::from(tls)
            .accept(deadline(tcp))
            .await?;
        Ok::<_, std::io::Error>(Some(Start::Tls(Box::new(stream))))
    };
    match tokio::time::timeout(opts.header_timeout, handshake).await {
        Ok(Ok(Some(Start::Tls(stream)))) => {
            http(*stream, peer, app, opts.header_timeout, shutdown).await
        }
        // Plain HTTP on the HTTPS port: point the browser to the right address.
        Ok(Ok(Some(Start::Plain(tcp)))) => {
            let redirect = Router::new()
                .fallback(to_https)
                .with_state(opts.hosts.clone());
            http(deadline(tcp), peer, redirect, opts.header_timeout, shutdown).await
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

/// Plain HTTP on the HTTPS port: a redirect to the same name over HTTPS, for a
/// name nalcast serves (one Host header, a path as the target); anything else gets
/// 400 without a Location, or nalcast would send browsers wherever a request's
/// Host said (`Host: evil.example` was redirected to https://evil.example/).
async fn to_https(
    axum::extract::State(hosts): axum::extract::State<Arc<HostPolicy>>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let mut values = headers.get_all(header::HOST).iter();
    let host = match (values.next(), values.next()) {
        (Some(host), None) => host.to_str().ok(),
        _ => None,
    };
    let origin_form = uri.scheme().is_none() && uri.authority().is_none();
    let Some(host) = host.filter(|h| origin_form && hosts.allows(h)) else {
        return (StatusCode::BAD_REQUEST, "this port speaks HTTPS\n").into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, format!("https://{host}{path}"))],
        "this port speaks HTTPS\n",
    )
        .into_response()
}

/// One HTTP/1.1 connection (which may become a WebSocket).
async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // Handlers see the client's address as with axum::serve.
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, "connection ended: {e}");
            }
        }
        _ = shutdown_requested(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_millis(500), conn).await;
        }
    }
}

/// Opens a listener on `addr` (the option `--{what}`), with one line saying why
/// and what to do when it cannot.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A deep accept queue: hundreds of viewers (re)connecting at once after a
        // network blip would otherwise wait for SYN retransmits (1 s and more).
        socket.listen(4096)
    };
    listen().map_err(|e| anyhow::anyhow!(bind_error(addr, what, &e)))
}

/// Why a listener could not be opened, and the fix, in one line.
fn bind_error(addr: SocketAddr, what: &str, e: &std::io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if port < 1024 => format!(
            "cannot listen on {addr} (--{what}): ports below 1024 need root or the \
             CAP_NET_BIND_SERVICE capability (sudo setcap cap_net_bind_service=+ep \
             $(which nalcast)); or use a port from 1024 up, e.g. --{what} {}:8000",
            addr.ip()
        ),
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {addr} (--{what}): another program is using port {port}; \
             stop it, or choose another port with --{what}"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {addr} (--{what}): this machine has no address {}; \
             use 0.0.0.0 for every address",
            addr.ip()
        ),
        _ => format!("cannot listen on {addr} (--{what}): {e}"),
    }
}
