//! A `--publish` URL: its scheme, the form that may be shown, and the secrets in it
//! that must never be (pure: text in, text out).
use std::fmt;
use std::str::FromStr;

/// What the media server speaks, which decides ffmpeg's output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// RTMP (nginx-rtmp, MediaMTX, SRS, YouTube, Twitch): FLV over RTMP.
    Rtmp,
    /// RTMP over TLS.
    Rtmps,
    /// RTSP (MediaMTX): announce and record, over TCP.
    Rtsp,
    /// SRT (MediaMTX, SRS): MPEG-TS over SRT.
    Srt,
}

impl Scheme {
    /// The URL scheme, without `://`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
            Scheme::Rtsp => "rtsp",
            Scheme::Srt => "srt",
        }
    }

    /// The ffmpeg protocol it needs among `ffmpeg -protocols`' outputs (RTSP is a
    /// muxer over TCP, which every ffmpeg has).
    pub fn ffmpeg_protocol(self) -> Option<&'static str> {
        match self {
            Scheme::Rtmp => Some("rtmp"),
            Scheme::Rtmps => Some("rtmps"),
            Scheme::Srt => Some("srt"),
            Scheme::Rtsp => None,
        }
    }

    fn parse(name: &str) -> Option<Scheme> {
        match name.to_ascii_lowercase().as_str() {
            "rtmp" => Some(Scheme::Rtmp),
            "rtmps" => Some(Scheme::Rtmps),
            "rtsp" => Some(Scheme::Rtsp),
            "srt" => Some(Scheme::Srt),
            _ => None,
        }
    }
}

/// Where to publish: the URL as given (for ffmpeg only), and its shown form.
///
/// Shown, a URL loses what may be a secret: the user and password
/// (`rtmp://***@host/…`), the query string (`?***`: SRT passphrases, MediaMTX and
/// SRS keys), and for RTMP everything after the application (`rtmp://host/live2/***`:
/// YouTube, Twitch and most services take the stream key as the stream name).
/// `Display` and `Debug` print the shown form, so a config can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishTarget {
    url: String,
    scheme: Scheme,
    shown: String,
    secrets: Vec<String>,
    /// srt://'s query string as ffmpeg's option lines ([`Self::ffmpeg_output`]).
    ffmpeg_options: Option<String>,
}

/// A `--publish` value that cannot be used. Its message shows the URL in its shown
/// form only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--publish {shown}: {why}")]
pub struct BadTarget {
    shown: String,
    why: String,
}

impl FromStr for PublishTarget {
    type Err = BadTarget;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme_name, rest) = url.split_once("://").unwrap_or(("", url));
        // Until the URL is understood, nothing of it but the scheme is shown.
        let bad = |why: String| BadTarget {
            shown: if scheme_name.is_empty() {
                "'…'".to_owned()
            } else {
                format!("'{scheme_name}://…'")
            },
            why,
        };
        if scheme_name.is_empty() {
            return Err(bad(
                "not a URL; expected rtmp://, rtmps://, rtsp:// or srt:// (e.g. rtmp://host/live/cam)"
                    .into(),
            ));
        }
        let scheme = Scheme::parse(scheme_name).ok_or_else(|| {
            bad(format!(
                "unknown scheme '{scheme_name}'; expected rtmp://, rtmps://, rtsp:// or srt://"
            ))
        })?;
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("a URL has no spaces or control characters".into()));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, p),
            None => (before_query, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() || host.starts_with(':') {
            return Err(bad("no host name".into()));
        }
        if scheme == Scheme::Srt && !host.contains(':') {
            return Err(bad(
                "srt:// needs a port (e.g. srt://host:8890?streamid=…)".into()
            ));
        }
        let ffmpeg_options = match scheme {
            Scheme::Srt => {
                Some(srt_options(query.unwrap_or_default()).map_err(bad)?).filter(|o| !o.is_empty())
            }
            _ => None,
        };
        if matches!(scheme, Scheme::Rtmp | Scheme::Rtmps | Scheme::Rtsp) && path.is_empty() {
            return Err(bad(format!(
                "no stream path (e.g. {}://host/live/cam)",
                scheme.name()
            )));
        }

        let mut secrets = Vec::new();
        let mut shown = format!("{}://", scheme.name());
        if let Some(userinfo) = userinfo {
            shown.push_str("***@");
            secrets.push(userinfo.to_owned());
            if let Some((user, password)) = userinfo.split_once(':') {
                secrets.push(user.to_owned());
                secrets.push(password.to_owned());
            }
        }
        shown.push_str(host);
        if !path.is_empty() {
            shown.push('/');
            match scheme {
                Scheme::Rtmp | Scheme::Rtmps => match path.split_once('/') {
                    Some((app, key)) if !key.is_empty() => {
                        shown.push_str(app);
                        shown.push_str("/***");
                        secrets.push(key.to_owned());
                    }
                    _ => shown.push_str(path),
                },
                _ => shown.push_str(path),
            }
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            shown.push_str("?***");
            secrets.push(query.to_owned());
            // Each value alone too: ffmpeg may quote one (a streamid) by itself.
            for pair in query.split('&') {
                if let Some((_, value)) = pair.split_once('=') {
                    secrets.push(value.to_owned());
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        // Longest first, so that a secret holding another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Ok(PublishTarget {
            url: url.to_owned(),
            scheme,
            shown,
            secrets,
            ffmpeg_options,
        })
    }
}

