//! nalcast's options, and the plain [`Config`] they resolve to.
//!
//! Each option is defined once, as a field of [`Options`]: its flag, its key in the
//! config file (the flag's name without the dashes, see [`file_key`]), its default
//! and its help text all come from that field. docs/configuration.md is generated
//! from the same definition, and a test keeps the two in step.
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches, Parser};
use nalcast_core::queue::QueueLimits;
use nalcast_sources::publish::PublishTarget;
use nalcast_sources::{Orientation, RtspTransport, SourceOptions, VideoSettings};

use crate::server::tls::TlsMode;

/// Where WebRTC listens unless told (MediaMTX's port for the same).
pub const DEFAULT_WEBRTC: &str = "0.0.0.0:8189";
/// Where WebRTC listens and what it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebRtcSettings {
    /// The UDP address; an unspecified host means every address of the machine.
    pub listen: SocketAddr,
    /// Addresses viewers outside the LAN reach this port at (a router's public
    /// address with the port forwarded), offered beside the machine's own.
    pub public_ips: Vec<IpAddr>,
}

impl WebRtcSettings {
    /// Whether nalcast may run without WebRTC when this address cannot be had: the
    /// default one (taken, most likely, by another nalcast), not one chosen.
    pub fn optional(&self) -> bool {
        self.listen.to_string() == DEFAULT_WEBRTC
    }
}

pub mod stream;
pub use stream::{StreamConfig, StreamTable};

/// Port of the legacy raw WebSocket listener (the original design's 9000).
const DEFAULT_LEGACY_PORT: u16 = 9000;

/// nalcast: live H.264 camera streaming to web browsers over WebSocket.
///
/// Open http://HOST:8000/ in a browser to watch. The original design's pages keep
/// working against ws://HOST:9000.
//
// A default goes in `default_value_t` when it is a value; when it is a rule (it
// depends on another option or on the machine) the help text's first paragraph ends
// with it as "[default: …]" and `Config::resolve` applies it, with the field an
// `Option`.
//
// Each option's first paragraph is its line in `-h`; `--help` and
// docs/configuration.md add the paragraphs after it.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "nalcast",
    version,
    about,
    long_about = None,
    after_help = "-h shows the everyday options; --help shows all of them, the tuning ones too, and explains each. docs/configuration.md lists them with their config-file keys.",
    after_long_help = "docs/configuration.md lists every option with its config-file key."
)]
pub struct Options {
    /// TOML config file whose keys are these flags' names without the dashes.
    ///
    /// E.g. `keyframe-interval = 60`, `allow-origin = ["http://a.lan"]`. Flags and
    /// their environment variables win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the settings (the file and the flags) as nalcast would read them, list the streams and exit.
    ///
    /// Exit status 0 when nalcast would take them, 2 with the reason otherwise. It
    /// does not look for the cameras: run before `systemctl reload nalcast`.
    #[arg(long)]
    pub check: bool,

