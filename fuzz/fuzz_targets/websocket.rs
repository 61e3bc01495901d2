//! WebSocket client-frame parser (what every viewer's socket reads): never panics,
//! gives the same frames (and the same refusal) however the bytes are split, stops
//! at the first refusal, never gives a message over the cap (fragments included)
//! nor a close code that must not go on the wire (so echoing one is safe), and every
//! accepted message re-encodes to bytes that parse back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nalcast::server::websocket::framing::{
    close_code_allowed, parse_in_pieces, ClientFrame, FrameError,
};
use testkit::websocket::client_frame;

const MAX: usize = 4096;

fn parse(input: &[u8], cuts: &[usize]) -> Vec<Result<ClientFrame, FrameError>> {
    parse_in_pieces(input, MAX, cuts.iter().copied())
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses split points; the rest is the client's byte stream.
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = parse(input, &[]);
    let step = usize::from(seed % 16) + 1;
    let cuts: Vec<usize> = (step..input.len()).step_by(step).collect();
    assert_eq!(parse(input, &cuts), whole, "split every {step} bytes");
    for frame in whole.iter().flatten() {
        match frame {
            ClientFrame::Text(t) => assert!(t.len() <= MAX),
            ClientFrame::Binary(b) => assert!(b.len() <= MAX),
            ClientFrame::Close(Some(code)) => assert!(close_code_allowed(*code), "{code}"),
            _ => {}
        }
        let bytes = match frame {
            ClientFrame::Text(t) => client_frame(0x81, t.as_bytes(), [9, 8, 7, 6]),
            ClientFrame::Binary(b) => client_frame(0x82, b, [1, 2, 3, 4]),
            ClientFrame::Ping(p) => client_frame(0x89, p, [0, 0, 0, 0]),
            ClientFrame::Pong | ClientFrame::Close(_) => continue,
        };
        assert_eq!(parse(&bytes, &[]), vec![Ok(frame.clone())]);
    }
});