/// Where an `rtmp://` or `rtmps://` target is, as nalcast's own RTMP client needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpEndpoint {
    /// Host name or address (an IPv6 one without its brackets).
    pub host: String,
    /// 1935 for RTMP, 443 for RTMPS unless the URL says.
    pub port: u16,
    /// Over TLS (`rtmps://`).
    pub tls: bool,
    /// The application: the path's first segment (`live`, YouTube's `live2`).
    pub app: String,
    /// The stream name: the rest of the path with the query, if any (the stream
    /// key, MediaMTX's `cam?user=…&pass=…`). A secret.
    pub stream: String,
    /// The URL of the application, as the `connect` command gives it (no key, no
    /// user).
    pub tc_url: String,
    /// The user and password, percent-decoded, when the URL has them: a login for
    /// servers that ask for one (publish/rtmp_login.rs).
    pub login: Option<(String, String)>,
}

impl fmt::Debug for RtmpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtmpEndpoint({}:{}/{})", self.host, self.port, self.app)
    }
}

/// Where an `rtsp://` target is, as nalcast's own RTSP client needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct RtspEndpoint {
    /// Host name or address (an IPv6 one without its brackets).
    pub host: String,
    /// 554 unless the URL says.
    pub port: u16,
    /// The URL without its user and password: the requests' URL.
    pub url: String,
    /// The user and password, percent-decoded, when the URL has them.
    pub login: Option<(String, String)>,
}

impl fmt::Debug for RtspEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtspEndpoint({}:{})", self.host, self.port)
    }
}

