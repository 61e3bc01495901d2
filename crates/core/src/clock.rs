//! Wall-clock helpers. Policies take time as a parameter; only the edges read a clock.
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch on this machine's wall clock.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Resolves once a shutdown flag turns true (or its sender is gone).
pub async fn shutdown_requested(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
