//! WebSocket client-frame parser (what every viewer's socket reads): never panics,
//! gives the same frames (and the same refusal) however the bytes are split, stops
//! at the first refusal, and every accepted frame re-encodes to bytes that parse
//! back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nalcast_core::websocket::{client_frame, ClientFrame, ClientParser, FrameError};

const MAX: usize = 4096;

fn parse(input: &[u8], cuts: &[usize]) -> Vec<Result<ClientFrame, FrameError>> {
    let mut parser = ClientParser::new(MAX);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = cut.clamp(start, input.len());
        parser.push(&input[start..end]);
        start = end;
        loop {
            match parser.next_frame() {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses split points; the rest is the client's byte stream.
    let Some((&seed, input)) = data.split_first() else { return };
    let whole = parse(input, &[]);
    let step = usize::from(seed % 16) + 1;
    let cuts: Vec<usize> = (step..input.len()).step_by(step).collect();
    assert_eq!(parse(input, &cuts), whole, "split every {step} bytes");
    for frame in whole.iter().flatten() {
        let bytes = match frame {
            ClientFrame::Text(t) => client_frame(0x81, t.as_bytes(), [9, 8, 7, 6]),
            ClientFrame::Binary(b) => client_frame(0x82, b, [1, 2, 3, 4]),
            ClientFrame::Ping(p) => client_frame(0x89, p, [0, 0, 0, 0]),
            ClientFrame::Pong | ClientFrame::Close(_) => continue,
        };
        assert_eq!(parse(&bytes, &[]), vec![Ok(frame.clone())]);
    }
});
