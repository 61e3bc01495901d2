//! Hands an upgraded connection to the task that serves it: plain TCP moves to a
//! viewer thread (see threads.rs), TLS stays on the runtime that accepted it.
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::{session, Dialect};
use crate::server::limits::Slot;
use crate::server::AppState;

/// Serves the connection `connection` yields once the 101 is sent; `slot` is held
/// until the viewer leaves.
pub fn serve(connection: OnUpgrade, state: AppState, dialect: Dialect, slot: Slot) {
    tokio::spawn(async move {
        let upgraded = match connection.await {
            Ok(upgraded) => upgraded,
            Err(e) => return debug!("WebSocket upgrade failed: {e}"),
        };
        let tcp = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts
                .io
                .into_inner()
                .into_std()
                .map(|tcp| (tcp, parts.read_buf)),
            Err(upgraded) => {
                session::serve_viewer(TokioIo::new(upgraded), state, dialect, &[], None).await;
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
                Ok(tcp) => session::serve_viewer(tcp, state, dialect, &early, wake).await,
                Err(e) => debug!("cannot register the viewer's socket: {e}"),
            }
            drop(slot);
        });
    });
}
