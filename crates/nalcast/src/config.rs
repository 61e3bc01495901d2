//! Command-line flags and the optional TOML config file, merged once into a plain
//! [`Config`] (flags win over the file, the file over defaults).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nalcast_core::source::{SourceOptions, SourceSpec, VideoSettings};
use nalcast_core::viewer::QueueLimits;
use serde::Deserialize;

/// Port of the legacy raw WebSocket listener (the original design's 9000).
const DEFAULT_LEGACY_PORT: u16 = 9000;

use crate::server::tls::TlsMode;

/// nalcast: live H.264 camera streaming to web browsers over WebSocket.
///
/// Open http://HOST:8000/ in a browser to watch. The original design's pages keep
/// working against ws://HOST:9000.
#[derive(Parser, Debug, Default)]
#[command(name = "nalcast", version, about, long_about = None)]
pub struct Args {
    /// TOML config file with the same keys as these flags (e.g. `keyframe-interval = 60`); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Video source: test (built-in test pattern), rpicam (Raspberry Pi camera), file:PATH (Annex-B .h264, looped), exec:COMMAND (stdout of a shell command), stdin. [default: test]
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// Address for the page, API and WebSocket endpoints. [default: 0.0.0.0:8000]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address of the legacy raw WebSocket listener (any path, one NAL unit per message; always plain ws://), or "off". [default: the --listen host, port 9000]
    #[arg(long, value_name = "HOST:PORT|off")]
    pub legacy_listen: Option<String>,
    /// Picture width for test and rpicam sources (even). [default: 1280]
    #[arg(long)]
    pub width: Option<u32>,
    /// Picture height for test and rpicam sources (even). [default: 720]
    #[arg(long)]
    pub height: Option<u32>,
    /// Frames per second (test and rpicam sources encode at it, file sources are paced at it). [default: 30]
    #[arg(long)]
    pub fps: Option<u32>,
    /// Target bitrate in bits per second for test and rpicam sources. [default: 3000000]
    #[arg(long)]
    pub bitrate: Option<u32>,
    /// Frames between keyframes for test and rpicam sources. [default: 60]
    #[arg(long)]
    pub keyframe_interval: Option<u32>,
    /// Largest accepted NAL unit in bytes; larger ones are dropped and counted. [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub max_nal_size: Option<usize>,
    /// Restart a source that delivers no data for this many seconds. [default: 5]
    #[arg(long, value_name = "SECONDS")]
    pub stall_timeout: Option<f64>,
    /// Most bytes queued for one viewer before it is reset to the next keyframe. [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub queue_max_bytes: Option<usize>,
    /// Oldest frame queued for one viewer, in milliseconds, before it is reset to the next keyframe. [default: 2000]
    #[arg(long, value_name = "MS")]
    pub queue_max_delay: Option<u64>,
    /// Disconnect a client whose socket accepts nothing for this many seconds: a viewer that cannot be written to, or any connection that leaves what it was sent unread (the kernel's TCP_USER_TIMEOUT). [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub viewer_timeout: Option<f64>,
    /// Most viewers at once; more are refused with HTTP 503. [default: 2000]
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<usize>,
    /// Most viewers from one client address; more are refused with HTTP 429. [default: 100]
    #[arg(long, value_name = "N")]
    pub max_viewers_per_ip: Option<usize>,
    /// Most open connections at once (viewers included); more are closed at once (HTTP 503 on plain HTTP). Lowered at start to fit the open-file limit. [default: 4096, or twice --max-viewers if that is more]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most open connections from one client address (an IPv6 /64 counts as one), viewers included; more are closed at once (HTTP 429 on plain HTTP). [default: 256, or twice --max-viewers-per-ip if that is more]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Threads that write to plain-HTTP viewers, so a frame goes out on every core at once; 0 keeps them on the main runtime. [default: number of cores]
    #[arg(long, value_name = "N")]
    pub viewer_threads: Option<usize>,
    /// Let pages from this origin open WebSockets too (e.g. http://dashboard.lan:3000), or * for any; repeatable. By default only the page's own origin (and, on the legacy port, the same host) may.
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Also answer to this host name (a DNS name or reverse proxy's name users open the camera by; *.example.com for a domain, * for any); repeatable. IP addresses, localhost, this machine's host name (alone, .local, and under its DNS search domains) and the TLS certificate's names are always served; other names get 421, a defence against DNS rebinding.
    #[arg(long, value_name = "NAME")]
    pub public_host: Vec<String>,
    /// A reverse proxy (address or CIDR, e.g. 127.0.0.1 or 10.0.0.0/8) whose Forwarded / X-Forwarded-For headers name the real client, for viewer limits, lock-outs and logs; repeatable. Others' forwarding headers are ignored.
    #[arg(long, value_name = "CIDR")]
    pub trusted_proxy: Vec<String>,
    /// Kernel send buffer per connection in bytes; small keeps a slow viewer's backlog in nalcast's queue, where it can skip to a keyframe. [default: 131072]
    #[arg(long, value_name = "BYTES")]
    pub send_buffer: Option<usize>,
    /// Seconds a client has for the TLS handshake and for each request's headers; slower clients are dropped, and so is a keep-alive connection that sends no new request for as long. [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub header_timeout: Option<f64>,
    /// HTTPS on the main port: "self-signed" makes a certificate for this machine once and keeps it in --data-dir; "off" for plain HTTP. --tls-cert/--tls-key use your own. [default: off]
    #[arg(long, value_name = "off|self-signed")]
    pub tls: Option<String>,
    /// PEM certificate chain for HTTPS (with --tls-key); reloaded when the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Where nalcast keeps what it makes (the self-signed certificate). [default: $STATE_DIRECTORY, else $XDG_DATA_HOME/nalcast, else ~/.local/share/nalcast]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Require HTTP Basic authentication as USER:PASSWORD for everything but /healthz; the password may be an argon2 hash from --hash-password.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "NALCAST_AUTH",
        hide_env_values = true
    )]
    pub auth: Option<String>,
    /// Require this token (16+ characters of A-Z a-z 0-9 - . _ ~) for everything but /healthz, as ?token=, a cookie set by opening /?token=, or an "Authorization: Bearer" header.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "NALCAST_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Read a password from standard input, print its argon2 hash (for --auth or the config file) and exit.
    #[arg(long)]
    pub hash_password: bool,
}

