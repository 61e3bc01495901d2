//! WebSocket on nalcast's side of the connection: the opening handshake, which the
//! HTTP layer answers ([`handshake`]), and the frames after it ([`framing`]).
pub mod framing;
pub mod handshake;
