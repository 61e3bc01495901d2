//! What HLS readers can make nalcast hold: slow readers of a segment share its one
//! copy, one address has a bounded number of HLS requests open, and the bytes not
//! yet sent have a ceiling; a viewer keeps its frames throughout.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// A request for `path` from the loopback address `local`, with a receive buffer
/// so small that the answer stays at nalcast; the status once the head is in.
async fn slow_reader(local: &str, addr: SocketAddr, path: &str) -> (u16, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
    socket
        .bind(format!("{local}:0").parse().expect("local address"))
        .expect("bind");
    let mut tcp = socket.connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(15), tcp.read_exact(&mut head))
        .await
        .expect("an answer within 15 s")
        .expect("status line");
    let status = String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status");
    (status, tcp)
}

/// The complete segments once `count` are listed: (path, size) each.
async fn segments(addr: SocketAddr, count: u64) -> Vec<(String, usize)> {
    // A blocking reload for each segment in turn (more than two ahead is refused).
    let mut playlist = String::new();
    for msn in 0..=count {
        let (status, body) = http_get(addr, &format!("/hls/index.m3u8?_HLS_msn={msn}"))
            .await
            .expect("playlist");
        assert_eq!(status, 200, "{body}");
        playlist = body;
    }
    let mut out = Vec::new();
    for name in playlist
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with(".m4s"))
    {
        let path = format!("/hls/{name}");
        let (status, head, _) = http_request(addr, &path, &[]).await.expect("segment");
        assert_eq!(status, 200);
        let size = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("a Content-Length");
        out.push((path, size));
    }
    out
}

/// The newest complete segment's path and its size.
async fn newest_segment(addr: SocketAddr) -> (String, usize) {
    segments(addr, 2).await.pop().expect("a segment")
}

/// A viewer of `/ws` gets frames now.
async fn a_viewer_gets_frames(server: &Server) {
    let mut ws = connect(&server.url("/ws")).await;
    for _ in 0..30 {
        assert!(
            next_binary(&mut ws, Duration::from_secs(5)).await.is_some(),
            "a viewer stopped getting frames"
        );
    }
}

/// Before: every segment request made its own copy of the segment, kept while the
/// client read it slowly (4000 readers: 17 MB -> 2.31 GB).
#[tokio::test]
async fn slow_segment_readers_share_one_copy() {
    let server = Server::start(&[
        "--width",
        "1280",
        "--height",
        "720",
        "--bitrate",
        "4000000",
        "--keyframe-interval",
        "60",
    ]);
    server.wait_healthy().await;
    let (path, size) = newest_segment(server.addr).await;
    let readers = 300;
    let before = rss_kib(server.pid());
    let mut held = Vec::new();
    for i in 0..readers {
        let local = format!("127.0.{}.{}", 10 + i / 200, 1 + i % 200);
        let (status, tcp) = slow_reader(&local, server.addr, &path).await;
        assert_eq!(status, 200, "reader {i}");
        held.push(tcp);
    }
    a_viewer_gets_frames(&server).await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    let copies = (readers * size / 1024) as u64;
    println!("{readers} slow readers of a {size}-byte segment: resident memory grew by {grown} KiB (a copy each would be {copies} KiB)");
    assert!(
        grown < copies / 4,
        "{readers} readers of {size} bytes grew nalcast by {grown} KiB"
    );
    drop(held);
}

/// Before: one address could hold any number of HLS requests (a client behind a
/// cache took every connection slot of the cache's address), and what answers held
/// for slow readers had no ceiling.
#[tokio::test]
async fn one_address_has_few_hls_requests_open_and_held_memory_has_a_ceiling() {
    let ceiling = 1_200_000;
    let server = Server::start(&[
        "--width",
        "1280",
        "--height",
        "720",
        "--bitrate",
        "4000000",
        "--keyframe-interval",
        "30",
        "--max-hls-requests-per-ip",
        "4",
        "--max-hls-memory",
        &ceiling.to_string(),
    ]);
    server.wait_healthy().await;
    let segments = segments(server.addr, 4).await;
    let (path, size) = segments.last().expect("a segment").clone();
    assert!(
        (100_000..ceiling).contains(&size),
        "a segment of {size} bytes does not suit this test"
    );
    // From one address: four at once (one shared copy), the fifth refused while
    // they are open.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (status, tcp) = slow_reader("127.0.20.1", server.addr, &path).await;
        assert_eq!(status, 200);
        held.push(tcp);
    }
    let (status, _) = slow_reader("127.0.20.1", server.addr, &path).await;
    assert_eq!(status, 429, "a fifth request from the same address");
    drop(held);
    // Readers of different segments, each from its own address: refused with 503
    // once the segments they hold would pass the ceiling.
    let fit = segments
        .iter()
        .scan(0, |sum, (_, size)| {
            *sum += size;
            Some(*sum)
        })
        .take_while(|&sum| sum <= ceiling)
        .count();
    assert!(fit < segments.len(), "all {} segments fit", segments.len());
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for (i, (path, _)) in segments.iter().enumerate() {
        let local = format!("127.0.21.{}", 1 + i);
        // The readers of the first part may still be going away.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (status, tcp) = loop {
            let (status, tcp) = slow_reader(&local, server.addr, path).await;
            if status == 200 || i >= fit || std::time::Instant::now() > deadline {
                break (status, tcp);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        statuses.push(status);
        held.push(tcp);
    }
    let expected: Vec<u16> = (0..segments.len())
        .map(|i| if i < fit { 200 } else { 503 })
        .collect();
    assert_eq!(statuses, expected, "segments of {segments:?}");
    a_viewer_gets_frames(&server).await;
    drop(held);
    // Given back when they go: the same request is answered again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (last, _) = segments.last().expect("a segment");
    loop {
        let (status, _) = slow_reader("127.0.22.1", server.addr, last).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never answered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
