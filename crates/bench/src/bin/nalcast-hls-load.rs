//! LL-HLS viewers for load tests: each client keeps one HTTP/1.1 connection, asks
//! for the playlist with a blocking reload for the part hinted last
//! (`_HLS_msn`/`_HLS_part`), fetches every new part as it is listed, and records how
//! late each part arrived: the time it was received minus the wall-clock time its
//! last picture ends (the segment's EXT-X-PROGRAM-DATE-TIME plus the durations of
//! the parts before it). Prints one JSON line.
//!
//!   nalcast-hls-load --url http://127.0.0.1:8080/hls/index.m3u8 --clients 300 --duration 20

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "LL-HLS load generator: blocking playlist reloads and parts, lateness per part")]
struct Args {
    /// The playlist, http://HOST:PORT/hls/index.m3u8 (through a cache, or nalcast itself).
    #[arg(long)]
    url: String,
    /// Clients at once.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Seconds to run (after every client has started).
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Seconds over which clients start.
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
}

/// A playlist's parts with their end times, and the hint.
#[derive(Debug, Default)]
struct Playlist {
    /// (uri, msn, index, end µs since the epoch)
    parts: Vec<(String, u64, usize, u64)>,
    hint: Option<(u64, usize)>,
    part_target: f64,
}

/// µs since the epoch of "YYYY-MM-DDTHH:MM:SS.mmmZ".
fn parse_date_time(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let frac = s.get(19..)?.trim_start_matches('.').trim_end_matches('Z');
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        digits.parse().ok()?
    };
    let t = time::Time::from_hms_micro(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
        micros,
    )
    .ok()?;
    let us = time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp_nanos()
        / 1000;
    u64::try_from(us).ok()
}

/// "…/p<msn>.<part>.m4s" -> (msn, part)
fn part_name(uri: &str) -> Option<(u64, usize)> {
    let name = uri
        .rsplit('/')
        .next()?
        .strip_prefix('p')?
        .strip_suffix(".m4s")?;
    let (m, p) = name.split_once('.')?;
    Some((m.parse().ok()?, p.parse().ok()?))
}

fn attr_uri(line: &str) -> Option<&str> {
    let at = line.find("URI=\"")? + 5;
    let rest = &line[at..];
    Some(&rest[..rest.find('"')?])
}

fn parse_playlist(text: &str) -> Result<Playlist> {
    if !text.starts_with("#EXTM3U") {
        bail!(
            "not a playlist: {:?}",
            text.chars().take(80).collect::<String>()
        );
    }
    let mut pl = Playlist::default();
    let mut clock: Option<u64> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
            pl.part_target = v.parse().context("PART-TARGET")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            clock = Some(parse_date_time(v).ok_or_else(|| anyhow!("bad date {v}"))?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let duration: f64 = v
                .strip_prefix("DURATION=")
                .and_then(|d| d.split(',').next())
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| anyhow!("bad part {line}"))?;
            let uri = attr_uri(v).ok_or_else(|| anyhow!("part without URI"))?;
            let (msn, index) = part_name(uri).ok_or_else(|| anyhow!("part name {uri}"))?;
            let end = clock.map(|c| c + (duration * 1e6) as u64);
            if let Some(end) = end {
                clock = Some(end);
                pl.parts.push((uri.to_owned(), msn, index, end));
            }
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            pl.hint = attr_uri(line).and_then(part_name);
        }
    }
    Ok(pl)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct Client {
    host: String,
    authority: String,
    sender: Option<SendRequest<Empty<Bytes>>>,
    requests: u64,
}

impl Client {
    async fn get(&mut self, path: &str) -> Result<(u16, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.host).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        sender.ready().await?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Empty::new())?;
        self.requests += 1;
        let res = sender.send_request(req).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[derive(Default)]
struct Outcome {
    lateness_us: Vec<i64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    part_target: f64,
}

