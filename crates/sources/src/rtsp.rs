//! An IP camera over RTSP (`rtsp://user:pass@camera/path`), received with retina.
//!
//! retina hands over one H.264 access unit at a time, in Annex-B with the SPS and
//! PPS in force before every keyframe (`FrameFormat::SIMPLE`), so each one goes
//! through the same parser and assembler as a byte source's and is ended at once:
//! one path to the hub, whatever the source.
//!
//! Capture time is the access unit's arrival time here, not the camera's RTP
//! timestamp: RTP clocks start at a random value and cameras rarely sync them to
//! wall time (RTCP sender reports are optional), while the page's latency figures
//! need wall-clock microseconds like every other source gives.
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use retina::client::{
    Credentials, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use tracing::debug;
use url::Url;

use crate::rtsp_guard::{Guard, Violation};
use crate::{SourceError, SourceOptions};
use nalcast_core::clock::wall_us;
use nalcast_core::ingest::Ingest;
use nalcast_core::Hub;
use tokio::net::TcpStream;

/// How RTP packets travel from the camera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: passes firewalls and NAT, no loss.
    #[default]
    Tcp,
    /// Separate UDP ports: lower latency on a clean LAN, but lost packets stay lost.
    Udp,
}

impl std::str::FromStr for RtspTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            other => Err(format!(
                "unknown RTSP transport '{other}': expected tcp or udp"
            )),
        }
    }
}

impl fmt::Display for RtspTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        })
    }
}

/// A camera's RTSP address, its credentials held apart so that nothing that prints
/// the address can print them.
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// The address without user or password (retina refuses URLs with them).
    url: Url,
    /// User and password from the URL, percent-decoded.
    creds: Option<Credentials>,
}

/// An `rtsp://` address that cannot be used. Never holds the address itself (it may
/// hold a password).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRtspUrl {
    /// `url` could not parse it.
    #[error("not a valid URL ({0})")]
    Invalid(url::ParseError),
    /// `rtsps://`: retina speaks plain RTSP only.
    #[error("rtsps:// (RTSP over TLS) is not supported; use rtsp://")]
    Tls,
    /// Another scheme.
    #[error("expected an rtsp:// URL")]
    Scheme,
    /// `rtsp:///path`.
    #[error("the URL names no camera host")]
    NoHost,
    /// A user or password whose percent-encoding is not UTF-8.
    #[error("the user or password is not valid UTF-8 once percent-decoded")]
    BadCredentials,
}

impl RtspUrl {
    /// Parses `rtsp://[user[:password]@]host[:port]/path`; the user and password
    /// may be percent-encoded (`p%40ss` for `p@ss`).
    pub fn parse(s: &str) -> Result<RtspUrl, BadRtspUrl> {
        let mut url = Url::parse(s).map_err(BadRtspUrl::Invalid)?;
        match url.scheme() {
            "rtsp" => {}
            "rtsps" => return Err(BadRtspUrl::Tls),
            _ => return Err(BadRtspUrl::Scheme),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(BadRtspUrl::NoHost);
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| BadRtspUrl::BadCredentials)
        };
        let creds = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            Some(Credentials {
                username: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            })
        };
        // Both only fail for URLs that cannot have credentials, which this one did.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(RtspUrl { url, creds })
    }

    /// Whether the URL carried a user or password.
    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }
}

/// `rtsp://***@camera:554/path`: the user is hidden as well as the password, since
/// a camera's user name is half of what an attacker needs.
impl fmt::Display for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.creds {
            None => f.write_str(self.url.as_str()),
            Some(_) => {
                let s = self.url.as_str();
                let rest = s.strip_prefix("rtsp://").unwrap_or(s);
                write!(f, "rtsp://***@{rest}")
            }
        }
    }
}

/// Like Display: `Config` and `SourceSpec` derive Debug, and a `{:?}` must not
/// leak the password either.
impl fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtspUrl({self})")
    }
}