    /// Video source: test, rpicam, usb, v4l2:DEVICE, rtsp://URL, file:PATH, exec:COMMAND or stdin [default: test]
    ///
    /// test is the built-in test pattern; rpicam a Raspberry Pi camera; usb the first
    /// USB webcam; v4l2:DEVICE a V4L2 camera such as /dev/video0 (its H.264 is sent as
    /// it is, MJPEG or raw video is encoded: docs/raspberry-pi.md);
    /// rtsp://[USER:PASSWORD@]HOST[:PORT]/PATH an IP camera's H.264 (the user and
    /// password never appear in logs, the API or the page); file:PATH an Annex-B .h264
    /// file, looped; exec:COMMAND the standard output of a shell command; stdin
    /// nalcast's standard input.
    ///
    /// A camera password is better kept out of nalcast's own command line, which other
    /// users can read: in the config file or NALCAST_SOURCE. The stream is named
    /// "camera"; for several cameras use --stream instead.
    #[arg(
        long,
        value_name = "SPEC",
        env = "NALCAST_SOURCE",
        hide_env_values = true,
        help_heading = heading::SOURCE
    )]
    pub source: Option<String>,
    /// A named stream from a source (SPEC as for --source); repeatable, one per camera.
    ///
    /// E.g. `--stream garden=rtsp://cam.lan/live --stream desk=usb`. Each is served at
    /// /streams/NAME/ (the page, its WebSocket endpoints and HLS) and the page at / shows
    /// them all; the first is also served at the plain URLs (/ws, /hls/…) and on the
    /// legacy port. Names are 1 to 32 of a-z A-Z 0-9 - _. They take the picture,
    /// RTSP, HLS and on-demand settings of the flags; the config file's `[[stream]]`
    /// tables can set those per stream (docs/configuration.md). Not together with
    /// --source.
    #[arg(long, value_name = "NAME=SPEC", help_heading = heading::SOURCE)]
    pub stream: Vec<String>,
    /// Start a stream's source only while someone watches: on or off.
    ///
    /// The source starts at the first viewer (the page says "starting camera") and stops
    /// --idle-timeout seconds after the last one left: the camera's LED goes off and an
    /// RTSP camera is not pulled for nothing. The price: nothing is cached while it is
    /// stopped, so the first viewer waits for the camera to start and send a keyframe
    /// instead of starting at once.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "on|off",
        default_value = "off",
        value_parser = ["on", "off"],
        help_heading = heading::SOURCE
    )]
    pub on_demand: String,
    /// With --on-demand, seconds a source runs on after its last viewer left.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "SECONDS",
        default_value_t = stream::DEFAULT_IDLE.as_secs_f64(),
        help_heading = heading::SOURCE
    )]
    pub idle_timeout: f64,
    /// The config file's `[[stream]]` tables.
    #[arg(skip)]
    pub stream_tables: Vec<StreamTable>,
    /// List the cameras (V4L2 capture devices such as USB webcams) and exit.
    ///
    /// Each with its formats and sizes, and what nalcast would stream from it with
    /// --width, --height and --fps; the exit status is 1 when there is none.
    #[arg(long, help_heading = heading::SOURCE)]
    pub list_cameras: bool,
    /// How an rtsp:// camera sends its video: tcp or udp.
    ///
    /// tcp is interleaved in the RTSP connection: it passes firewalls and NAT, and
    /// nothing is lost. udp uses separate ports: for a clean LAN, lost packets stay
    /// lost.
    #[arg(
        long,
        value_name = "tcp|udp",
        default_value_t = SourceOptions::default().rtsp_transport,
        help_heading = heading::SOURCE
    )]
    pub rtsp_transport: RtspTransport,
    /// Let an rtsp:// camera that asks for HTTP Basic authentication have the password that way: on or off.
    ///
    /// Basic sends it readable by anyone on the network, RTSP being unencrypted. Off,
    /// such a camera is refused with one log line; Digest is always used where the
    /// camera offers it. The same for an rtsp:// --publish target (a stream's own
    /// setting for its targets).
    #[arg(
        long,
        hide_short_help = true,
        value_name = "on|off",
        default_value = "off",
        value_parser = ["on", "off"],
        help_heading = heading::SOURCE
    )]
    pub rtsp_allow_basic: String,
    /// Restart a source that delivers no data for this many seconds.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "SECONDS",
        default_value_t = SourceOptions::default().stall_timeout.as_secs_f64(),
        help_heading = heading::SOURCE
    )]
    pub stall_timeout: f64,
    /// Largest accepted NAL unit in bytes; larger ones are dropped and counted.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "BYTES",
        default_value_t = SourceOptions::default().max_nal_size,
        help_heading = heading::SOURCE
    )]
    pub max_nal_size: usize,

    /// Picture width in pixels (even).
    #[arg(long, value_name = "PIXELS", default_value_t = VideoSettings::default().width, help_heading = heading::PICTURE)]
    pub width: u32,
    /// Picture height in pixels (even).
    #[arg(long, value_name = "PIXELS", default_value_t = VideoSettings::default().height, help_heading = heading::PICTURE)]
    pub height: u32,
    /// Frames per second.
    ///
    /// test, rpicam and v4l2 sources capture or encode at it; file sources are paced at
    /// it.
    #[arg(long, default_value_t = VideoSettings::default().fps, help_heading = heading::PICTURE)]
    pub fps: u32,
    /// Target bitrate in bits per second.
    ///
    /// For test and rpicam sources, and v4l2 cameras whose MJPEG or raw video nalcast
    /// encodes; a camera's own H.264 keeps the camera's rate.
    #[arg(long, value_name = "BPS", default_value_t = VideoSettings::default().bitrate, help_heading = heading::PICTURE)]
    pub bitrate: u32,
    /// Frames between keyframes.
    ///
    /// For test and rpicam sources, and v4l2 cameras whose MJPEG or raw video nalcast
    /// encodes. A new viewer's picture starts at a keyframe.
    #[arg(
        long,
        value_name = "FRAMES",
        default_value_t = VideoSettings::default().keyframe_interval,
        help_heading = heading::PICTURE
    )]
    pub keyframe_interval: u32,
    /// Which camera of the machine: rpicam-vid's --camera N (0 the first, 1 the second on a Pi 5).
    ///
    /// For rpicam sources (raspivid's -cs); a USB camera is chosen by its device
    /// (v4l2:/dev/videoN). `rpicam-vid --list-cameras` lists the Pi's.
    #[arg(long, hide_short_help = true, value_name = "N", help_heading = heading::PICTURE)]
    pub camera: Option<u32>,
    /// Turn the picture clockwise by 0, 90, 180 or 270 degrees.
    ///
    /// rpicam cameras turn by 0 or 180 (libcamera flips both ways); USB cameras by any,
    /// through ffmpeg, which then encodes the picture (a camera's own H.264 too).
    #[arg(
        long,
        hide_short_help = true,
        value_name = "DEGREES",
        default_value_t = 0,
        help_heading = heading::PICTURE
    )]
    pub rotation: u16,
    /// Mirror the picture left to right (rpicam and USB cameras): on or off.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "on|off",
        default_value = "off",
        value_parser = ["on", "off"],
        help_heading = heading::PICTURE
    )]
    pub hflip: String,
    /// Mirror the picture top to bottom (rpicam and USB cameras): on or off.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "on|off",
        default_value = "off",
        value_parser = ["on", "off"],
        help_heading = heading::PICTURE
    )]
    pub vflip: String,

    /// Address for the page, API and WebSocket endpoints.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "0.0.0.0:8000",
        help_heading = heading::LISTENING
    )]
    pub listen: String,
    /// Address of the legacy raw WebSocket listener, or "off" [default: the --listen host, port 9000]
    ///
    /// The original design's pages play from it: any path, one NAL unit per message,
    /// always plain ws://.
    #[arg(long, value_name = "HOST:PORT|off", help_heading = heading::LISTENING)]
    pub legacy_listen: Option<String>,
    /// Address for mjpg-streamer's URLs (/?action=stream, /?action=snapshot), or "off".
    ///
    /// So that nalcast replaces mjpg-streamer (OctoPi's webcam, port 8080) with no
    /// setting changed in OctoPrint or Klipper: e.g. 0.0.0.0:8080. They are on the main
    /// port too; this port serves only them (the first camera's), with the same
    /// credentials and limits.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "HOST:PORT|off",
        default_value = "off",
        help_heading = heading::LISTENING
    )]
    pub mjpg_streamer_listen: String,
    /// UDP address for WebRTC viewers (WHEP), or "off" [default: 0.0.0.0:8189]
    ///
    /// One port for every WebRTC viewer. With host 0.0.0.0 nalcast offers each of
    /// this machine's addresses; viewers must reach this UDP port (open it in a
    /// firewall). Plain-HTTP pages play through it at WebCodecs' latency. When the
    /// default address is taken (another nalcast), nalcast says so and runs without
    /// WebRTC; any other address must be free.
    #[arg(long, hide_short_help = true, value_name = "HOST:PORT|off", help_heading = heading::LISTENING)]
    pub webrtc: Option<String>,
    /// An address WebRTC viewers outside the LAN reach the --webrtc port at; repeatable.
    ///
    /// A router's public address with the UDP port forwarded to this machine (the
    /// same port number). Offered to viewers beside the machine's own addresses.
    #[arg(long, hide_short_help = true, value_name = "IP", help_heading = heading::LISTENING)]
    pub webrtc_public_ip: Vec<String>,
    /// Also answer to this host name (*.example.com for a domain, * for any); repeatable.
    ///
    /// A DNS name or a reverse proxy's name that users open the camera by. IP
    /// addresses, localhost, this machine's host name (alone, .local, and under its DNS
    /// search domains) and the TLS certificate's names are always served; other names
    /// get 421, a defence against DNS rebinding.
    #[arg(long, value_name = "NAME", help_heading = heading::LISTENING)]
    pub public_host: Vec<String>,
    /// HTTPS on the main port: off, or self-signed (a certificate nalcast makes and keeps in --data-dir) [default: off]
    ///
    /// The self-signed certificate names this machine's host names and addresses and
    /// every --public-host, and is made again when one is missing. --tls-cert and
    /// --tls-key use your own.
    // Not a clap default: an explicit "off" next to --tls-cert is a contradiction
    // worth reporting, which a filled-in default could not tell apart.
    #[arg(long, value_name = "off|self-signed", help_heading = heading::LISTENING)]
    pub tls: Option<String>,
    /// PEM certificate chain for HTTPS (with --tls-key); reloaded when the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE", help_heading = heading::LISTENING)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", help_heading = heading::LISTENING)]
    pub tls_key: Option<PathBuf>,
    /// Where nalcast keeps what it makes (the self-signed certificate) [default: $STATE_DIRECTORY, else $XDG_DATA_HOME/nalcast, else ~/.local/share/nalcast]
    #[arg(long, hide_short_help = true, value_name = "DIR", help_heading = heading::LISTENING)]
    pub data_dir: Option<PathBuf>,

    /// Most viewers at once; more are refused with HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 2000, help_heading = heading::VIEWERS)]
    pub max_viewers: usize,
    /// Most viewers from one client address; more are refused with HTTP 429.
    ///
    /// An IPv6 /64 counts as one address, and an IPv6 /48 holds at most four times as
    /// many.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = 100, help_heading = heading::VIEWERS)]
    pub max_viewers_per_ip: usize,
    /// Most bytes queued for one viewer before it is reset to the next keyframe.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "BYTES",
        default_value_t = QueueLimits::default().max_bytes,
        help_heading = heading::VIEWERS
    )]
    pub queue_max_bytes: usize,
    /// Oldest frame queued for one viewer, in milliseconds, before it is reset to the next keyframe.
    #[arg(
        long,
        hide_short_help = true,
        value_name = "MS",
        default_value_t = millis(QueueLimits::default().max_delay),
        help_heading = heading::VIEWERS
    )]
    pub queue_max_delay: u64,
    /// Disconnect a client whose socket takes nothing of what it is sent for this many seconds.
    ///
    /// A viewer that cannot be written to, or any connection that leaves its responses
    /// unread. A client that reads slowly keeps its connection as long as its receive
    /// window reopens within this time (TCP reopens a window after about half of the
    /// client's receive buffer was read).
    #[arg(long, hide_short_help = true, value_name = "SECONDS", default_value_t = 10.0, help_heading = heading::VIEWERS)]
    pub viewer_timeout: f64,
    /// Threads that write to plain-HTTP viewers; 0 keeps them on the main runtime [default: number of cores]
    ///
    /// With one per core, a frame goes out on every core at once.
    #[arg(long, hide_short_help = true, value_name = "N", help_heading = heading::VIEWERS)]
    pub viewer_threads: Option<usize>,
    /// Kernel send buffer per connection in bytes.
    ///
    /// Small keeps a slow viewer's backlog in nalcast's queue, where it can skip to a
    /// keyframe.
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = 128 * 1024, help_heading = heading::VIEWERS)]
    pub send_buffer: usize,

    /// Low-Latency HLS at /hls/index.m3u8 on the main port: on or off.
    ///
    /// For Safari and iPhones, VLC, ffplay and hls.js; with an HTTP cache or CDN in
    /// front: docs/scale-out.md.
    #[arg(
        long,
        value_name = "on|off",
        default_value = "on",
        value_parser = ["on", "off"],
        help_heading = heading::HLS
    )]
    pub hls: String,
    /// Most HLS requests one client address may have open at once; more get HTTP 429.
    ///
    /// A request counts while it waits (a blocking playlist reload, a preload hint) or
    /// is being sent. An IPv6 /64 counts as one address.
    #[arg(long, hide_short_help = true, value_name = "N", default_value_t = 64, help_heading = heading::HLS)]
    pub max_hls_requests_per_ip: usize,
    /// Most bytes HLS answers being sent may keep alive; more requests get HTTP 503.
    ///
    /// What they keep alive: the distinct parts and segments they hold (one shared copy
    /// however many read it, also after it left the playlist's window) and their
    /// playlists. Slow readers keep what they are sent alive: this bounds it.
    #[arg(long, hide_short_help = true, value_name = "BYTES", default_value_t = 64 << 20, help_heading = heading::HLS)]
    pub max_hls_memory: usize,
    /// Also send the stream, copied unchanged, to a media server at this URL; repeatable.
    ///
    /// With several streams, the first one's; a `[[stream]]` table's `publish` key sends
    /// that stream. rtmp://, rtmps://, rtsp:// or srt:// (e.g. rtmp://host/live/cam).
    /// nalcast sends rtmp://, rtmps:// and rtsp:// itself (rtmp://user:password@… logs
    /// in where the server asks: authmod=adobe or llnw); srt:// goes through an
    /// ffmpeg process per URL. A failed target is retried;
    /// /api/stream shows its state without the URL's user, password, query string or
    /// RTMP stream key. NALCAST_PUBLISH (URLs separated by spaces) or the config file
    /// keep them out of nalcast's own command line; an RTMP key or password, RTSP
    /// password or SRT query string (passphrase, streamid) is then on none.
    #[arg(
        long,
        value_name = "URL",
        env = "NALCAST_PUBLISH",
        hide_env_values = true,
        value_delimiter = ' ',
        help_heading = heading::HLS
    )]
    pub publish: Vec<String>,
    /// Pictures a second of the MJPEG streams (/mjpeg, /?action=stream).
    ///
    /// Each stream's MJPEG pictures are decoded and encoded once for all its MJPEG
    /// viewers, and only while one watches; a snapshot (/snapshot.jpg) costs one
    /// decode per new picture however many ask.
    #[arg(long, hide_short_help = true, value_name = "FPS", default_value_t = 10, help_heading = heading::HLS)]
    pub mjpeg_fps: u32,
    /// Width of the MJPEG streams' pictures (the height keeps the aspect); 0: the stream's own.
    #[arg(long, hide_short_help = true, value_name = "PIXELS", default_value_t = 640, help_heading = heading::HLS)]
    pub mjpeg_width: u32,

    /// Require HTTP Basic authentication as USER:PASSWORD for everything but /healthz.
    ///
    /// The password may be an argon2 hash from --hash-password.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "NALCAST_AUTH",
        hide_env_values = true,
        help_heading = heading::SECURITY
    )]
    pub auth: Option<String>,
    /// Read a password from standard input, print its argon2 hash (for --auth or the config file) and exit.
    #[arg(long, help_heading = heading::SECURITY)]
    pub hash_password: bool,
    /// Require this token for everything but /healthz.
    ///
    /// 16 or more characters of A-Z a-z 0-9 - . _ ~, given as ?token=, a cookie set by
    /// opening /?token=, or an "Authorization: Bearer" header.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "NALCAST_TOKEN",
        hide_env_values = true,
        help_heading = heading::SECURITY
    )]
    pub token: Option<String>,
    /// Let pages from this origin open WebSockets and read /hls too, or * for any; repeatable.
    ///
    /// E.g. http://dashboard.lan:3000. By default only the page's own origin (and, on
    /// the legacy port, the same host) may.
    #[arg(long, value_name = "ORIGIN", help_heading = heading::SECURITY)]
    pub allow_origin: Vec<String>,
    /// Let pages from this origin show the player page in a frame, or * for any; repeatable.
    ///
    /// E.g. a dashboard at http://homeassistant.lan:8123. By default only the page's
    /// own origin may frame it (a defence against clickjacking).
    #[arg(long, value_name = "ORIGIN", help_heading = heading::SECURITY)]
    pub frame_ancestors: Vec<String>,
    /// A reverse proxy (address or CIDR) whose forwarding header names the real client; repeatable.
    ///
    /// E.g. 127.0.0.1 or 10.0.0.0/8. The client it names in the --proxy-header header
    /// (X-Forwarded-For unless told otherwise) counts for viewer limits, lock-outs and
    /// logs. Others' forwarding headers are ignored.
    #[arg(long, value_name = "CIDR", help_heading = heading::SECURITY)]
    pub trusted_proxy: Vec<String>,
    /// The one header a --trusted-proxy writes the client's address in.
    ///
    /// x-forwarded-for (the rightmost address that is not a trusted proxy), forwarded
    /// (RFC 7239's for=, read the same way) or x-real-ip. Every other forwarding header
    /// is the client's own and ignored; configure the proxy to overwrite this one
    /// (docs/security.md).
    #[arg(
        long,
        hide_short_help = true,
        value_name = "HEADER",
        default_value = "x-forwarded-for",
        value_parser = crate::server::proxy::ProxyHeader::NAMES,
        help_heading = heading::SECURITY
    )]
    pub proxy_header: String,
    /// Most open connections at once, viewers included; more are closed at once [default: 4096, or twice --max-viewers if that is more]
    ///
    /// On plain HTTP they get HTTP 503 first. Lowered at start to fit the open-file
    /// limit.
    #[arg(long, hide_short_help = true, value_name = "N", help_heading = heading::SECURITY)]
    pub max_connections: Option<usize>,
    /// Most open connections from one client address, viewers included; more are closed at once [default: 256, or twice --max-viewers-per-ip if that is more]
    ///
    /// On plain HTTP they get HTTP 429 first. An IPv6 /64 counts as one address, and an
    /// IPv6 /48 holds at most four times as many.
    #[arg(long, hide_short_help = true, value_name = "N", help_heading = heading::SECURITY)]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a client has for the TLS handshake and for each request's headers.
    ///
    /// Slower clients are dropped, and so is a keep-alive connection that sends no new
    /// request for as long.
    #[arg(long, hide_short_help = true, value_name = "SECONDS", default_value_t = 10.0, help_heading = heading::SECURITY)]
    pub header_timeout: f64,
}