/// The config file: same keys as the flags, kebab-case.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    source: Option<String>,
    listen: Option<String>,
    legacy_listen: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
    bitrate: Option<u32>,
    keyframe_interval: Option<u32>,
    max_nal_size: Option<usize>,
    stall_timeout: Option<f64>,
    queue_max_bytes: Option<usize>,
    queue_max_delay: Option<u64>,
    viewer_timeout: Option<f64>,
    send_buffer: Option<usize>,
    allow_origin: Option<Vec<String>>,
    public_host: Option<Vec<String>>,
    trusted_proxy: Option<Vec<String>>,
    max_viewers: Option<usize>,
    max_viewers_per_ip: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    viewer_threads: Option<usize>,
    header_timeout: Option<f64>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    auth: Option<String>,
    token: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where video comes from.
    pub source: SourceSpec,
    /// Main listener.
    pub listen: SocketAddr,
    /// Legacy raw listener, if enabled.
    pub legacy_listen: Option<SocketAddr>,
    /// Source options.
    pub source_options: SourceOptions,
    /// Per-viewer queue limits.
    pub queue: QueueLimits,
    /// Stuck-viewer timeout.
    pub viewer_timeout: Duration,
    /// Kernel send buffer per connection.
    pub send_buffer: usize,
    /// Extra origins allowed to open WebSockets.
    pub allow_origins: Vec<String>,
    /// Extra host names served (`--public-host`).
    pub public_hosts: Vec<String>,
    /// Reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
    /// Credentials from `--auth` and `--token`, if any.
    pub auth: Option<std::sync::Arc<crate::server::auth::Auth>>,
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

