//! Package, then fan out: what is made once per access unit, before the hub shares
//! it with viewers. Each access unit gets its sequence number and its framed
//! message (`SharedAu`), its fMP4 fragment (and the init segment when the parameter
//! sets change, announced in the log), and its place in the LL-HLS stream. Nothing
//! here knows of viewers; the hub takes what comes out.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nalcast_h264::{AccessUnit, ParamSets};
use tracing::{info, warn};

use crate::fmp4::Packager;
use crate::llhls::{Hls, HlsConfig};
use crate::metric::Series;
use crate::protocol::{self, FLAG_KEYFRAME};
use crate::shared::Fmp4Unit;
use crate::SharedAu;

/// LL-HLS playlist versions.
pub const HLS_PLAYLIST_VERSIONS: Series = Series::counter(
    "nalcast_hls_playlist_versions_total",
    "LL-HLS playlist versions: each a new part (or a segment closed)",
)
.per_stream();
/// The packaging stage's state: numbering, parameter sets in force, fMP4 and HLS.
pub struct Packaging {
    next_seq: u32,
    params: Option<Arc<ParamSets>>,
    fmp4: Fmp4Stream,
    hls: Option<Hls>,
}

/// One access unit, packaged.
pub struct Packaged {
    /// What viewers are sent, in every dialect.
    pub au: Arc<SharedAu>,
    /// The HLS stream's new version, when this access unit made a part.
    pub hls_version: Option<u64>,
}

impl Packaging {
    /// Before the first access unit; HLS with `hls`, its files named by `run_id`.
    pub fn new(hls: Option<HlsConfig>, run_id: String) -> Self {
        Packaging {
            next_seq: 0,
            params: None,
            fmp4: Fmp4Stream::default(),
            hls: hls.map(|c| Hls::new(c, run_id)),
        }
    }

    /// The parameter sets in force, once known.
    pub fn params(&self) -> Option<&Arc<ParamSets>> {
        self.params.as_ref()
    }

    /// The LL-HLS stream, when HLS is on.
    pub fn hls(&self) -> Option<&Hls> {
        self.hls.as_ref()
    }

    /// Numbers and packages one access unit that arrived at `now`.
    pub fn package(&mut self, au: AccessUnit, now: Instant) -> Packaged {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        // The one place a change of parameter sets is acted on: announced, and a
        // new init segment made for /ws/fmp4 viewers and HLS.
        if self
            .params
            .as_ref()
            .is_none_or(|p| !Arc::ptr_eq(p, &au.params))
        {
            announce(self.params.as_deref(), &au.params);
            self.params = Some(au.params.clone());
            self.fmp4.new_params(&au.params);
        }
        let fmp4 = self.fmp4.package(&au, seq);
        let mut shared = SharedAu::new(seq, au, now);
        let mut hls_version = None;
        if let Some((fmp4, fragment, duration)) = fmp4 {
            if let (Some(hls), Some(init)) = (self.hls.as_mut(), self.fmp4.init_raw.as_ref()) {
                let au = &shared.au;
                if hls.push(init, &fragment, duration, au.keyframe, au.timestamp_us) {
                    // Counted (HLS_PLAYLIST_VERSIONS) by the hub, which knows the stream.
                    hls_version = Some(hls.version());
                }
            }
            shared = shared.with_fmp4(fmp4);
        }
        Packaged {
            au: Arc::new(shared),
            hls_version,
        }
    }
}

/// The stream as fMP4 for /ws/fmp4 viewers: one packager for the hub's timeline,
/// and the init segment for the parameter sets in force.
#[derive(Default)]
struct Fmp4Stream {
    packager: Packager,
    /// The init-segment message, when the parameter sets could be packaged.
    init: Option<Bytes>,
    /// The init segment itself (ftyp + moov), for HLS.
    init_raw: Option<Bytes>,
    /// Failures logged so far (the first few, then one per thousand).
    failures: u64,
}

impl Fmp4Stream {
    fn new_params(&mut self, params: &ParamSets) {
        self.init_raw = match Packager::init_segment(params) {
            Ok(init) => Some(init),
            Err(e) => {
                warn!("cannot make an fMP4 init segment (no /ws/fmp4 or HLS picture until the parameters change): {e}");
                None
            }
        };
        self.init = self
            .init_raw
            .as_ref()
            .map(|i| protocol::encode_init_segment(i));
    }

    /// The fragment as a /ws/fmp4 unit, and the fragment itself with its duration (ticks).
    fn package(&mut self, au: &AccessUnit, seq: u32) -> Option<(Fmp4Unit, Bytes, u32)> {
        let init = self.init.clone()?;
        match self.packager.fragment(au) {
            Ok(fragment) => {
                let flags = if au.keyframe { FLAG_KEYFRAME } else { 0 };
                let message = protocol::encode_fragment(flags, seq, au.timestamp_us, &fragment);
                let duration = self.packager.last_timing().map_or(0, |t| t.duration);
                Some((Fmp4Unit { init, message }, fragment, duration))
            }
            Err(e) => {
                self.failures += 1;
                if self.failures <= 10 || self.failures.is_multiple_of(1000) {
                    warn!(
                        count = self.failures,
                        "cannot package an access unit as fMP4: {e}"
                    );
                }
                None
            }
        }
    }
}

/// A run id for HLS file names: unique per start of the server (its start time), so
/// a cache in front never mixes two runs' segments of the same sequence number.
pub fn run_id(now: std::time::SystemTime) -> String {
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut n = ms;
    let mut id = String::new();
    while n > 0 {
        let d = (n % 36) as u32;
        id.insert(0, char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    id
}

/// A stream's parameters as a person reads them: `1280x720, Main profile
/// (avc1.4D401F), 30 fps`; the rate only when the SPS gives one.
pub fn describe(i: &nalcast_h264::StreamInfo) -> String {
    let fps = i
        .fps
        .map(|f| format!(", {} fps", (f * 100.0).round() / 100.0))
        .unwrap_or_default();
    format!(
        "{}x{}, {} profile ({}){fps}",
        i.width,
        i.height,
        i.profile_name(),
        i.codec
    )
}

/// Logs new stream parameters; the warning about browsers that cannot play the
/// stream once per profile change, not at every source restart.
fn announce(old: Option<&ParamSets>, new: &ParamSets) {
    let (o, i) = (old.map(|p| &p.info), &new.info);
    if o == Some(i) {
        return;
    }
    info!("stream: {}", describe(i));
    if o.is_none_or(|o| o.codec != i.codec) {
        if let Some(warning) = i.compatibility_warning() {
            warn!("{warning}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_parameters_read_as_a_person_writes_them() {
        let mut info = testkit::au::params(testkit::fixtures::SPS_MAIN_720P)
            .info
            .clone();
        info.fps = None;
        assert_eq!(describe(&info), "1280x720, Main profile (avc1.4D401F)");
        info.fps = Some(30.0);
        assert_eq!(
            describe(&info),
            "1280x720, Main profile (avc1.4D401F), 30 fps"
        );
        info.fps = Some(29.97002997);
        assert!(
            describe(&info).ends_with(", 29.97 fps"),
            "{}",
            describe(&info)
        );
    }
}