impl PublishTarget {
    /// For `rtsp://` URLs: where nalcast publishes by itself (publish/rtsp.rs).
    pub fn rtsp_endpoint(&self) -> Option<RtspEndpoint> {
        if self.scheme != Scheme::Rtsp {
            return None;
        }
        let rest = self.url.split_once("://")?.1;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (login, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(decoded_login(userinfo)?), hostport),
            None => (None, authority),
        };
        let (host, port) = host_and_port(hostport, 554)?;
        Some(RtspEndpoint {
            host,
            port,
            url: format!("rtsp://{hostport}/{path}"),
            login,
        })
    }

    /// For `rtmp://` and `rtmps://` URLs: where nalcast publishes by itself
    /// (publish/rtmp.rs). `None` for the others: ffmpeg's.
    pub fn rtmp_endpoint(&self) -> Option<RtmpEndpoint> {
        let tls = match self.scheme {
            Scheme::Rtmp => false,
            Scheme::Rtmps => true,
            Scheme::Rtsp | Scheme::Srt => return None,
        };
        let rest = self.url.split_once("://")?.1;
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = before_query.split_once('/')?;
        let (login, authority) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(decoded_login(userinfo)?), hostport),
            None => (None, authority),
        };
        let (app, name) = path.split_once('/')?;
        if app.is_empty() || name.is_empty() {
            return None;
        }
        let (host, port) = host_and_port(authority, if tls { 443 } else { 1935 })?;
        let stream = match query {
            Some(q) => format!("{name}?{q}"),
            None => name.to_owned(),
        };
        Some(RtmpEndpoint {
            host,
            port,
            tls,
            app: app.to_owned(),
            stream,
            tc_url: format!("{}://{authority}/{app}", self.scheme.name()),
            login,
        })
    }

    /// What ffmpeg is given to publish here: the output address for its command
    /// line, and the options it reads from a file (`-fpre`) rather than from its
    /// arguments. For `srt://` that is the whole query string (passphrase,
    /// streamid, latency, …), one `key=value` a line, so that nothing of it is on a
    /// command line every user of the machine can read; the others take the URL
    /// as given.
    pub fn ffmpeg_output(&self) -> FfmpegOutput {
        let address = match self.scheme {
            Scheme::Srt => self.url.split('?').next().unwrap_or_default(),
            _ => &self.url,
        };
        FfmpegOutput {
            address: address.to_owned(),
            options: self.ffmpeg_options.clone(),
        }
    }

    /// Whether publishing here takes an ffmpeg process (all but
    /// [`Self::rtmp_endpoint`]'s and [`Self::rtsp_endpoint`]'s).
    pub fn needs_ffmpeg(&self) -> bool {
        self.rtmp_endpoint().is_none() && self.rtsp_endpoint().is_none()
    }

    /// The media server's protocol.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The URL without its secrets, for the API, logs and errors.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `text` (a line ffmpeg wrote, an error) with every secret of this URL
    /// replaced by `***`, and any other URL's password masked too. A secret of
    /// fewer than [`SHORT_SECRET`] characters (a user "al", a password "1234") is
    /// replaced where it stands alone, not inside a longer word or number: before,
    /// user "al" made "nalcast" read "n***cast".
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.url, &self.shown);
        for secret in &self.secrets {
            out = if secret.chars().count() < SHORT_SECRET {
                replace_standalone(&out, secret)
            } else {
                out.replace(secret.as_str(), "***")
            };
        }
        crate::mask_credentials(&out)
    }
}

/// The output address and option lines of an ffmpeg run ([`PublishTarget::ffmpeg_output`]).
#[derive(Clone, PartialEq, Eq)]
pub struct FfmpegOutput {
    /// The address on ffmpeg's command line.
    pub address: String,
    /// `key=value` lines for `-fpre`, when there are options to give that way.
    pub options: Option<String>,
}

impl fmt::Debug for FfmpegOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = self.options.as_deref().map_or(0, |o| o.lines().count());
        write!(f, "FfmpegOutput({}, {lines} option lines)", self.address)
    }
}

/// Longest srt:// query string taken: it goes to ffmpeg through a pipe, written
/// whole before ffmpeg starts, so it must fit a pipe's buffer with room to spare.
const MAX_SRT_QUERY: usize = 4096;
/// Longest `key=value` line ffmpeg reads from an options file (its buffer is 1000).
const MAX_OPTION_LINE: usize = 999;

/// An srt:// query string as ffmpeg's `-fpre` lines: each `key=value` on its own
/// line, as ffmpeg reads the URL (a `+` is a space; no percent-decoding; of a key
/// given twice the first counts). Option names are ffmpeg's SRT options
/// (`passphrase`, `streamid`, `latency`, `mode`, …): letters, digits and `_`.
fn srt_options(query: &str) -> Result<String, String> {
    if query.len() > MAX_SRT_QUERY {
        return Err(format!(
            "the srt:// options are longer than {MAX_SRT_QUERY} characters"
        ));
    }
    let mut lines = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err("an srt:// option has no value (key=value)".into());
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(
                "an srt:// option name is letters, digits and '_' (e.g. passphrase=…)".into(),
            );
        }
        if key.len() + value.len() + 1 > MAX_OPTION_LINE {
            return Err(format!(
                "srt:// option '{key}' is longer than {MAX_OPTION_LINE} characters"
            ));
        }
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        lines.push_str(key);
        lines.push('=');
        lines.push_str(&value.replace('+', " "));
        lines.push('\n');
    }
    Ok(lines)
}

/// Secrets shorter than this are scrubbed only where they stand alone.
const SHORT_SECRET: usize = 8;

