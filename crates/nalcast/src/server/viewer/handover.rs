//! Hands an upgraded connection to the task that serves it: plain TCP moves to a
//! viewer thread (see threads.rs), TLS stays on the runtime that accepted it.
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::link::Link;
use super::{session, Dialect};
use crate::server::limits::ViewerSlot;
use crate::server::progress::WriteDeadline;
use crate::server::AppState;

/// Serves the connection `connection` yields once the 101 is sent; `slot` is held
/// until the viewer leaves.
pub fn serve(connection: OnUpgrade, state: AppState, dialect: Dialect, slot: ViewerSlot) {
    tokio::spawn(async move {
        let upgraded = match connection.await {
            Ok(upgraded) => upgraded,
            Err(e) => return debug!("WebSocket upgrade failed: {e}"),
        };
        let tcp = match upgraded.downcast::<TokioIo<WriteDeadline<TcpStream>>>() {
            // The session keeps a deadline of its own (session.rs).
            Ok(parts) => parts
                .io
                .into_inner()
                .into_inner()
                .into_std()
                .map(|tcp| (tcp, parts.read_buf)),
            Err(upgraded) => {
                serve_here(upgraded, state, dialect, &slot).await;
                return drop(slot);
            }
        };
        let (tcp, early) = match tcp {
            Ok(moving) => moving,
            Err(e) => return debug!("cannot hand the viewer to a viewer thread: {e}"),
        };
        let threads = state.viewer_threads.clone();
        threads.spawn(move |wake| async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => {
                    let link = Link::of(&tcp, &slot);
                    session::serve_viewer(tcp, state, dialect, &early, wake, link).await;
                }
                Err(e) => debug!("cannot register the viewer's socket: {e}"),
            }
            drop(slot);
        });
    });
}

/// A connection that stays on this runtime: TLS (straight on the TLS stream, whose
/// TCP socket the join measures), or any other kind hyper handed over.
async fn serve_here(upgraded: Upgraded, state: AppState, dialect: Dialect, slot: &ViewerSlot) {
    match upgraded.downcast::<TokioIo<TlsStream<WriteDeadline<TcpStream>>>>() {
        Ok(parts) => {
            let tls = parts.io.into_inner();
            let link = Link::of(tls.get_ref().0.get_ref(), slot);
            session::serve_viewer(tls, state, dialect, &parts.read_buf, None, link).await;
        }
        Err(upgraded) => {
            session::serve_viewer(TokioIo::new(upgraded), state, dialect, &[], None, None).await;
        }
    }
}