/// The topics `--help` groups the options under, in this order (options with none,
/// `--config`, `--help` and `--version`, come first).
pub mod heading {
    /// Where the video comes from.
    pub const SOURCE: &str = "Source";
    /// The picture nalcast makes or asks a camera for.
    pub const PICTURE: &str = "Picture (test, rpicam and v4l2 sources)";
    /// The ports, names and certificates nalcast answers on.
    pub const LISTENING: &str = "Listening and HTTPS";
    /// How many viewers, and how far one may fall behind.
    pub const VIEWERS: &str = "Viewers";
    /// HLS for iPhones and caches, and copies sent to media servers.
    pub const HLS: &str = "HLS, MJPEG and publishing";
    /// Who may watch, from which pages, through which proxies, and how much one client may take.
    pub const SECURITY: &str = "Security";
    /// All of them, in order.
    pub const ALL: [&str; 6] = [SOURCE, PICTURE, LISTENING, VIEWERS, HLS, SECURITY];
}

/// A duration in whole milliseconds, for a default shown in `--help`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why the command line or the config file was not accepted.
#[derive(Debug)]
pub enum LoadError {
    /// clap's own: `--help`, `--version` or a mistyped flag, to be shown with
    /// [`clap::Error::exit`].
    Usage(clap::Error),
    /// The config file cannot be read or has a key or value nalcast does not take.
    File(String),
}