/// `text` with each occurrence of `secret` that no letter or digit touches on
/// either side replaced by `***`.
fn replace_standalone(text: &str, secret: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(secret) {
        let (before, after) = (&rest[..at], &rest[at + secret.len()..]);
        let touches = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        out.push_str(before);
        if touches(before.chars().next_back()) || touches(after.chars().next()) {
            out.push_str(secret);
        } else {
            out.push_str("***");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A URL's `user:password`, percent-decoded (`None`: not UTF-8 once decoded).
fn decoded_login(userinfo: &str) -> Option<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some((decode(user)?, decode(password)?))
}

/// `host[:port]` or `[v6][:port]`: the host (without brackets) and the port.
fn host_and_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().ok()?),
                None if after.is_empty() => (host, default_port),
                None => return None,
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, default_port),
        },
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl fmt::Display for PublishTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PublishTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublishTarget({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_give_nalcasts_own_client_host_port_app_and_stream() {
        let ep = |url: &str| url.parse::<PublishTarget>().expect(url).rtmp_endpoint();
        let yt = ep("rtmps://a.rtmps.youtube.com/live2/abcd-efgh").expect("rtmps");
        assert_eq!(
            (
                yt.host.as_str(),
                yt.port,
                yt.tls,
                yt.app.as_str(),
                yt.stream.as_str()
            ),
            ("a.rtmps.youtube.com", 443, true, "live2", "abcd-efgh")
        );
        assert_eq!(yt.tc_url, "rtmps://a.rtmps.youtube.com/live2");
        let mtx = ep("rtmp://[::1]:1936/cams/garden?user=u&pass=p").expect("rtmp");
        assert_eq!((mtx.host.as_str(), mtx.port, mtx.tls), ("::1", 1936, false));
        assert_eq!(mtx.stream, "garden?user=u&pass=p");
        assert!(!mtx.tc_url.contains("garden"), "the key stays out of tcUrl");
        assert_eq!(ep("rtmp://nginx.lan/live/cam").expect("rtmp").port, 1935);
        // A user and password: a login for servers that ask (rtmp_login.rs), kept
        // out of tcUrl and Debug.
        let login = ep("rtmp://u%40x:p%3Ass@host/live/cam").expect("rtmp");
        assert_eq!(login.login, Some(("u@x".to_owned(), "p:ss".to_owned())));
        assert_eq!(login.tc_url, "rtmp://host/live");
        assert_eq!(login.host, "host");
        assert!(!format!("{login:?}").contains("p:ss"));
        assert_eq!(ep("rtsp://host/cam"), None);
        assert_eq!(ep("srt://host:8890?streamid=publish:cam"), None);
        let rtsp = "rtsp://al%40ce:p%3Ass@[::1]:8554/cams/garden?x=1"
            .parse::<PublishTarget>()
            .expect("rtsp")
            .rtsp_endpoint()
            .expect("an RTSP endpoint");
        assert_eq!((rtsp.host.as_str(), rtsp.port), ("::1", 8554));
        assert_eq!(rtsp.url, "rtsp://[::1]:8554/cams/garden?x=1");
        assert_eq!(rtsp.login, Some(("al@ce".to_owned(), "p:ss".to_owned())));
        assert!(!format!("{rtsp:?}").contains("p:ss"));
        let needs = |url: &str| url.parse::<PublishTarget>().expect(url).needs_ffmpeg();
        assert!(!needs("rtmp://host/live/cam"));
        assert!(!needs("rtmp://u:p@host/live/cam"));
        assert!(!needs("rtsp://u:p@host/cam"));
        assert!(needs("srt://host:1?a=b"));
    }

    fn shown(url: &str) -> String {
        url.parse::<PublishTarget>().expect(url).shown().to_owned()
    }

    #[test]
    fn secrets_are_left_out_of_the_shown_url() {
        for (url, expected) in [
            (
                "rtmp://127.0.0.1:1935/live/cam",
                "rtmp://127.0.0.1:1935/live/***",
            ),
            ("rtmp://mediamtx/cam", "rtmp://mediamtx/cam"),
            (
                "rtmps://a.rtmps.youtube.com/live2/abcd-efgh-ijkl",
                "rtmps://a.rtmps.youtube.com/live2/***",
            ),
            (
                "rtmp://user:pw@srs/live/cam?secret=k",
                "rtmp://***@srs/live/***?***",
            ),
            ("rtsp://mediamtx:8554/cam", "rtsp://mediamtx:8554/cam"),
            (
                "rtsp://admin:hunter2@mediamtx:8554/cam",
                "rtsp://***@mediamtx:8554/cam",
            ),
            (
                "srt://mediamtx:8890?streamid=publish:cam&passphrase=longsecret1",
                "srt://mediamtx:8890?***",
            ),
            ("RTMP://host/app", "rtmp://host/app"),
        ] {
            assert_eq!(shown(url), expected, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_refused_without_showing_their_secrets() {
        for (url, needle) in [
            ("http://user:pw@host/x", "unknown scheme 'http'"),
            ("host/live/k3y", "not a URL"),
            ("rtmp://", "no host name"),
            ("rtmp://user:pw@/live/k3y", "no host name"),
            ("rtmp://host", "no stream path"),
            ("srt://host?streamid=x", "needs a port"),
            ("rtmp://host/live/k3 y", "no spaces"),
            ("srt://host:1?mode=caller&k3y", "has no value"),
            ("srt://host:1?pass-phrase=k3y", "option name"),
            ("srt://host:1?=k3y", "option name"),
        ] {
            let err = url.parse::<PublishTarget>().unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
            assert!(!err.contains("pw") && !err.contains("k3y"), "{url}: {err}");
        }
    }

    #[test]
    fn srt_options_are_read_as_ffmpeg_reads_the_url() {
        let output = |url: &str| url.parse::<PublishTarget>().expect(url).ffmpeg_output();
        let o = output("srt://[::1]:8890?mode=caller&latency=200000&latency=1&streamid=a+b%20c&");
        assert_eq!(o.address, "srt://[::1]:8890");
        // First of a key counts, '+' is a space, no percent-decoding (as ffmpeg's
        // URL parsing), an empty pair is nothing.
        assert_eq!(
            o.options.as_deref(),
            Some("mode=caller\nlatency=200000\nstreamid=a b%20c\n")
        );
        assert!(!format!("{o:?}").contains("a b"), "{o:?}");
        assert_eq!(output("srt://h:1?").options, None);
        let rtmp = output("rtmp://u:p@h/live/k");
        assert_eq!(
            (rtmp.address.as_str(), rtmp.options),
            ("rtmp://u:p@h/live/k", None)
        );
        let refused = |url: String| url.parse::<PublishTarget>().unwrap_err().to_string();
        let long = refused(format!("srt://h:1?streamid={}", "x".repeat(991)));
        assert!(long.contains("longer than 999"), "{long}");
        let huge = refused(format!("srt://h:1?{}", "a=b&".repeat(1100)));
        assert!(huge.contains("longer than 4096"), "{huge}");
    }

    #[test]
    fn a_short_secret_is_scrubbed_where_it_stands_alone_not_inside_words() {
        let t: PublishTarget = "rtsp://al:1234@10.0.0.2/cam".parse().expect("valid");
        assert_eq!(
            t.scrub("nalcast: login al/1234 refused, retry in 12345 ms (al)"),
            "nalcast: login ***/*** refused, retry in 12345 ms (***)"
        );
        assert_eq!(t.scrub("user al:1234@host"), "user ***@host");
        // A long one goes wherever it is.
        let k: PublishTarget = "rtmp://h/live/longstreamkey".parse().expect("valid");
        assert_eq!(k.scrub("xlongstreamkeyx"), "x***x");
    }

    #[test]
    fn scrubbing_removes_every_secret_from_ffmpeg_lines() {
        let t: PublishTarget = "rtmp://bob:s3cret@10.0.0.2/live/streamkey?token=t0k3n"
            .parse()
            .expect("valid");
        for line in [
            "[rtmp @ 0x55] Cannot open connection tcp://10.0.0.2:1935",
            "rtmp://bob:s3cret@10.0.0.2/live/streamkey?token=t0k3n: Connection refused",
            "[rtmp @ 0x55] Server error: unknown stream streamkey?token=t0k3n",
            "[rtmp @ 0x55] auth as bob with s3cret failed, token t0k3n",
        ] {
            let scrubbed = t.scrub(line);
            for secret in ["s3cret", "streamkey", "t0k3n", "bob"] {
                assert!(!scrubbed.contains(secret), "{line} → {scrubbed}");
            }
        }
        assert_eq!(
            t.scrub("rtmp://bob:s3cret@10.0.0.2/live/streamkey?token=t0k3n: I/O error"),
            "rtmp://***@10.0.0.2/live/***?***: I/O error"
        );
        assert_eq!(
            format!("{t:?}"),
            "PublishTarget(rtmp://***@10.0.0.2/live/***?***)"
        );
    }
}
