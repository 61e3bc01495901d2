//! Accepting connections: socket tuning, TLS with a handshake deadline, HTTP/1.1
//! with a header deadline (so slowloris-style clients that connect and then send
//! nothing, or a byte now and then, are dropped), WebSocket upgrades, and graceful
//! shutdown. Hand-written over hyper rather than `axum::serve` because that one
//! offers neither TLS nor a header timeout.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// How connections on one listener are handled.
#[derive(Clone)]
pub struct ListenOptions {
    /// Kernel send buffer per connection.
    pub send_buffer: usize,
    /// Time a client has for the TLS handshake, and then for each request's headers.
    pub header_timeout: Duration,
    /// TLS, when this listener speaks HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

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
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown_requested(&mut stop) => return,
        };
        tune_socket(&tcp, opts.send_buffer);
        tokio::spawn(connection(
            tcp,
            peer,
            app.clone(),
            opts.clone(),
            shutdown.clone(),
        ));
    }
}

/// Every connection: no Nagle delay (frames go out at once), and a bounded kernel
/// send buffer, so a slow viewer shows up in its queue (and gets skipped to the
/// next keyframe) instead of hiding seconds of video in the kernel.
fn tune_socket(tcp: &TcpStream, send_buffer: usize) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer) {
        debug!("cannot set the socket send buffer: {e}");
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    opts: Arc<ListenOptions>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(tls) = opts.tls.clone() else {
        return http(tcp, peer, app, opts.header_timeout, shutdown).await;
    };
    enum Start {
        Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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
        let stream = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await?;
        Ok::<_, std::io::Error>(Some(Start::Tls(Box::new(stream))))
    };
    match tokio::time::timeout(opts.header_timeout, handshake).await {
        Ok(Ok(Some(Start::Tls(stream)))) => {
            http(*stream, peer, app, opts.header_timeout, shutdown).await
        }
        // Plain HTTP on the HTTPS port: point the browser to the right address.
        Ok(Ok(Some(Start::Plain(tcp)))) => {
            let redirect = Router::new().fallback(to_https);
            http(tcp, peer, redirect, opts.header_timeout, shutdown).await
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

async fn to_https(headers: axum::http::HeaderMap, uri: axum::http::Uri) -> Response {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
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
