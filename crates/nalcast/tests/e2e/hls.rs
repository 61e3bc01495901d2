//! `/hls/` on the real binary: the playlist a player reads (parts, blocking reload,
//! preload hint, cache headers), files that are what they say (a segment is its
//! parts; decode times run on across parts and segments), and ffmpeg playing it.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET with a binary body: (status, headers, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = status_code(&head).expect("a status");
    (status, head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The playlist once it lists `segments` complete segments (a blocking reload for
/// the segment after them).
async fn playlist_with(addr: SocketAddr, segments: u64) -> String {
    let mut text = String::new();
    // One segment at a time: a reload more than two segments ahead is refused.
    for msn in 0..=segments {
        let (status, _, body) = get(addr, &format!("/hls/index.m3u8?_HLS_msn={msn}")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        text = String::from_utf8(body).expect("text");
    }
    text
}

/// The URI of a tag's `URI="…"` attribute.
fn uri(line: &str) -> &str {
    let at = line.find("URI=\"").expect("URI") + 5;
    let rest = &line[at..];
    &rest[..rest.find('"').expect("closing quote")]
}

/// Top-level boxes: (type, body).
fn boxes(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().expect("4")) as usize;
        assert!(size >= 8 && at + size <= data.len(), "a whole box at {at}");
        out.push((
            String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned(),
            &data[at + 8..at + size],
        ));
        at += size;
    }
    assert_eq!(at, data.len(), "nothing after the last box");
    out
}

/// Each moof's decode time (tfdt) and its one sample's duration (trun).
fn fragment_times(data: &[u8]) -> Vec<(u64, u64)> {
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().expect("4"));
    let mut out = Vec::new();
    for (kind, body) in boxes(data) {
        if kind != "moof" {
            assert_eq!(kind, "mdat", "only moof and mdat in parts");
            continue;
        }
        let traf = boxes(body)
            .into_iter()
            .find(|(k, _)| k == "traf")
            .expect("traf")
            .1;
        let inner = boxes(traf);
        let tfdt = inner.iter().find(|(k, _)| k == "tfdt").expect("tfdt").1;
        let decode = if tfdt[0] == 1 {
            u64::from_be_bytes(tfdt[4..12].try_into().expect("8"))
        } else {
            u64::from(be32(&tfdt[4..]))
        };
        let trun = inner.iter().find(|(k, _)| k == "trun").expect("trun").1;
        let flags = be32(trun) & 0xff_ffff;
        let mut at = 8;
        if flags & 0x1 != 0 {
            at += 4;
        }
        if flags & 0x4 != 0 {
            at += 4;
        }
        out.push((decode, u64::from(be32(&trun[at..]))));
    }
    out
}