/// A repeatable option: the flags' values if any were given, else the file's.
fn repeated(flags: Vec<String>, file: Option<Vec<String>>) -> Vec<String> {
    if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
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
    /// Merges flags over the config file over defaults and checks every value.
    pub fn resolve(args: Args) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    let msg = e.message().replace('\n', " ");
                    format!("config file {}: {msg}", path.display())
                })?
            }
            None => FileConfig::default(),
        };
        let d = VideoSettings::default();
        let source_text = args.source.or(file.source).unwrap_or_else(|| "test".into());
        let source: SourceSpec = source_text.parse().map_err(|e| format!("--source: {e}"))?;
        let listen = parse_addr(
            "listen",
            &args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "0.0.0.0:8000".into()),
        )?;
        // The legacy port follows the main one's host: `--listen 127.0.0.1:8000`
        // behind a proxy must not leave video open to the network on port 9000.
        let legacy_listen = match args.legacy_listen.or(file.legacy_listen).as_deref() {
            None => Some(SocketAddr::new(listen.ip(), DEFAULT_LEGACY_PORT)),
            Some("off" | "none" | "") => None,
            Some(other) => Some(parse_addr("legacy-listen", other)?),
        };
        let width = range(
            "width",
            args.width.or(file.width).unwrap_or(d.width),
            16,
            4096,
        )?;
        let height = range(
            "height",
            args.height.or(file.height).unwrap_or(d.height),
            16,
            4096,
        )?;
        if width % 2 != 0 || height % 2 != 0 {
            return Err(format!(
                "--width and --height must be even, got {width}x{height}"
            ));
        }
        let video = VideoSettings {
            width,
            height,
            fps: range("fps", args.fps.or(file.fps).unwrap_or(d.fps), 1, 120)?,
            bitrate: range(
                "bitrate",
                args.bitrate.or(file.bitrate).unwrap_or(d.bitrate),
                10_000,
                100_000_000,
            )?,
            keyframe_interval: range(
                "keyframe-interval",
                args.keyframe_interval
                    .or(file.keyframe_interval)
                    .unwrap_or(d.keyframe_interval),
                1,
                10_000,
            )?,
        };
        let defaults = SourceOptions::default();
        let source_options = SourceOptions {
            video,
            max_nal_size: range(
                "max-nal-size",
                args.max_nal_size
                    .or(file.max_nal_size)
                    .unwrap_or(defaults.max_nal_size),
                1024,
                256 << 20,
            )?,
            stall_timeout: match args.stall_timeout.or(file.stall_timeout) {
                Some(s) => seconds("stall-timeout", s)?,
                None => defaults.stall_timeout,
            },
            ..defaults
        };
        let qd = QueueLimits::default();
        let queue = QueueLimits {
            max_bytes: range(
                "queue-max-bytes",
                args.queue_max_bytes
                    .or(file.queue_max_bytes)
                    .unwrap_or(qd.max_bytes),
                64 * 1024,
                1 << 30,
            )?,
            max_delay: Duration::from_millis(range(
                "queue-max-delay",
                args.queue_max_delay
                    .or(file.queue_max_delay)
                    .unwrap_or(qd.max_delay.as_millis() as u64),
                10,
                600_000,
            )?),
        };
        let viewer_timeout = seconds(
            "viewer-timeout",
            args.viewer_timeout.or(file.viewer_timeout).unwrap_or(10.0),
        )?;
        let send_buffer = range(
            "send-buffer",
            args.send_buffer.or(file.send_buffer).unwrap_or(128 * 1024),
            4096,
            64 << 20,
        )?;
        let allow_origins: Vec<String> = repeated(args.allow_origin, file.allow_origin);
        // Browsers send origins without a trailing slash.
        let allow_origins: Vec<String> = allow_origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        for origin in &allow_origins {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let valid = origin == "*"
                || authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', ' ']));
            if !valid {
                return Err(format!(
                    "--allow-origin '{origin}' is not an origin like http://host:port (or *)"
                ));
            }
        }
        let public_hosts = repeated(args.public_host, file.public_host);
        for name in &public_hosts {
            if name.is_empty() || name.contains(['/', ' ', ':', '@']) {
                return Err(format!(
                    "--public-host '{name}' is not a host name like camera.example.com (no scheme, port or path)"
                ));
            }
        }
        let trusted_proxies = repeated(args.trusted_proxy, file.trusted_proxy);
        let trusted_proxies = trusted_proxies
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("--trusted-proxy '{text}' is not an address or network like 10.0.0.5 or 10.0.0.0/8")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_viewers = range(
            "max-viewers",
            args.max_viewers.or(file.max_viewers).unwrap_or(2000),
            1,
            1_000_000,
        )?;
        let max_viewers_per_ip = range(
            "max-viewers-per-ip",
            args.max_viewers_per_ip
                .or(file.max_viewers_per_ip)
                .unwrap_or(100),
            1,
            1_000_000,
        )?;
        // Viewers hold connection slots (and two for a moment while they are
        // upgraded): raising a viewer limit raises the default connection limit.
        let max_connections = range(
            "max-connections",
            args.max_connections
                .or(file.max_connections)
                .unwrap_or(4096.max(2 * max_viewers)),
            1,
            10_000_000,
        )?;
        let max_connections_per_ip = range(
            "max-connections-per-ip",
            args.max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(256.max(2 * max_viewers_per_ip)),
            1,
            10_000_000,
        )?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let viewer_threads = range(
            "viewer-threads",
            args.viewer_threads.or(file.viewer_threads).unwrap_or(cores),
            0,
            256,
        )?;
        let header_timeout = seconds(
            "header-timeout",
            args.header_timeout.or(file.header_timeout).unwrap_or(10.0),
        )?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let tls_mode = args.tls.or(file.tls);
        let tls = match (
            tls_mode.as_deref(),
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
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
        let auth = crate::server::auth::Auth::new(
            args.auth.or(file.auth).as_deref(),
            args.token.or(file.token).as_deref(),
            tls.is_some(),
        )?
        .map(std::sync::Arc::new);
        Ok(Config {
            header_timeout,
            tls,
            auth,
            max_viewers,
            max_viewers_per_ip,
            max_connections,
            max_connections_per_ip,
            viewer_threads,
            allow_origins,
            public_hosts,
            trusted_proxies,
            send_buffer,
            source,
            listen,
            legacy_listen,
            source_options,
            queue,
            viewer_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("nalcast").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::resolve(args)
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
    fn defaults() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.source, SourceSpec::Test);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8000");
        assert_eq!(
            c.legacy_listen.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:9000")
        );
        assert_eq!(c.source_options.video, VideoSettings::default());
        assert_eq!((c.max_connections, c.max_connections_per_ip), (4096, 256));
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

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("nalcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, "fps = 15\nwidth = 640\nlegacy-listen = \"off\"\n").expect("write");
        let c = parse(&["--config", path.to_str().expect("utf-8"), "--fps", "25"]).expect("valid");
        assert_eq!(c.source_options.video.fps, 25);
        assert_eq!(c.source_options.video.width, 640);
        assert_eq!(c.legacy_listen, None);
        std::fs::write(&path, "frames = 3\n").expect("write");
        let err = parse(&["--config", path.to_str().expect("utf-8")]).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
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
                &["--allow-origin", "evil.example/x"][..],
                "--allow-origin 'evil.example/x'",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