impl Options {
    /// Reads the command line, and the config file if `--config` names one: a flag
    /// (or its environment variable) wins over the file, the file over the default.
    pub fn load<I, T>(argv: I) -> Result<Options, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let parse = |command: Command| {
            command
                .try_get_matches_from(&argv)
                .and_then(|matches| Options::from_arg_matches(&matches))
                .map_err(LoadError::Usage)
        };
        let options = parse(Options::command())?;
        match &options.config {
            // --hash-password needs nothing from the file (and works even if it is broken).
            None => Ok(options),
            Some(_) if options.hash_password => Ok(options),
            // Read again with the file's values as the flags' defaults: clap then
            // ranks them below the command line and the environment by itself.
            Some(path) => {
                let (command, tables) = with_file_defaults(Options::command(), path)?;
                let mut options = parse(command)?;
                options.stream_tables = tables;
                Ok(options)
            }
        }
    }
}

/// The config-file key for a flag: its long name, for every flag that takes a value
/// except `--config` itself: `--check`, `--hash-password`, `--list-cameras`,
/// `--help` and `--version` are actions, not settings.
pub fn file_key(arg: &Arg) -> Option<&str> {
    let key = arg.get_long()?;
    (arg.get_action().takes_values() && key != "config").then_some(key)
}

/// Flags people bring from other servers, and where nalcast has what they mean.
const OTHER_NAMES: [(&str, &str); 6] = [
    (
        "--port",
        "the port is part of --listen, e.g. --listen 0.0.0.0:8080",
    ),
    (
        "--bind",
        "the address to listen on is --listen, e.g. --listen 0.0.0.0:8000",
    ),
    (
        "--host",
        "the address to listen on is --listen, e.g. --listen 0.0.0.0:8000",
    ),
    (
        "--resolution",
        "the picture size is --width and --height, e.g. --width 1280 --height 720",
    ),
    ("--framerate", "the frame rate is --fps"),
    (
        "--rtsp",
        "an RTSP camera is a source: --source rtsp://user:password@camera/path",
    ),
];

/// A line to add to clap's report of an unknown flag that nalcast has under
/// another name (clap itself suggests flags spelt nearly the same).
pub fn usage_hint<I, T>(e: &clap::Error, argv: I) -> Option<String>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    if e.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    argv.into_iter().skip(1).find_map(|arg| {
        let arg: OsString = arg.into();
        let arg = arg.to_string_lossy();
        let flag = arg.split('=').next().unwrap_or_default();
        OTHER_NAMES
            .iter()
            .find(|(name, _)| *name == flag)
            .map(|(name, what)| format!("tip: nalcast has no {name}: {what}"))
    })
}

/// The default `--help` shows for a flag: clap's, or for a default that is a rule
/// the "[default: …]" its help text ends with.
pub fn shown_default(arg: &Arg) -> Option<String> {
    let values = arg.get_default_values();
    if !values.is_empty() {
        let values: Vec<_> = values.iter().map(|v| v.to_string_lossy()).collect();
        return Some(values.join(", "));
    }
    let help = arg.get_help()?.to_string();
    let rule = help.trim_end().strip_suffix(']')?;
    let start = rule.rfind("[default: ")?;
    Some(rule[start + "[default: ".len()..].to_owned())
}

/// `command` with the values from the config file at `path` as its flags' defaults,
/// and the file's `[[stream]]` tables.
fn with_file_defaults(
    mut command: Command,
    path: &Path,
) -> Result<(Command, Vec<StreamTable>), LoadError> {
    // One line, even when it quotes a multi-line value back.
    let fail = |what: String| {
        let what = what.replace('\n', " ");
        LoadError::File(format!("config file {}: {what}", path.display()))
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::File(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(toml_error(&text, &e)))?;
    let mut tables = Vec::new();
    for (key, value) in table {
        if let Some(items) = stream_tables(&key, &value) {
            for (i, item) in items.iter().enumerate() {
                let table = toml::Value::Table((*item).clone())
                    .try_into::<StreamTable>()
                    .map_err(|e| fail(format!("[[stream]] number {}: {}", i + 1, e.message())))?;
                tables.push(table);
            }
            continue;
        }
        let Some(arg) = command
            .get_arguments()
            .find(|arg| file_key(arg) == Some(key.as_str()))
        else {
            return Err(fail(format!(
                "unknown key '{key}' (the keys are the names of nalcast --help's flags without the dashes)"
            )));
        };
        let values = file_values(arg, &value).map_err(|e| fail(format!("{key} = {value}: {e}")))?;
        let id = arg.get_id().clone();
        command = command.mut_arg(id, |arg| arg.default_values(values));
    }
    Ok((command, tables))
}

/// The `[[stream]]` tables, when `key = value` is them (`stream = ["a=test"]` is
/// the flag's list instead).
fn stream_tables<'a>(key: &str, value: &'a toml::Value) -> Option<Vec<&'a toml::Table>> {
    let toml::Value::Array(items) = value else {
        return None;
    };
    if key != "stream" || items.is_empty() {
        return None;
    }
    items.iter().map(toml::Value::as_table).collect()
}