fn start(extra: &[&str]) -> Server {
    let mut args = vec![
        "--source",
        "test",
        "--width",
        "640",
        "--height",
        "360",
        "--keyframe-interval",
        "30",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[tokio::test]
async fn the_playlist_is_low_latency_hls_with_the_right_cache_headers() {
    let server = start(&[]);
    server.wait_healthy().await;
    let pl = playlist_with(server.addr, 2).await;
    for tag in [
        "#EXTM3U",
        "#EXT-X-TARGETDURATION:4",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600",
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-MAP:URI=",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=",
    ] {
        assert!(pl.contains(tag), "{tag} missing:\n{pl}");
    }
    let parts: Vec<&str> = pl
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .collect();
    assert!(parts.len() >= 10, "parts listed:\n{pl}");
    // (Segment 0 is left out: the source's first pictures come irregularly, and one
    // picture that lasts longer than a part cannot be split.)
    for p in parts.iter().filter(|p| !uri(p).contains("/p0.")) {
        let d: f64 = p["#EXT-X-PART:DURATION=".len()..]
            .split(',')
            .next()
            .and_then(|d| d.parse().ok())
            .expect("a duration");
        assert!(d > 0.0 && d <= 0.2, "part longer than PART-TARGET: {p}");
    }
    // Segments of one GOP (keyframe every 30 pictures: 1 s), each starting independent.
    let extinf: Vec<f64> = pl
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse().expect("duration"))
        .collect();
    assert!(extinf.len() >= 2);
    for d in &extinf {
        assert!(
            (0.9..=1.1).contains(d),
            "segment of {d} s for a 1 s GOP:\n{pl}"
        );
    }

    let (status, head, _) = get(server.addr, "/hls/index.m3u8").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header(&head, "cache-control"), Some("public, max-age=1"));
    let (_, head, _) = get(server.addr, "/hls/index.m3u8?_HLS_msn=1").await;
    assert_eq!(header(&head, "cache-control"), Some("public, max-age=6"));
    let part = uri(parts[0]);
    let (status, head, body) = get(server.addr, &format!("/hls/{part}")).await;
    assert_eq!(status, 200, "{part}");
    assert_eq!(
        header(&head, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(boxes(&body)[0].0, "moof");

    // Refusals: too far ahead, another run's files, nonsense names.
    let last_msn: u64 = pl
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s"))
        .filter_map(|l| {
            l.rsplit_once("/s")
                .map(|(_, n)| n.parse::<u64>().expect("msn"))
        })
        .max()
        .expect("a segment");
    let (status, _, _) = get(
        server.addr,
        &format!("/hls/index.m3u8?_HLS_msn={}", last_msn + 10),
    )
    .await;
    assert_eq!(status, 400, "a reload for the far future");
    let (status, _, _) = get(server.addr, "/hls/index.m3u8?_HLS_part=1").await;
    assert_eq!(status, 400, "_HLS_part without _HLS_msn");
    let (status, _, _) = get(server.addr, "/hls/someotherrun/s0.m4s").await;
    assert_eq!(status, 404);
    let run = part.split('/').next().expect("run");
    let (status, _, _) = get(server.addr, &format!("/hls/{run}/passwd")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn blocking_reload_and_the_preload_hint_answer_as_soon_as_the_part_exists() {
    let server = start(&[]);
    server.wait_healthy().await;
    let pl = playlist_with(server.addr, 1).await;
    let hint = uri(pl
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .expect("hint"))
    .to_owned();
    // "run/pM.P.m4s" -> M, P
    let (msn, part) = hint
        .rsplit_once("/p")
        .and_then(|(_, n)| n.strip_suffix(".m4s"))
        .and_then(|n| n.split_once('.'))
        .map(|(m, p)| {
            (
                m.parse::<u64>().expect("msn"),
                p.parse::<usize>().expect("part"),
            )
        })
        .expect("a part name");
    let addr = server.addr;
    let asked = Instant::now();
    let reload = tokio::spawn(async move {
        let r = get(
            addr,
            &format!("/hls/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
        )
        .await;
        (r, asked.elapsed())
    });
    let (status, _, body) = get(addr, &format!("/hls/{hint}")).await;
    let part_after = asked.elapsed();
    assert_eq!(status, 200, "the hinted part, once complete");
    assert_eq!(boxes(&body)[0].0, "moof");
    let ((status, _, body), reload_after) = reload.await.expect("reload");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("text");
    assert!(
        text.contains(&format!("URI=\"{hint}\"")),
        "the reload lists the part it waited for:\n{text}"
    );
    eprintln!("hinted part after {part_after:?}, blocking reload after {reload_after:?}");
    // Both wait for the same part: the reload answers within a part duration (0.2 s)
    // of the part being there, and neither waits for a timeout (12 s).
    let apart = reload_after.abs_diff(part_after);
    assert!(
        apart < Duration::from_millis(200),
        "reload {reload_after:?}, part {part_after:?}"
    );
    assert!(reload_after < Duration::from_secs(3), "{reload_after:?}");
}

#[tokio::test]
async fn a_segment_is_its_parts_and_decode_times_run_on() {
    let server = start(&[]);
    server.wait_healthy().await;
    let pl = playlist_with(server.addr, 3).await;
    let init = uri(pl
        .lines()
        .find(|l| l.starts_with("#EXT-X-MAP"))
        .expect("map"))
    .to_owned();
    let (status, _, init) = get(server.addr, &format!("/hls/{init}")).await;
    assert_eq!(status, 200);
    assert_eq!(boxes(&init)[0].0, "ftyp");
    // Every segment listed with parts: its bytes are its parts' bytes, in order.
    let mut all = init.clone();
    let mut parts_of_segment: Vec<String> = Vec::new();
    let mut checked = 0;
    let mut times = Vec::new();
    for line in pl.lines() {
        if line.starts_with("#EXT-X-PART:") {
            parts_of_segment.push(uri(line).to_owned());
        } else if line.ends_with(".m4s") && !line.starts_with('#') {
            let (status, _, segment) = get(server.addr, &format!("/hls/{line}")).await;
            assert_eq!(status, 200, "{line}");
            if !parts_of_segment.is_empty() {
                let mut joined = Vec::new();
                for p in &parts_of_segment {
                    let (status, _, bytes) = get(server.addr, &format!("/hls/{p}")).await;
                    assert_eq!(status, 200, "{p}");
                    joined.extend_from_slice(&bytes);
                }
                assert!(joined == segment, "{line} is not its parts");
                checked += 1;
            }
            parts_of_segment.clear();
            times.extend(fragment_times(&segment));
            all.extend_from_slice(&segment);
        }
    }
    assert!(checked >= 2, "segments with parts checked: {checked}\n{pl}");
    for (i, w) in times.windows(2).enumerate() {
        assert_eq!(
            w[1].0,
            w[0].0 + w[0].1,
            "decode time jumps at picture {}",
            i + 1
        );
    }
    // ffprobe reads the segments as one file: every picture, the first a keyframe.
    let dir = temp_dir("hls-segments");
    let file = dir.join("segments.mp4");
    std::fs::write(&file, &all).expect("write");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
        ])
        .args(["stream=nb_read_packets,width,height", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .expect("ffprobe runs (make test installs ffmpeg)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(fields[..2], ["640".to_owned(), "360".to_owned()]);
    assert_eq!(fields[2].parse::<usize>().expect("packets"), times.len());
}

#[tokio::test]
async fn ffmpeg_plays_the_live_playlist() {
    let server = start(&[]);
    server.wait_healthy().await;
    playlist_with(server.addr, 1).await;
    let url = format!("http://{}/hls/index.m3u8", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ffmpeg")
            .args(["-v", "error", "-i", &url, "-t", "3", "-f", "framemd5", "-"])
            .output()
            .expect("ffmpeg runs")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg: {stderr}"
    );
    let frames: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("text")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(frames.len() >= 85, "{} pictures in 3 s", frames.len());
    // The test pattern moves: pictures differ.
    let hashes: std::collections::HashSet<&str> =
        frames.iter().filter_map(|l| l.rsplit(',').next()).collect();
    assert!(
        hashes.len() > frames.len() / 2,
        "{} different pictures of {}",
        hashes.len(),
        frames.len()
    );
}

#[tokio::test]
async fn hls_off_means_no_hls() {
    let server = start(&["--hls", "off"]);
    server.wait_healthy().await;
    let (status, _, body) = get(server.addr, "/hls/index.m3u8").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("--hls off"));
}

/// GET with extra headers: (status, headers, body as text).
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        status_code(head).expect("a status"),
        head.to_owned(),
        body.to_owned(),
    )
}

/// Before: `Cache-Control: public` with --auth/--token too, so a cache in front
/// (docs/scale-out.md's nginx and Varnish) served the stream to requests without
/// credentials.
#[tokio::test]
async fn with_credentials_no_hls_answer_may_be_kept_by_a_shared_cache() {
    let token = "0123456789abcdef-hls";
    let server = start(&["--token", token]);
    server.wait_healthy().await;
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, head, body) = get_with(server.addr, "/hls/index.m3u8?_HLS_msn=1", &auth).await;
    assert_eq!(status, 200, "{head}");
    let files: Vec<String> = body
        .lines()
        .filter_map(|l| {
            if l.contains("URI=\"") {
                Some(uri(l).to_owned())
            } else if !l.starts_with('#') && !l.is_empty() {
                Some(l.to_owned())
            } else {
                None
            }
        })
        .collect();
    let init = files.iter().find(|f| f.contains("/init")).expect("a map");
    let part = files.iter().find(|f| f.contains("/p")).expect("a part");
    let segment = files
        .iter()
        .find(|f| f.contains("/s") && f.ends_with(".m4s"))
        .expect("a segment");
    for path in [
        "/hls/index.m3u8".to_owned(),
        "/hls/index.m3u8?_HLS_msn=1".to_owned(),
        format!("/hls/{init}"),
        format!("/hls/{part}"),
        format!("/hls/{segment}"),
    ] {
        let (status, head, _) = get_with(server.addr, &path, &auth).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert_eq!(
            header(&head, "cache-control"),
            Some("private, no-store"),
            "{path}"
        );
        let (status, _, _) = get_with(server.addr, &path, &[]).await;
        assert_eq!(status, 401, "{path} without the token");
    }
}

/// Before: other spellings of a name (`s+0.m4s`, `s00000.m4s`), made-up query
/// parameters and far-off `_HLS_part` values were each served or held (up to 12 s):
/// every variant a cache miss that took a connection at nalcast.
#[tokio::test]
async fn only_the_playlists_own_names_are_answered_and_the_rest_at_once() {
    let server = start(&[]);
    server.wait_healthy().await;
    let pl = playlist_with(server.addr, 2).await;
    let segment = pl
        .lines()
        .rfind(|l| !l.starts_with('#') && l.ends_with(".m4s"))
        .expect("a segment")
        .to_owned();
    let (run, name) = segment.split_once('/').expect("run/name");
    let msn: u64 = name
        .trim_start_matches('s')
        .trim_end_matches(".m4s")
        .parse()
        .expect("msn");
    let (status, _, _) = get(server.addr, &format!("/hls/{segment}")).await;
    assert_eq!(status, 200, "the name itself");
    // (path, status)
    let cases = [
        (format!("/hls/{run}/s+{msn}.m4s"), 404),
        (format!("/hls/{run}/s0000{msn}.m4s"), 404),
        (format!("/hls/{run}/p{msn}.00.m4s"), 404),
        (format!("/hls/{run}/p{}.999999.m4s", msn + 1), 404),
        (format!("/hls/{segment}?cachebuster=1"), 400),
        (format!("/hls/index.m3u8?_HLS_msn={msn}&cachebuster=1"), 400),
        (format!("/hls/index.m3u8?_HLS_msn=0{msn}"), 400),
        (
            format!("/hls/index.m3u8?_HLS_msn={}&_HLS_part=999999", msn + 1),
            400,
        ),
        ("/hls/index.m3u8?cachebuster=2".to_owned(), 400),
    ];
    for (path, expected) in cases {
        let asked = Instant::now();
        let (status, _, _) = get(server.addr, &path).await;
        assert_eq!(status, expected, "{path}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{path} was held {:?}",
            asked.elapsed()
        );
    }
}