async fn run_client(
    host: String,
    authority: String,
    base: String,
    path: String,
    until: Instant,
) -> Outcome {
    let mut client = Client {
        host,
        authority,
        sender: None,
        requests: 0,
    };
    let mut out = Outcome::default();
    let mut fetched: Option<(u64, usize)> = None;
    let mut hint: Option<(u64, usize)> = None;
    while Instant::now() < until {
        let query = hint.map_or(String::new(), |(m, p)| {
            format!("?_HLS_msn={m}&_HLS_part={p}")
        });
        let step = async {
            let (status, body) = client.get(&format!("{path}{query}")).await?;
            if status != 200 {
                bail!("playlist: HTTP {status}");
            }
            let pl = parse_playlist(std::str::from_utf8(&body)?)?;
            out.part_target = pl.part_target;
            // Start at the newest part; then every part after the last fetched.
            let new: Vec<_> = match fetched {
                None => pl.parts.last().cloned().into_iter().collect(),
                Some(last) => pl
                    .parts
                    .iter()
                    .filter(|p| (p.1, p.2) > last)
                    .cloned()
                    .collect(),
            };
            for (uri, msn, index, end) in new {
                let (status, _) = client.get(&format!("{base}{uri}")).await?;
                if status != 200 {
                    bail!("part {uri}: HTTP {status}");
                }
                out.lateness_us.push(now_us() as i64 - end as i64);
                fetched = Some((msn, index));
            }
            hint = pl.hint;
            Ok(())
        };
        if let Err(e) = step.await {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| format!("{e:#}"));
            client.sender = None;
            hint = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    out.requests = client.requests;
    out
}

fn pct(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[i.saturating_sub(1).min(sorted.len() - 1)] as f64 / 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url must start with http://"))?;
    let (authority, path) = url.split_once('/').map_or((url, "/"), |(a, p)| (a, p));
    let path = format!("/{}", path.trim_start_matches('/'));
    let base = format!("{}/", &path[..path.rfind('/').unwrap_or(0)]);
    let start = Instant::now();
    let ramp = Duration::from_secs_f64(args.ramp);
    let until = start + ramp + Duration::from_secs(args.duration);
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let delay = ramp.mul_f64(i as f64 / args.clients.max(1) as f64);
        let (host, authority, base, path) = (
            authority.to_owned(),
            authority.to_owned(),
            base.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run_client(host, authority, base, path, until).await
        }));
    }
    let mut all = Vec::new();
    let mut requests = 0;
    let mut errors = 0;
    let mut first_error = None;
    let mut part_target = 0.0;
    let mut clients_within = 0;
    let mut per_client_p95 = Vec::new();
    for t in tasks {
        let o = t.await?;
        requests += o.requests;
        errors += o.errors;
        if first_error.is_none() {
            first_error = o.first_error;
        }
        if o.part_target > 0.0 {
            part_target = o.part_target;
        }
        // Each client's own view, after its first two seconds (its join).
        let mut l: Vec<i64> = o.lateness_us.iter().skip(10).copied().collect();
        l.sort_unstable();
        if let Some(p95) = pct(&l, 95.0) {
            per_client_p95.push(p95);
            if p95 <= 2.0 * part_target * 1000.0 {
                clients_within += 1;
            }
        }
        all.extend(l);
    }
    all.sort_unstable();
    per_client_p95.sort_by(f64::total_cmp);
    let within = all
        .iter()
        .filter(|&&l| (l as f64) <= 2.0 * part_target * 1e6)
        .count();
    println!(
        "{}",
        json!({
            "clients": args.clients,
            "duration_s": args.duration,
            "parts_fetched": all.len(),
            "requests": requests,
            "errors": errors,
            "first_error": first_error,
            "part_target_s": part_target,
            "lateness_ms": {
                "p50": pct(&all, 50.0),
                "p95": pct(&all, 95.0),
                "p99": pct(&all, 99.0),
                "max": pct(&all, 100.0),
            },
            "parts_within_2_parts": if all.is_empty() { None } else { Some(within as f64 / all.len() as f64) },
            "clients_p95_within_2_parts": clients_within,
            "worst_client_p95_ms": per_client_p95.last(),
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_playlist() {
        let text = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-PROGRAM-DATE-TIME:2026-11-26T00:03:25.447Z\n\
            #EXT-X-PART:DURATION=0.20000,URI=\"r/p0.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.10000,URI=\"r/p0.1.m4s\"\n\
            #EXTINF:0.30000,\nr/s0.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"r/p1.0.m4s\"\n";
        let pl = parse_playlist(text).expect("playlist");
        let start = parse_date_time("2026-11-26T00:03:25.447Z").expect("date");
        assert_eq!(start % 1_000_000, 447_000);
        assert_eq!(pl.parts.len(), 2);
        assert_eq!(pl.parts[1].3, start + 300_000);
        assert_eq!((pl.parts[1].1, pl.parts[1].2), (0, 1));
        assert_eq!(pl.hint, Some((1, 0)));
        assert!((pl.part_target - 0.2).abs() < 1e-9);
        assert!(parse_playlist("<html>").is_err());
        assert_eq!(part_name("r/p12.3.m4s"), Some((12, 3)));
        assert_eq!(parse_date_time("1970-01-01T00:00:01Z"), Some(1_000_000));
    }
}
