//! Reads a histogram from nalcast's Prometheus endpoint, so the server-added delay
//! of a run can be reported from the server's own measurement.
use std::collections::BTreeMap;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cumulative bucket counts by upper bound (seconds).
pub type Buckets = BTreeMap<u64, f64>;

/// Fetches `url` (plain http) and returns the text of the page.
pub async fn fetch_metrics(
    url: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> anyhow::Result<String> {
    let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => anyhow::bail!("--metrics needs an http:// or https:// URL"),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connect {host}"))?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if !secure {
        return exchange(tcp, &request).await;
    }
    let tls = tls.context("an https:// --metrics URL needs --ca")?;
    exchange(tls.connect(tls_name(host)?, tcp).await?, &request).await
}

/// The name a TLS certificate is checked for: the host of `authority` (HOST:PORT,
/// [IPV6]:PORT), a DNS name or an IP address.
pub fn tls_name(authority: &str) -> anyhow::Result<rustls::pki_types::ServerName<'static>> {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned()).context("not a host name for TLS")
}

/// Sends `request` and reads the whole response.
async fn exchange<S>(mut stream: S, request: &str) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await?;
    let mut body = Vec::new();
    // A TLS peer may close without close_notify after Connection: close: keep what came.
    if let Err(e) = stream.read_to_end(&mut body).await {
        if body.is_empty() {
            return Err(e.into());
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Parses `name_bucket{...,le="x"} n` lines (upper bounds kept in nanoseconds),
/// summing over all label sets.
pub fn parse_histogram(text: &str, name: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    let mut out = Buckets::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, count)) = rest.split_once("} ") else {
            continue;
        };
        let Some(le) = labels
            .split(',')
            .find_map(|x| x.strip_prefix("le=\"")?.strip_suffix('"'))
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        if let (false, Ok(count)) = (le.is_nan(), count.trim().parse::<f64>()) {
            let key = if le.is_infinite() {
                u64::MAX
            } else {
                (le * 1e9) as u64
            };
            *out.entry(key).or_insert(0.0) += count;
        }
    }
    out
}

/// Upper bound (ms) of the bucket holding percentile `p` of what was recorded
/// between `before` and `after`; `None` when nothing was recorded.
pub fn percentile_ms(before: &Buckets, after: &Buckets, p: f64) -> Option<f64> {
    let total = after.get(&u64::MAX)? - before.get(&u64::MAX).copied().unwrap_or(0.0);
    if total <= 0.0 {
        return None;
    }
    for (le, count) in after {
        let delta = count - before.get(le).copied().unwrap_or(0.0);
        if delta >= total * p / 100.0 {
            return Some(if *le == u64::MAX {
                f64::INFINITY
            } else {
                *le as f64 / 1e6
            });
        }
    }
    None
}

/// Share (%) of what was recorded between `before` and `after` that fell within
/// `bound_ms` (a bucket bound); `None` when nothing was recorded.
pub fn share_within_ms(before: &Buckets, after: &Buckets, bound_ms: f64) -> Option<f64> {
    let count = |b: &Buckets, key: u64| b.get(&key).copied().unwrap_or(0.0);
    let total = count(after, u64::MAX) - count(before, u64::MAX);
    let key = (bound_ms * 1e6) as u64;
    (total > 0.0 && after.contains_key(&key))
        .then(|| (count(after, key) - count(before, key)) / total * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_bucket_deltas() {
        let before = parse_histogram(
            "x_bucket{le=\"0.001\"} 10\nx_bucket{le=\"0.01\"} 10\nx_bucket{le=\"+Inf\"} 10\n",
            "x",
        );
        let after = parse_histogram(
            "x_bucket{le=\"0.001\"} 108\nx_bucket{le=\"0.01\"} 110\nx_bucket{le=\"+Inf\"} 110\n",
            "x",
        );
        assert_eq!(percentile_ms(&before, &after, 50.0), Some(1.0));
        assert_eq!(percentile_ms(&before, &after, 99.0), Some(10.0));
        assert_eq!(percentile_ms(&after, &after, 99.0), None);
        assert_eq!(share_within_ms(&before, &after, 1.0), Some(98.0));
        assert_eq!(
            share_within_ms(&before, &after, 2.0),
            None,
            "not a bucket bound"
        );
    }

    #[test]
    fn label_sets_are_summed() {
        let text = "y_bucket{frame=\"key\",le=\"0.001\"} 0\ny_bucket{frame=\"key\",le=\"0.01\"} 2\n\
                    y_bucket{frame=\"key\",le=\"+Inf\"} 2\ny_bucket{frame=\"delta\",le=\"0.001\"} 98\n\
                    y_bucket{frame=\"delta\",le=\"0.01\"} 98\ny_bucket{frame=\"delta\",le=\"+Inf\"} 98\n";
        let none = Buckets::new();
        let all = parse_histogram(text, "y");
        assert_eq!(percentile_ms(&none, &all, 99.0), Some(10.0));
    }
}