/// Receives the camera's H.264 video until the stream fails or stalls. retina talks
/// to the camera through a [`Guard`](crate::rtsp_guard::Guard), which bounds what
/// the camera may make it buffer.
pub async fn run(
    camera: &RtspUrl,
    transport: RtspTransport,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
) -> Result<(), SourceError> {
    // Connecting, DESCRIBE, SETUP and PLAY each get the stall timeout: a camera
    // that accepts the connection and then says nothing must not hang the source.
    let timeout = opts.stall_timeout;
    let port = camera.url.port().unwrap_or(554);
    let connect = async {
        match camera.url.host() {
            Some(url::Host::Domain(name)) => TcpStream::connect((name, port)).await,
            Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
            Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
            None => Err(std::io::Error::other("no host")),
        }
    };
    let tcp = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(SourceError::Retry(format!(
                "cannot reach the RTSP camera: {e}"
            )))
        }
        Err(_) => {
            return Err(SourceError::Retry(format!(
                "cannot reach the RTSP camera: no answer within {} s",
                timeout.as_secs_f32()
            )))
        }
    };
    // An access unit may hold a few NAL units of up to --max-nal-size each.
    let max_unmarked = opts.max_nal_size.saturating_mul(2);
    let guard = Guard::start(tcp, max_unmarked, opts.rtsp_allow_basic)
        .await
        .map_err(|e| SourceError::Retry(format!("cannot start the RTSP guard: {e}")))?;
    let mut url = camera.url.clone();
    // Both only fail for URLs without a host, which this one has.
    let _ = url.set_ip_host(guard.addr.ip());
    let _ = url.set_port(Some(guard.addr.port()));
    let result = session(url, camera, transport, opts, hub).await;
    match (result, guard.violation()) {
        (Err(_), Some(Violation::BasicOnly)) => {
            Err(SourceError::Refused(Violation::BasicOnly.to_string()))
        }
        (Err(_), Some(v)) => Err(SourceError::Retry(v.to_string())),
        (result, _) => result,
    }
}

/// One RTSP session at `url` (the guard's address) until it fails or stalls.
async fn session(
    url: Url,
    camera: &RtspUrl,
    transport: RtspTransport,
    opts: &SourceOptions,
    hub: &Arc<Hub>,
) -> Result<(), SourceError> {
    let timeout = opts.stall_timeout;
    let creds = camera.has_credentials();
    let options = SessionOptions::default()
        .creds(camera.creds.clone())
        .user_agent(format!("nalcast/{}", env!("CARGO_PKG_VERSION")));
    let describe = retina::client::Session::describe(url, options);
    let mut session = within(timeout, "DESCRIBE", creds, describe).await?;
    let video = session
        .streams()
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264"))
        .ok_or_else(|| {
            let offered: Vec<String> = session
                .streams()
                .iter()
                .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                .collect();
            SourceError::Retry(format!(
                "the RTSP camera offers no H.264 video (it offers: {})",
                if offered.is_empty() {
                    "nothing".to_owned()
                } else {
                    offered.join(", ")
                }
            ))
        })?;
    let transport = match transport {
        RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    };
    let setup = SetupOptions::default()
        .transport(transport)
        .frame_format(FrameFormat::SIMPLE);
    within(timeout, "SETUP", creds, session.setup(video, setup)).await?;
    let play = session.play(PlayOptions::default());
    let playing = within(timeout, "PLAY", creds, play).await?;
    let mut frames = playing.demuxed().map_err(|e| explain(&e, creds))?;

    let mut ingest = Ingest::new(hub.clone(), opts.max_nal_size);
    // RTCP and other streams' items keep arriving from a camera whose video has
    // stopped: only a published frame counts as life.
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        let item = match tokio::time::timeout_at(deadline, frames.next()).await {
            Err(_) => {
                return Err(SourceError::Retry(format!(
                    "no frame for {} s",
                    timeout.as_secs_f32()
                )))
            }
            Ok(None) => {
                return Err(SourceError::Retry(
                    "the RTSP camera ended the stream".into(),
                ))
            }
            Ok(Some(Err(e))) => return Err(explain(&e, creds)),
            Ok(Some(Ok(item))) => item,
        };
        if let CodecItem::VideoFrame(frame) = item {
            if frame.loss() > 0 {
                debug!(lost = frame.loss(), "RTP packets lost before this frame");
            }
            let before = ingest.frames();
            let now = wall_us();
            ingest.push(frame.data(), now);
            ingest.end_of_access_unit(now);
            if ingest.frames() != before {
                deadline = tokio::time::Instant::now() + timeout;
            }
        }
    }
}

