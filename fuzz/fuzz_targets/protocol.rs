//! Framed-protocol decoder (used by the load generator): never panics, and what it
//! accepts as an access unit re-encodes to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nalcast_core::protocol::{self, ServerMessage};

fuzz_target!(|input: &[u8]| {
    let msg = Bytes::copy_from_slice(input);
    match protocol::decode(&msg) {
        Ok(ServerMessage::AccessUnit { flags, seq, capture_us, data }) => {
            assert_eq!(protocol::encode_access_unit(flags, seq, capture_us, &data), msg);
        }
        Ok(ServerMessage::Skipped(n)) => assert_eq!(&protocol::encode_skipped(n)[..], &input[..5]),
        Ok(_) | Err(_) => {}
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = protocol::parse_client(text);
    }
});
