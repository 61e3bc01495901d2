//! nalcast's streaming pipeline, pure of I/O: access units in (ingest), the hub with
//! its GOP cache and joins, per-viewer bounded queues, the framed wire protocol, fMP4
//! and LL-HLS packaging.
//!
//! Data flows one way: a source (crate `nalcast-sources`) produces bytes or encoded
//! frames, [`ingest`] turns them into access units, the [`hub::Hub`] shares each one
//! (reference-counted) with every viewer's bounded [`queue::ViewerQueue`]. Nothing
//! here starts a process, opens a socket or links a codec.

pub mod clock;
pub mod fmp4;
pub mod gop;
pub mod hub;
pub mod ingest;
pub mod join;
pub mod keyframe;
pub mod llhls;
pub mod members;
pub mod metric;
pub mod package;
pub mod protocol;
pub mod queue;
pub mod shared;
pub mod stamp;

pub use hub::{Hub, HubConfig};
pub use shared::{Fmp4Unit, SharedAu};

#[cfg(test)]
mod test_support;