/// Awaits one RTSP request for at most `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    had_credentials: bool,
    request: impl Future<Output = Result<T, retina::Error>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(explain(&e, had_credentials)),
        Err(_) => Err(SourceError::Retry(format!(
            "the RTSP camera did not answer {what} within {} s",
            limit.as_secs_f32()
        ))),
    }
}

/// One line for the user from a retina error. retina's own messages span several
/// lines of connection context (addresses, packet positions): those go to the debug
/// log; what viewers and the API are told names neither host nor credentials.
fn explain(e: &retina::Error, had_credentials: bool) -> SourceError {
    debug!("RTSP error: {e}");
    if e.status_code() == Some(401) {
        return SourceError::Refused(if had_credentials {
            "RTSP camera refused the credentials".into()
        } else {
            "RTSP camera wants credentials: give them as rtsp://user:password@camera/path".into()
        });
    }
    let text = e.to_string();
    let mut first = text.lines().next().unwrap_or("unknown error").trim();
    // A first line ending in "; buffered:" announces a hex dump on the next lines.
    if let Some((head, _)) = first.strip_suffix(':').and_then(|f| f.rsplit_once("; ")) {
        first = head;
    }
    // "Unable to connect to RTSP server: <io error>" covers DNS and TCP failures.
    match first.strip_prefix("Unable to connect to RTSP server: ") {
        Some(why) => SourceError::Retry(format!("cannot reach the RTSP camera: {why}")),
        None => SourceError::Retry(format!("RTSP camera error: {first}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_off_and_decoded() {
        let u = RtspUrl::parse("rtsp://admin:p%40ss%3Aw%2Fo%25rd@10.0.0.2:8554/live/ch1?x=1")
            .expect("valid");
        let creds = u.creds.as_ref().expect("credentials");
        assert_eq!(creds.username, "admin");
        assert_eq!(creds.password, "p@ss:w/o%rd");
        assert_eq!(u.url.as_str(), "rtsp://10.0.0.2:8554/live/ch1?x=1");
        assert_eq!(u.to_string(), "rtsp://***@10.0.0.2:8554/live/ch1?x=1");
    }

    #[test]
    fn passwords_with_special_characters_never_print() {
        // An unencoded '@' in the password: the last '@' ends the userinfo.
        for (given, password) in [
            ("rtsp://u:p@w@cam/s", "p@w"),
            ("rtsp://u:s3cr%C3%A9t!$&'()*+,;=@cam/s", "s3crét!$&'()*+,;="),
            ("rtsp://u:%F0%9F%94%91key@cam/s", "🔑key"),
            ("rtsp://onlyuser@cam/s", ""),
        ] {
            let u = RtspUrl::parse(given).expect(given);
            assert_eq!(u.creds.as_ref().expect("creds").password, password);
            for shown in [u.to_string(), format!("{u:?}")] {
                assert_eq!(shown.matches("***@").count(), 1, "{shown}");
                assert!(!shown.contains("u:"), "{shown}");
                assert!(!shown.contains("onlyuser"), "{shown}");
                if !password.is_empty() {
                    assert!(!shown.contains(password), "{shown}");
                }
                assert!(!shown.contains("%40") && !shown.contains("s3cr"), "{shown}");
            }
        }
        let plain = RtspUrl::parse("rtsp://cam:554/s").expect("valid");
        assert!(!plain.has_credentials());
        assert_eq!(plain.to_string(), "rtsp://cam:554/s");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for (given, want) in [
            ("rtsps://u:secret@cam/s", BadRtspUrl::Tls),
            ("rtsp:///s", BadRtspUrl::NoHost),
            ("rtsp://u:%FF%FEsecret@cam/s", BadRtspUrl::BadCredentials),
            ("http://u:secret@cam/s", BadRtspUrl::Scheme),
        ] {
            let e = RtspUrl::parse(given).expect_err(given);
            assert_eq!(e, want, "{given}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        assert!(matches!(
            RtspUrl::parse("rtsp://[::1/s"),
            Err(BadRtspUrl::Invalid(_))
        ));
    }

    #[test]
    fn transports_parse_and_print() {
        for t in [RtspTransport::Tcp, RtspTransport::Udp] {
            assert_eq!(t.to_string().parse::<RtspTransport>(), Ok(t));
        }
        assert!("quic".parse::<RtspTransport>().is_err());
        assert_eq!(RtspTransport::default(), RtspTransport::Tcp);
    }
}
