//! Helpers of the end-to-end tests that know nalcast's own types (the framed
//! protocol, the test pattern) or TLS; the rest is the test kit's
//! (crates/testkit: the launcher, HTTP and WebSocket clients).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nalcast_core::protocol::{self, ServerMessage};
use nalcast_sources::test_pattern::TestPattern;
use nalcast_sources::VideoSettings;
use tokio::io::{AsyncRead, AsyncWrite};

pub use testkit::annexb::{nal_types, raw_nal_type};
pub use testkit::server::*;

/// The next framed-protocol message.
pub async fn next_framed<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    timeout: Duration,
) -> Option<ServerMessage> {
    let b = next_binary(ws, timeout).await?;
    Some(protocol::decode(&b).expect("valid framed message"))
}

/// Writes an Annex-B file of `frames` test-pattern frames.
pub fn write_h264(path: &Path, width: u32, height: u32, frames: u32, keyframe_interval: u32) {
    let mut pattern = TestPattern::new(&VideoSettings {
        width,
        height,
        fps: 30,
        bitrate: 500_000,
        keyframe_interval,
    })
    .expect("encoder");
    let mut out = Vec::new();
    for i in 0..frames {
        out.extend_from_slice(
            pattern
                .next_frame(1_000_000 + u64::from(i) * 33_333, false)
                .expect("encode"),
        );
    }
    std::fs::write(path, out).expect("write h264");
}

/// A TLS client that trusts exactly the certificate in `cert_pem` (pinning it).
pub fn pinned_tls(cert_pem: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(cert_pem).expect("certificate file")
    {
        roots.add(cert.expect("PEM certificate")).expect("trusted");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Opens a TLS connection to `addr`, checking the certificate for `name`.
pub async fn tls_connect(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tls.connect(name, tcp).await
}

/// SHA-256 of the certificate a TLS connection presents, as nalcast prints it.
pub fn peer_fingerprint(stream: &TlsStream) -> String {
    let cert = &stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0];
    ring::digest::digest(&ring::digest::SHA256, cert)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TCP connection to `addr` from the loopback address `local` (127.0.0.0/8 is
/// all ours, so each test client can be a different "client address").
pub async fn connect_from(
    local: &str,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().expect("local address"))?;
    socket.connect(addr).await
}