/// Origins given to `--KEY` (http:// or https:// and an authority, or `*`), as
/// browsers send them: without a trailing slash.
fn origins(key: &str, given: Vec<String>) -> Result<Vec<String>, String> {
    let origins: Vec<String> = given
        .into_iter()
        .map(|o| o.trim_end_matches('/').to_owned())
        .collect();
    for origin in &origins {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let valid = origin == "*"
            || authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', ' ', ';', '\'']));
        if !valid {
            return Err(format!(
                "--{key} '{origin}' is not an origin like http://host:port (or *)"
            ));
        }
    }
    Ok(origins)
}

/// A TOML syntax error as a person can act on it: the line, and for the usual
/// slip (a word left unquoted: `source = rpicam`, which TOML reads as the start
/// of `true`) what to write instead.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(at) = e.span().map(|s| s.start) else {
        return e.message().to_owned();
    };
    let line_no = text[..at.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    if let Some((key, value)) = line.split_once('=') {
        let (key, value) = (key.trim(), value.trim());
        let bare = !value.is_empty()
            && value.parse::<f64>().is_err()
            && !matches!(value, "true" | "false")
            && !value.starts_with(['"', '\'', '[', '{']);
        if bare {
            return format!(
                "line {line_no}: the value of '{key}' is text, and text goes in quotes: {key} = \"{value}\""
            );
        }
    }
    format!(
        "line {line_no} ({line}): {}",
        e.message().replace('\n', " ")
    )
}

/// A file value as the text a flag would take, checked by the flag's own parser so
/// that a wrong one is reported against the file rather than the flag.
fn file_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let text = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        _ => Err("expected a string or a number".to_owned()),
    };
    let values = match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(text).collect::<Result<Vec<_>, _>>()?
        }
        toml::Value::Array(_) => return Err("expected one value, not a list".into()),
        value => vec![text(value)?],
    };
    let key = arg.get_long().unwrap_or_default();
    let takes = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| format!(" (--{key} takes {name})"))
        .unwrap_or_default();
    let probe = Command::new("nalcast")
        .no_binary_name(true)
        .arg(arg.clone().env(None));
    for v in &values {
        if let Err(e) = probe.clone().try_get_matches_from([format!("--{key}={v}")]) {
            let why = std::error::Error::source(&e)
                .map_or_else(|| e.kind().to_string(), |s| s.to_string());
            return Err(format!("not a valid value{takes}: {why}"));
        }
    }
    Ok(values)
}

/// The resolved configuration: checked plain values, from which the server builds
/// its runtime objects.
#[derive(Debug, Clone)]
pub struct Config {
    /// The streams, the default one first.
    pub streams: Vec<StreamConfig>,
    /// Main listener.
    pub listen: SocketAddr,
    /// Legacy raw listener, if enabled.
    pub legacy_listen: Option<SocketAddr>,
    /// mjpg-streamer's URLs on a port of their own, if wanted.
    pub mjpg_streamer_listen: Option<SocketAddr>,
    /// WebRTC viewers, unless off.
    pub webrtc: Option<WebRtcSettings>,
    /// Most HLS requests open per client address.
    pub max_hls_requests_per_ip: usize,
    /// Most bytes of HLS answers not yet sent.
    pub max_hls_memory: usize,
    /// Per-viewer queue limits.
    pub queue: QueueLimits,
    /// How MJPEG streams are made.
    pub mjpeg: MjpegSettings,
    /// Stuck-viewer timeout.
    pub viewer_timeout: Duration,
    /// Kernel send buffer per connection.
    pub send_buffer: usize,
    /// Extra origins allowed to open WebSockets.
    pub allow_origins: Vec<String>,
    /// Origins allowed to show the page in a frame (`--frame-ancestors`).
    pub frame_ancestors: Vec<String>,
    /// Extra host names served (`--public-host`).
    pub public_hosts: Vec<String>,
    /// Reverse proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The forwarding header they write.
    pub proxy_header: crate::server::proxy::ProxyHeader,
    /// Most viewers at once.
    pub max_viewers: usize,
    /// Most viewers from one address.
    pub max_viewers_per_ip: usize,
    /// Most open connections (before the open-file limit is taken into account).
    pub max_connections: usize,
    /// Most open connections from one address.
    pub max_connections_per_ip: usize,
    /// Viewer threads.
    pub viewer_threads: usize,
    /// Deadline for the TLS handshake and for request headers.
    pub header_timeout: Duration,
    /// HTTPS on the main listener, if wanted.
    pub tls: Option<TlsMode>,
    /// `--auth` and `--token` as given; `server::auth::Auth::from_config` checks them.
    pub credentials: Credentials,
}

/// How MJPEG streams are made (`--mjpeg-fps`, `--mjpeg-width`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MjpegSettings {
    /// Pictures a second.
    pub fps: u32,
    /// Width (the picture's own when it is narrower); `None`: the picture's own.
    pub width: Option<u32>,
    /// JPEG quality.
    pub quality: u8,
}

impl Default for MjpegSettings {
    fn default() -> Self {
        MjpegSettings {
            fps: 10,
            width: Some(640),
            quality: nalcast_still::DEFAULT_QUALITY,
        }
    }
}

/// The credentials a client must show, as given (`--auth`, `--token`).
#[derive(Clone, Default)]
pub struct Credentials {
    /// `USER:PASSWORD`, the password plain or an argon2 hash.
    pub basic: Option<String>,
    /// The bearer token.
    pub token: Option<String>,
}

/// Says which credentials are set, never what they are: a config may be logged.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("basic", &self.basic.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// The data directory: systemd's state directory, else the XDG data directory.
fn default_data_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("STATE_DIRECTORY") {
        return dir;
    }
    if let Some(dir) = env("XDG_DATA_HOME") {
        return dir.join("nalcast");
    }
    match env("HOME") {
        Some(home) => home.join(".local/share/nalcast"),
        None => PathBuf::from("nalcast-data"),
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("--{key} '{value}' is not HOST:PORT with an IP address (e.g. 0.0.0.0:8000 or [::]:8000)"))
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, String> {
    if v < lo || v > hi {
        return Err(format!("--{key} {v} is out of range ({lo} to {hi})"));
    }
    Ok(v)
}

