//! nalcast's streaming core: video sources, the hub with its GOP cache, per-viewer
//! queues and the framed wire protocol.
//!
//! Data flows one way: a source produces bytes or encoded frames, [`ingest`] turns
//! them into access units, the [`hub::Hub`] shares each one (reference-counted) with
//! every viewer's bounded [`viewer::ViewerQueue`].

pub mod clock;
pub mod fmp4;
pub mod gop;
pub mod hls;
pub mod hub;
pub mod ingest;
pub mod join;
pub mod outlet;
pub mod protocol;
pub mod shared;
pub mod sniff;
pub mod source;
pub mod stamp;
pub mod viewer;

pub use hub::{Hub, HubConfig};
pub use shared::{Fmp4Unit, SharedAu};

#[cfg(test)]
mod test_support;
