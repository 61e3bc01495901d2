//! Viewers on WebSocket, in the order a connection meets them:
//! [`routes`] (Origin, viewer limit, handshake) → [`handover`] (onto a viewer
//! thread) → [`session`] (the loop: queue → [`messages`] → socket, and the
//! client's control messages through [`client`]; [`link`] asks the kernel how the
//! connection is doing).
pub mod client;
pub mod handover;
pub mod link;
pub mod messages;
pub mod routes;
pub mod session;

/// The two dialects (docs/protocol.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// One message per access unit with a header, plus stream-info, skipped, status, pong.
    Framed,
    /// One Annex-B NAL unit per message, as the original design sends.
    Raw,
    /// The framed dialect with access units as fMP4 fragments, after an init
    /// segment, for Media Source Extensions.
    Fmp4,
}

impl Dialect {
    /// The dialect's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Framed => "framed",
            Dialect::Raw => "raw",
            Dialect::Fmp4 => "fmp4",
        }
    }
}

/// Why a viewer's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed or went away.
    Client,
    /// The socket took no data for the viewer timeout.
    Stuck,
    /// Writing failed.
    Error,
    /// The client broke the protocol or its limits.
    Protocol,
    /// The server is stopping.
    Shutdown,
}

impl Ended {
    /// The labels of `nalcast_disconnects_total`, one per way a viewer can end.
    pub const REASONS: [&'static str; 5] = [
        Ended::Client.reason(),
        Ended::Stuck.reason(),
        Ended::Error.reason(),
        Ended::Protocol.reason(),
        Ended::Shutdown.reason(),
    ];

    /// The reason as logs and metrics say it.
    pub const fn reason(self) -> &'static str {
        match self {
            Ended::Client => "client_closed",
            Ended::Stuck => "stuck",
            Ended::Error => "socket_error",
            Ended::Protocol => "protocol_violation",
            Ended::Shutdown => "shutdown",
        }
    }
}
