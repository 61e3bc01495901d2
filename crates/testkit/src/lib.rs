//! What nalcast's tests share, in one place instead of a copy per crate: H.264
//! fixtures and access-unit builders, an Annex-B splitter and writer, x264 streams
//! encoded once and cached, one policy for tests that need an outside tool, and
//! (feature `server`) the launcher and clients for tests against the real binary.
//!
//! A dev-dependency only. It depends on no nalcast crate but the H.264 one, so the
//! tests of every crate can use it.

pub mod annexb;
pub mod au;
pub mod bits;
pub mod fixtures;
pub mod fmp4;
pub mod rng;
pub mod tools;
pub mod websocket;
pub mod x264;

#[cfg(feature = "server")]
pub mod server;