fn seconds(key: &str, v: f64) -> Result<Duration, String> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!(
            "--{key} {v} must be a number of seconds between 0 and 86400"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Config {
    /// Checks every option and applies the defaults that are rules.
    pub fn resolve(o: Options) -> Result<Config, String> {
        let publish = o
            .publish
            .iter()
            .map(|url| url.parse::<PublishTarget>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let listen = parse_addr("listen", &o.listen)?;
        // The legacy port follows the main one's host: `--listen 127.0.0.1:8000`
        // behind a proxy must not leave video open to the network on port 9000.
        let legacy_listen = match o.legacy_listen.as_deref() {
            None => Some(SocketAddr::new(listen.ip(), DEFAULT_LEGACY_PORT)),
            Some("off" | "none" | "") => None,
            Some(other) => Some(parse_addr("legacy-listen", other)?),
        };
        let width = range("width", o.width, 16, 4096)?;
        let height = range("height", o.height, 16, 4096)?;
        if width % 2 != 0 || height % 2 != 0 {
            return Err(format!(
                "--width and --height must be even, got {width}x{height}"
            ));
        }
        let video = VideoSettings {
            width,
            height,
            fps: range("fps", o.fps, 1, 120)?,
            bitrate: range("bitrate", o.bitrate, 10_000, 100_000_000)?,
            keyframe_interval: range("keyframe-interval", o.keyframe_interval, 1, 10_000)?,
        };
        let source_options = SourceOptions {
            video,
            max_nal_size: range("max-nal-size", o.max_nal_size, 1024, 256 << 20)?,
            stall_timeout: seconds("stall-timeout", o.stall_timeout)?,
            rtsp_transport: o.rtsp_transport,
            rtsp_allow_basic: o.rtsp_allow_basic == "on",
            camera: o.camera,
            orientation: Orientation {
                rotation: o.rotation,
                hflip: o.hflip == "on",
                vflip: o.vflip == "on",
            },
            ..SourceOptions::default()
        };
        let defaults = stream::Defaults {
            options: source_options,
            hls: o.hls == "on",
            on_demand: (o.on_demand == "on")
                .then(|| stream::idle_timeout(o.idle_timeout))
                .transpose()
                .map_err(|e| format!("--idle-timeout {e}"))?,
        };
        let streams = streams(&o, &defaults, publish)?;
        let queue = QueueLimits {
            max_bytes: range("queue-max-bytes", o.queue_max_bytes, 64 * 1024, 1 << 30)?,
            max_delay: Duration::from_millis(range(
                "queue-max-delay",
                o.queue_max_delay,
                10,
                600_000,
            )?),
        };
        let viewer_timeout = seconds("viewer-timeout", o.viewer_timeout)?;
        let send_buffer = range("send-buffer", o.send_buffer, 4096, 64 << 20)?;
        let allow_origins = origins("allow-origin", o.allow_origin)?;
        let frame_ancestors = origins("frame-ancestors", o.frame_ancestors)?;
        let public_hosts = o.public_host;
        for name in &public_hosts {
            if name.is_empty() || name.contains(['/', ' ', ':', '@']) {
                return Err(format!(
                    "--public-host '{name}' is not a host name like camera.example.com (no scheme, port or path)"
                ));
            }
            // A wildcard is a whole label: `*cam.example.com` would serve
            // evilcam.example.com too.
            let wildcard_ok = name == "*"
                || name
                    .strip_prefix("*.")
                    .is_some_and(|d| !d.is_empty() && !d.contains('*'));
            if name.contains('*') && !wildcard_ok {
                return Err(format!(
                    "--public-host '{name}': a wildcard is *.DOMAIN (e.g. *.example.com) or * alone"
                ));
            }
        }
        let trusted_proxies = o
            .trusted_proxy
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("--trusted-proxy '{text}' is not an address or network like 10.0.0.5 or 10.0.0.0/8")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proxy_header = o.proxy_header.parse()?;
        let max_viewers = range("max-viewers", o.max_viewers, 1, 1_000_000)?;
        let max_viewers_per_ip = range("max-viewers-per-ip", o.max_viewers_per_ip, 1, 1_000_000)?;
        // Viewers hold connection slots (and two for a moment while they are
        // upgraded): raising a viewer limit raises the default connection limit.
        let max_connections = range(
            "max-connections",
            o.max_connections.unwrap_or(4096.max(2 * max_viewers)),
            1,
            10_000_000,
        )?;
        let max_connections_per_ip = range(
            "max-connections-per-ip",
            o.max_connections_per_ip
                .unwrap_or(256.max(2 * max_viewers_per_ip)),
            1,
            10_000_000,
        )?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let viewer_threads = range("viewer-threads", o.viewer_threads.unwrap_or(cores), 0, 256)?;
        let header_timeout = seconds("header-timeout", o.header_timeout)?;
        let data_dir = o.data_dir.unwrap_or_else(default_data_dir);
        let tls = match (o.tls.as_deref(), o.tls_cert, o.tls_key) {
            (None | Some("off"), None, None) => None,
            (Some("self-signed"), None, None) => Some(TlsMode::SelfSigned {
                dir: data_dir.join("tls"),
            }),
            (None | Some("files"), Some(cert), Some(key)) => Some(TlsMode::Files { cert, key }),
            (Some("self-signed" | "off"), _, _) => {
                return Err("--tls self-signed and off do not go with --tls-cert/--tls-key".into())
            }
            (None | Some("files"), _, _) => {
                return Err("--tls-cert and --tls-key go together: give both".into())
            }
            (Some(other), _, _) => {
                return Err(format!(
                "--tls '{other}' is not one of off, self-signed (or give --tls-cert and --tls-key)"
            ))
            }
        };
        Ok(Config {
            header_timeout,
            tls,
            credentials: Credentials {
                basic: o.auth,
                token: o.token,
            },
            max_viewers,
            max_viewers_per_ip,
            max_connections,
            max_connections_per_ip,
            viewer_threads,
            allow_origins,
            frame_ancestors,
            public_hosts,
            trusted_proxies,
            proxy_header,
            send_buffer,
            streams,
            listen,
            legacy_listen,
            mjpg_streamer_listen: match o.mjpg_streamer_listen.as_str() {
                "off" | "none" | "" => None,
                other => Some(parse_addr("mjpg-streamer-listen", other)?),
            },
            webrtc: match o.webrtc.as_deref() {
                Some("off" | "none" | "") => None,
                chosen => Some(WebRtcSettings {
                    listen: parse_addr("webrtc", chosen.unwrap_or(DEFAULT_WEBRTC))?,
                    public_ips: o
                        .webrtc_public_ip
                        .iter()
                        .map(|ip| {
                            ip.parse().map_err(|_| {
                                format!("--webrtc-public-ip '{ip}' is not an IP address (e.g. 203.0.113.7)")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                }),
            },
            max_hls_requests_per_ip: range(
                "max-hls-requests-per-ip",
                o.max_hls_requests_per_ip,
                1,
                1_000_000,
            )?,
            // 1 TiB, or what a 32-bit address space can count (armhf).
            max_hls_memory: range(
                "max-hls-memory",
                o.max_hls_memory,
                1 << 20,
                (1u64 << 40).min(usize::MAX as u64) as usize,
            )?,
            queue,
            mjpeg: MjpegSettings {
                fps: range("mjpeg-fps", o.mjpeg_fps, 1, 30)?,
                width: match o.mjpeg_width {
                    0 => None,
                    w => Some(range("mjpeg-width", w, 16, 4096)?),
                },
                ..Default::default()
            },
            viewer_timeout,
        })
    }

    /// The default stream: the first.
    pub fn default_stream(&self) -> &StreamConfig {
        &self.streams[0]
    }
}

/// The streams asked for: `--stream` flags (which, as any flag, replace the file's
/// `[[stream]]` tables), else the tables, else the one stream of `--source`. The
/// `--publish` targets go to the first.
fn streams(
    o: &Options,
    defaults: &stream::Defaults,
    publish: Vec<PublishTarget>,
) -> Result<Vec<StreamConfig>, String> {
    let mut streams = if !o.stream.is_empty() {
        o.stream
            .iter()
            .map(|flag| stream::from_flag(flag, defaults))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        o.stream_tables
            .iter()
            .map(|table| stream::from_table(table, defaults))
            .collect::<Result<Vec<_>, _>>()?
    };
    match (&o.source, streams.is_empty()) {
        (Some(_), false) => {
            return Err(
                "--source and --stream (or [[stream]] tables) do not go together: name that camera with --stream NAME=SPEC (or a [[stream]] table)"
                    .into(),
            )
        }
        (source, true) => {
            let spec = source.as_deref().unwrap_or("test");
            streams.push(StreamConfig {
                name: stream::DEFAULT_NAME.to_owned(),
                source: spec.parse().map_err(|e| format!("--source: {e}"))?,
                options: defaults.options.clone(),
                publish: Vec::new(),
                hls: defaults.hls,
                on_demand: defaults.on_demand,
                max_viewers: None,
            });
        }
        (None, false) => {}
    }
    stream::check_streams(&streams)?;
    streams[0].publish.extend(publish);
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let options = Options::load(std::iter::once("nalcast").chain(args.iter().copied()))
            .map_err(|e| match e {
                LoadError::Usage(e) => e.to_string(),
                LoadError::File(e) => e,
            })?;
        Config::resolve(options)
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nalcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Defaults that are rules rather than values: `--help` describes them.
    const RULES: [&str; 6] = [
        "source",
        "legacy-listen",
        "max-connections",
        "max-connections-per-ip",
        "viewer-threads",
        "data-dir",
    ];

    #[test]
    fn every_flag_is_a_file_key_with_the_same_meaning() {
        let command = Options::command();
        let flag_only: Vec<_> = command
            .get_arguments()
            .filter(|arg| file_key(arg).is_none())
            .filter_map(|arg| arg.get_long())
            .collect();
        // (--help and --version are clap's, added when the command is built.)
        assert_eq!(
            flag_only,
            ["config", "check", "list-cameras", "hash-password"],
            "only these flags stay out of the config file"
        );
        for arg in command.get_arguments() {
            let Some(key) = file_key(arg) else { continue };
            // Any value the flag's parser takes will do: the default if it is one.
            let value = match shown_default(arg) {
                Some(value) if !RULES.contains(&key) => value,
                _ => "1".to_owned(),
            };
            let toml = if matches!(arg.get_action(), ArgAction::Append) {
                format!("{key} = [{value:?}]\n")
            } else {
                format!("{key} = {value:?}\n")
            };
            let path = temp_file(&format!("{key}.toml"), &toml);
            let from_file = Options::load(["nalcast", "--config", path.to_str().expect("utf-8")])
                .unwrap_or_else(|e| panic!("{toml}: {e:?}"));
            let from_flag = Options::load(["nalcast", &format!("--{key}={value}")])
                .unwrap_or_else(|e| panic!("--{key}={value}: {e:?}"));
            assert_eq!(
                format!(
                    "{:?}",
                    Options {
                        config: None,
                        ..from_file
                    }
                ),
                format!("{from_flag:?}"),
                "{toml}"
            );
        }
    }

    #[test]
    fn the_defaults_help_shows_are_the_defaults_used() {
        let defaults = format!("{:?}", parse(&[]).expect("defaults are valid"));
        for arg in Options::command().get_arguments() {
            let (Some(key), Some(value)) = (file_key(arg), shown_default(arg)) else {
                continue;
            };
            if RULES.contains(&key) {
                continue;
            }
            let given = parse(&[&format!("--{key}={value}")])
                .unwrap_or_else(|e| panic!("--{key}={value}: {e}"));
            assert_eq!(format!("{given:?}"), defaults, "--{key} {value}");
        }
        // The rules, spelled out: each is what its help text says.
        let c = parse(&[]).expect("valid");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            (
                c.max_connections,
                c.max_connections_per_ip,
                c.viewer_threads
            ),
            (4096, 256, cores)
        );
        assert_eq!(
            c.legacy_listen.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:9000")
        );
    }

    #[test]
    fn the_legacy_port_follows_the_listen_host() {
        let c = parse(&["--listen", "127.0.0.1:8080"]).expect("valid");
        assert_eq!(
            c.legacy_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9000")
        );
        let c = parse(&["--listen", "[::1]:8000"]).expect("valid");
        assert_eq!(
            c.legacy_listen.map(|a| a.to_string()).as_deref(),
            Some("[::1]:9000")
        );
        let c = parse(&[
            "--listen",
            "127.0.0.1:8000",
            "--legacy-listen",
            "0.0.0.0:9001",
        ])
        .expect("valid");
        assert_eq!(
            c.legacy_listen.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:9001")
        );
    }

    #[test]
    fn publish_targets_come_from_flags_or_the_file() {
        assert!(parse(&[])
            .expect("valid")
            .default_stream()
            .publish
            .is_empty());
        let c = parse(&[
            "--publish",
            "rtmp://u:pw@a/live/key",
            "--publish",
            "srt://b:8890?streamid=x",
        ])
        .expect("valid");
        let shown: Vec<_> = c
            .default_stream()
            .publish
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["rtmp://***@a/live/***", "srt://b:8890?***"]);
        assert!(!format!("{c:?}").contains("pw"), "a config may be logged");
        let path = temp_file("p.toml", "publish = [\"rtsp://m:8554/cam\"]\n");
        let c = parse(&["--config", path.to_str().expect("utf-8")]).expect("valid");
        assert_eq!(c.default_stream().publish[0].shown(), "rtsp://m:8554/cam");
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.default_stream().source, nalcast_sources::SourceSpec::Test);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8000");
        assert_eq!(c.default_stream().options.video, VideoSettings::default());
        assert_eq!(c.tls, None);
        assert!(c.credentials.basic.is_none() && c.credentials.token.is_none());
    }

    #[test]
    fn connection_limits_default_to_room_for_the_viewer_limits() {
        let c = parse(&["--max-viewers", "5000", "--max-viewers-per-ip", "5000"]).expect("valid");
        assert_eq!(
            (c.max_connections, c.max_connections_per_ip),
            (10_000, 10_000)
        );
        let c = parse(&[
            "--max-viewers-per-ip",
            "5000",
            "--max-connections-per-ip",
            "20",
        ])
        .expect("valid");
        assert_eq!(c.max_connections_per_ip, 20, "a given value is kept");
    }

    fn names(c: &Config) -> Vec<&str> {
        c.streams.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn one_stream_named_camera_without_stream_flags() {
        let c =
            parse(&["--source", "file:/x.h264", "--publish", "rtmp://m/live/k"]).expect("valid");
        assert_eq!(names(&c), ["camera"]);
        assert_eq!(c.default_stream().source.kind(), "file");
        assert_eq!(c.default_stream().publish.len(), 1);
        assert_eq!(c.default_stream().on_demand, None);
    }

    #[test]
    fn streams_from_flags_take_the_flags_settings() {
        let c = parse(&[
            "--stream",
            "garden=test",
            "--stream",
            "door=file:/d.h264",
            "--fps",
            "12",
            "--hls",
            "off",
            "--on-demand",
            "on",
            "--idle-timeout",
            "4",
            "--publish",
            "rtmp://m/live/k",
        ])
        .expect("valid");
        assert_eq!(names(&c), ["garden", "door"]);
        for s in &c.streams {
            assert_eq!(s.options.video.fps, 12);
            assert!(!s.hls);
            assert_eq!(s.on_demand, Some(Duration::from_secs(4)));
        }
        // --publish is the first stream's.
        assert_eq!(c.streams[0].publish.len(), 1);
        assert!(c.streams[1].publish.is_empty());
    }

    #[test]
    fn stream_tables_come_from_the_file_and_flags_replace_them() {
        let path = temp_file(
            "streams.toml",
            "fps = 20\n\n[[stream]]\nname = \"pi\"\nsource = \"test\"\nwidth = 640\nheight = 480\n\n\
             [[stream]]\nname = \"usb\"\nsource = \"usb\"\non-demand = \"on\"\n",
        );
        let file = path.to_str().expect("utf-8");
        let c = parse(&["--config", file]).expect("valid");
        assert_eq!(names(&c), ["pi", "usb"]);
        assert_eq!(c.streams[0].options.video.width, 640);
        assert_eq!(
            c.streams[0].options.video.fps, 20,
            "the file's top-level fps"
        );
        assert_eq!(c.streams[1].options.video.width, 1280);
        assert_eq!(c.streams[1].on_demand, Some(stream::DEFAULT_IDLE));
        let c = parse(&["--config", file, "--stream", "only=test"]).expect("valid");
        assert_eq!(names(&c), ["only"]);
    }

    #[test]
    fn stream_mistakes_are_one_line_errors() {
        let e = parse(&["--source", "usb", "--stream", "a=test"]).expect_err("both");
        assert!(e.contains("--source and --stream"), "{e}");
        let e = parse(&["--stream", "a=test", "--stream", "a=usb"]).expect_err("twice");
        assert!(e.contains("'a' is given twice"), "{e}");
        let e = parse(&["--stream", "../x=test"]).expect_err("unsafe");
        assert!(e.contains("stream name '../x'"), "{e}");
        let path = temp_file(
            "bad-stream.toml",
            "[[stream]]\nname = \"a\"\nsource = \"test\"\nzoom = 2\n",
        );
        let e = parse(&["--config", path.to_str().expect("utf-8")]).expect_err("unknown key");
        assert!(
            e.contains("[[stream]] number 1") && e.contains("zoom"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let path = temp_file(
            "both.toml",
            "source = \"usb\"\n[[stream]]\nname = \"a\"\nsource = \"test\"\n",
        );
        let e = parse(&["--config", path.to_str().expect("utf-8")]).expect_err("both in file");
        assert!(e.contains("--source and --stream"), "{e}");
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let path = temp_file(
            "c.toml",
            "fps = 15\nwidth = 640\nlegacy-listen = \"off\"\nviewer-timeout = 2.5\nallow-origin = [\"http://a.lan\", \"http://b.lan/\"]\n",
        );
        let path = path.to_str().expect("utf-8");
        let c = parse(&["--config", path, "--fps", "25"]).expect("valid");
        assert_eq!(c.default_stream().options.video.fps, 25);
        assert_eq!(c.default_stream().options.video.width, 640);
        assert_eq!(c.default_stream().options.video.height, 720);
        assert_eq!(c.legacy_listen, None);
        assert_eq!(c.viewer_timeout, Duration::from_millis(2500));
        assert_eq!(c.allow_origins, ["http://a.lan", "http://b.lan"]);
        let c = parse(&["--config", path, "--allow-origin", "http://c.lan"]).expect("valid");
        assert_eq!(
            c.allow_origins,
            ["http://c.lan"],
            "a repeated flag replaces the file's list"
        );
    }

    #[test]
    fn rtsp_sources_take_their_transport_from_flag_or_file() {
        let c = parse(&["--source", "rtsp://u:p%40ss@cam:8554/live"]).expect("valid");
        assert_eq!(c.default_stream().source.kind(), "rtsp");
        assert_eq!(
            c.default_stream().source.to_string(),
            "rtsp://***@cam:8554/live"
        );
        assert!(
            !format!("{c:?}").contains("p%40ss"),
            "Debug leaks the password"
        );
        assert_eq!(
            c.default_stream().options.rtsp_transport,
            RtspTransport::Tcp
        );
        let path = temp_file("rtsp.toml", "rtsp-transport = \"udp\"\n");
        let c = parse(&["--config", path.to_str().expect("utf-8")]).expect("valid");
        assert_eq!(
            c.default_stream().options.rtsp_transport,
            RtspTransport::Udp
        );
        let err = parse(&["--rtsp-transport", "quic"]).unwrap_err();
        assert!(err.contains("expected tcp or udp"), "{err}");
    }

    #[test]
    fn bad_config_files_are_one_line_errors_naming_the_file() {
        for (text, needle) in [
            ("frames = 3\n", "unknown key 'frames'"),
            ("config = \"other.toml\"\n", "unknown key 'config'"),
            ("hash-password = true\n", "unknown key 'hash-password'"),
            ("list-cameras = true\n", "unknown key 'list-cameras'"),
            ("fps = \"fast\"\n", "fps = \"fast\": not a valid value"),
            ("fps = [30]\n", "fps = [30]: expected one value, not a list"),
            ("tls = true\n", "tls = true: expected a string or a number"),
            ("fps = \n", "bad.toml"),
            ("fps = \"\"\"3\n0\"\"\"\n", "fps = "),
        ] {
            let path = temp_file("bad.toml", text);
            let err = parse(&["--config", path.to_str().expect("utf-8")]).unwrap_err();
            assert!(
                err.contains("bad.toml") && err.contains(needle),
                "{text}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (args, needle) in [
            (&["--width", "641"][..], "even"),
            (&["--fps", "0"][..], "--fps 0 is out of range"),
            (&["--listen", "nowhere"][..], "--listen 'nowhere'"),
            (&["--source", "camera"][..], "unknown source 'camera'"),
            (&["--stall-timeout=-1"][..], "--stall-timeout"),
            (
                &["--source", "rtsps://admin:hunter2@cam/live"][..],
                "bad RTSP source 'rtsps://admin:***@cam/live': rtsps://",
            ),
            (
                &["--allow-origin", "evil.example/x"][..],
                "--allow-origin 'evil.example/x'",
            ),
            (
                &["--public-host", "*cam.example.com"][..],
                "--public-host '*cam.example.com': a wildcard is *.DOMAIN",
            ),
            (
                &["--public-host", "cam.*.example.com"][..],
                "--public-host 'cam.*.example.com': a wildcard is *.DOMAIN",
            ),
            (&["--public-host", "*."][..], "a wildcard is *.DOMAIN"),
            (
                &["--publish", "http://u:pw@host/live"][..],
                "--publish 'http://…': unknown scheme 'http'",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
