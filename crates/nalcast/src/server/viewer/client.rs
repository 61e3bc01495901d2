//! What a viewer's client may say, and what the server does about it: pings are
//! answered, keyframe requests passed on, closes echoed, and a client that talks
//! too much or out of turn is closed. Pure: time comes in as arguments.
use std::time::{Duration, Instant};

use bytes::Bytes;
use nalcast_core::protocol::{self, ClientMessage};

use super::messages::Batch;
use super::{Dialect, Ended};
use crate::server::websocket::framing::{self as wsf, ClientFrame};

/// Clients only send small control messages.
pub const MAX_CLIENT_MESSAGE: usize = 4096;
/// The page pings every 2 s and sometimes asks for a keyframe: this is generous.
/// Every message counts, WebSocket pings and pongs too (each ping costs a pong).
pub const MAX_CLIENT_MESSAGES_PER_10S: u32 = 100;

/// What the client's message asks of the viewer's session.
pub enum Reply {
    /// Nothing to do.
    Nothing,
    /// Send this.
    Send(Batch),
    /// The client asks for a keyframe (it lost its place in the stream).
    Keyframe,
    /// End the session, after sending this close message if there is one.
    End(Ended, Option<Batch>),
}

/// How many messages the client sent in the current 10-second window.
pub struct MessageRate {
    start: Instant,
    count: u32,
}

impl MessageRate {
    /// A window starting at `now`.
    pub fn new(now: Instant) -> Self {
        MessageRate {
            start: now,
            count: 0,
        }
    }

    /// Counts one message arriving at `now`; false once the window holds more than
    /// the client may send.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.start) >= Duration::from_secs(10) {
            *self = MessageRate::new(now);
        }
        self.count = self.count.saturating_add(1);
        self.count <= MAX_CLIENT_MESSAGES_PER_10S
    }
}

/// Handles one message from the client, arrived at `now` (`wall_us`: the server's
/// wall clock then, in µs, for the pong).
pub fn on_client_frame(
    frame: ClientFrame,
    dialect: Dialect,
    rate: &mut MessageRate,
    now: Instant,
    wall_us: u64,
) -> Reply {
    if let ClientFrame::Close(code) = frame {
        // The parser let through only codes that may go on the wire; an empty close
        // is answered with an empty one (1005 "no code" is never sent).
        let echo = match code {
            Some(code) => Batch::close(code, ""),
            None => Batch::one(wsf::OP_CLOSE, Bytes::new()),
        };
        return Reply::End(Ended::Client, Some(echo));
    }
    if !rate.allow(now) {
        return Reply::End(
            Ended::Protocol,
            Some(Batch::close(wsf::CLOSE_POLICY, "too many messages")),
        );
    }
    let text = match frame {
        ClientFrame::Ping(payload) => {
            return Reply::Send(Batch::one(wsf::OP_PONG, Bytes::from(payload)))
        }
        ClientFrame::Pong | ClientFrame::Close(_) => return Reply::Nothing,
        ClientFrame::Binary(_) => {
            return Reply::End(
                Ended::Protocol,
                Some(Batch::close(
                    wsf::CLOSE_UNSUPPORTED,
                    "binary messages are not accepted",
                )),
            )
        }
        ClientFrame::Text(text) => text,
    };
    match (dialect, protocol::parse_client(&text)) {
        (Dialect::Framed | Dialect::Fmp4, Ok(ClientMessage::Ping { t })) => Reply::Send(
            Batch::one(wsf::OP_BINARY, protocol::encode_pong(t, wall_us)),
        ),
        (_, Ok(ClientMessage::Keyframe)) => Reply::Keyframe,
        // The original page's clients may send text we do not know; ignore it.
        (Dialect::Raw, Err(_)) => Reply::Nothing,
        _ => Reply::End(
            Ended::Protocol,
            Some(Batch::close(wsf::CLOSE_UNSUPPORTED, "unsupported message")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_message_counts_against_the_rate_limit_per_window() {
        let start = Instant::now();
        let mut rate = MessageRate::new(start);
        for _ in 0..MAX_CLIENT_MESSAGES_PER_10S {
            assert!(rate.allow(start + Duration::from_secs(9)));
        }
        assert!(!rate.allow(start + Duration::from_secs(9)));
        // A new window starts 10 s after the last one began.
        assert!(rate.allow(start + Duration::from_secs(10)));
    }

    /// The close frame a reply ends with: (code, if any).
    fn close_code_of(reply: &Reply) -> Option<Option<u16>> {
        let Reply::End(_, Some(batch)) = reply else {
            return None;
        };
        let (opcode, payload) = batch.messages().next()?;
        assert_eq!(opcode, wsf::OP_CLOSE);
        Some(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
    }

    #[test]
    fn closes_are_echoed_and_pings_are_rate_limited() {
        let now = Instant::now();
        let mut rate = MessageRate::new(now);
        let mut on = |frame| on_client_frame(frame, Dialect::Framed, &mut rate, now, 0);
        assert_eq!(
            close_code_of(&on(ClientFrame::Close(Some(4000)))),
            Some(Some(4000))
        );
        assert_eq!(close_code_of(&on(ClientFrame::Close(None))), Some(None));
        for _ in 0..MAX_CLIENT_MESSAGES_PER_10S - 1 {
            assert!(matches!(
                on(ClientFrame::Ping(b"p".to_vec())),
                Reply::Send(_)
            ));
        }
        assert!(matches!(on(ClientFrame::Pong), Reply::Nothing));
        let over = on(ClientFrame::Ping(b"p".to_vec()));
        assert_eq!(close_code_of(&over), Some(Some(wsf::CLOSE_POLICY)));
    }

    #[test]
    fn each_dialect_understands_its_own_text_messages() {
        let now = Instant::now();
        let mut rate = MessageRate::new(now);
        let mut on = |dialect, text: &str| {
            on_client_frame(ClientFrame::Text(text.into()), dialect, &mut rate, now, 7)
        };
        let keyframe = r#"{"type":"keyframe"}"#;
        assert!(matches!(on(Dialect::Framed, keyframe), Reply::Keyframe));
        assert!(matches!(on(Dialect::Raw, keyframe), Reply::Keyframe));
        let Reply::Send(pong) = on(Dialect::Framed, r#"{"type":"ping","t":1.5}"#) else {
            panic!("a framed ping is answered");
        };
        let (_, payload) = pong.messages().next().expect("pong");
        assert_eq!(payload[0], protocol::MSG_PONG);
        // The original page's viewers may say anything; framed ones may not.
        assert!(matches!(on(Dialect::Raw, "hello"), Reply::Nothing));
        assert!(matches!(
            on(Dialect::Framed, "hello"),
            Reply::End(Ended::Protocol, Some(_))
        ));
    }
}
