//! Connection limits against the real binary: per-address and total caps on open
//! connections (viewers included), the open-file limit, idle keep-alive
//! connections, and clients that never read what they are sent.
use crate::common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive GET on an open connection: the status and the body.
async fn get_keep_alive(stream: &mut TcpStream, path: &str) -> std::io::Result<(u16, String)> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status = common::status_code(&head).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    Ok((status, body))
}

/// Everything the server sends until it closes, within `limit` (None: still open).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut raw)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&raw).into_owned()),
        Err(_) => None,
    }
}

/// A metric's value, asked from 127.0.0.9 (an address no test client uses).
async fn metric(addr: SocketAddr, line_start: &str) -> f64 {
    let stream = connect_from("127.0.0.9", addr).await.expect("connect");
    let (_, _, body) = http_request_on(stream, "localhost", "/metrics", &[])
        .await
        .expect("metrics");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `n` connections are open besides the one asking.
async fn wait_open(addr: SocketAddr, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = metric(addr, "nalcast_connections_open ").await;
        if open == (n + 1) as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections open, not {n} and the asking one"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The connection past --max-connections-per-ip from one address is refused at
/// once (with a 429 that names the flag) and counted, while another address still
/// gets the page; an upgraded viewer holds its connection slot; a freed slot is
/// taken again.
#[tokio::test]
async fn the_connection_past_the_per_address_cap_is_refused_and_others_get_the_page() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--max-connections-per-ip",
        "4",
        "--header-timeout",
        "60",
    ]);
    server.wait_healthy().await;
    wait_open(server.addr, 0).await;

    // A viewer and three idle connections from 127.0.0.1: four slots.
    let url = server.url("/ws");
    let viewer_tcp = connect_from("127.0.0.1", server.addr)
        .await
        .expect("connect");
    let (mut viewer, _) = tokio_tungstenite::client_async(&url, viewer_tcp)
        .await
        .expect("viewer");
    assert!(next_framed(&mut viewer, Duration::from_secs(10))
        .await
        .is_some());
    // A joining viewer holds a second slot of its address while it measures its
    // link (the TCP_INFO descriptor, limits.rs): wait until its join has given it
    // back, or on a busy machine the third idle connection below meets the cap.
    wait_open(server.addr, 1).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(
            connect_from("127.0.0.1", server.addr)
                .await
                .expect("connect"),
        );
    }
    wait_open(server.addr, 4).await;

    let mut fifth = connect_from("127.0.0.1", server.addr)
        .await
        .expect("the kernel accepts the connection");
    let answer = read_until_closed(&mut fifth, Duration::from_secs(10))
        .await
        .expect("refused at once, not left waiting");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("--max-connections-per-ip"), "{answer}");

    // Another address is not affected.
    let other = connect_from("127.0.0.2", server.addr)
        .await
        .expect("connect");
    let (status, _, page) = http_request_on(other, "localhost", "/", &[])
        .await
        .expect("page");
    assert_eq!(status, 200);
    assert!(page.to_ascii_lowercase().contains("<html"), "{page}");
    assert_eq!(
        metric(
            server.addr,
            "nalcast_connections_rejected_total{reason=\"max_connections_per_ip\"}"
        )
        .await,
        1.0
    );
    // The viewer kept streaming.
    assert!(next_framed(&mut viewer, Duration::from_secs(5))
        .await
        .is_some());

    // Leaving frees a slot for the same address.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect_from("127.0.0.1", server.addr)
            .await
            .expect("connect");
        if let Ok((200, _)) = get_keep_alive(&mut again, "/healthz").await {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot is not taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Under an open-file limit of 64, sixty keep-alive connections from one address,
/// each sending a request every two seconds, used to take every descriptor: new
/// clients then waited in the accept queue until they timed out. Now the address
/// gets its share and new clients get the page at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_from_one_address_do_not_starve_new_clients_under_64_fds() {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", env!("CARGO_BIN_EXE_nalcast")])
        .args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--width", "320", "--height", "240"])
        .args(["--max-connections-per-ip", "10"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let server = Server::from_command(cmd);
    server.wait_healthy().await;
    let addr = server.addr;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut held = Vec::new();
    for _ in 0..60 {
        let mut stop = stop.clone();
        held.push(tokio::spawn(async move {
            let Ok(mut tcp) = connect_from("127.0.0.1", addr).await else {
                return false;
            };
            let mut served = false;
            while !*stop.borrow() {
                match get_keep_alive(&mut tcp, "/healthz").await {
                    Ok((200, _)) => served = true,
                    _ => return served,
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), stop.changed()).await;
            }
            served
        }));
    }
    // Give the sixty time to connect and send a round or two.
    tokio::time::sleep(Duration::from_secs(3)).await;

    for round in 0..3 {
        let started = Instant::now();
        let page = tokio::time::timeout(Duration::from_secs(5), async {
            let tcp = connect_from("127.0.0.2", addr).await?;
            http_request_on(tcp, "localhost", "/", &[]).await
        })
        .await;
        let Ok(Ok((status, _, _))) = page else {
            panic!("new client {round} got no page within 5 s: {page:?}");
        };
        assert_eq!(status, 200, "new client {round}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let _ = stop_tx.send(true);
    let mut served = 0;
    for task in held {
        served += usize::from(task.await.expect("client task"));
    }
    assert!(
        (1..=10).contains(&served),
        "the address got its share of 10 connections, no more ({served})"
    );
}

/// nalcast raises its open-file soft limit to the hard limit at start.
#[tokio::test]
async fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=100:2000", env!("CARGO_BIN_EXE_nalcast")])
        .args(["--listen", "127.0.0.1:0", "--legacy-listen", "off"])
        .args(["--width", "320", "--height", "240"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let server = Server::from_command(cmd);
    // prlimit execs nalcast, so the child is nalcast itself.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["2000", "2000"], "{line}");
}

/// A keep-alive connection that sends no new request is closed after
/// --header-timeout (hyper starts the header deadline when it waits for the next
/// request), so idle connections do not hold slots.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(&["--width", "320", "--height", "240", "--header-timeout", "1"]);
    server.wait_healthy().await;
    let mut tcp = connect_from("127.0.0.1", server.addr)
        .await
        .expect("connect");
    let (status, _) = get_keep_alive(&mut tcp, "/healthz").await.expect("GET");
    assert_eq!(status, 200);
    let started = Instant::now();
    let rest = read_until_closed(&mut tcp, Duration::from_secs(15))
        .await
        .expect("the idle connection is closed");
    assert!(rest.is_empty(), "{rest}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed only after the timeout ({:?})",
        started.elapsed()
    );
}

/// Whether the kernel still has the server's end of the connection from local
/// port `client_port` to `server` (IPv4 sockets, /proc/net/tcp).
fn server_side_exists(server: SocketAddr, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).any(|l| {
        let mut fields = l.split_whitespace().skip(1);
        let (Some(local), Some(remote)) = (fields.next(), fields.next()) else {
            return false;
        };
        port_of(local) == Some(server.port()) && port_of(remote) == Some(client_port)
    })
}

/// A client that pipelines requests and reads the responses slowly.
struct SteadyReader {
    /// Its receive buffer.
    bytes: u32,
    /// Bytes it reads every 200 ms.
    per_read: usize,
    read: tokio::net::tcp::OwnedReadHalf,
    port: u16,
    writer: tokio::task::JoinHandle<tokio::net::tcp::OwnedWriteHalf>,
    /// Bytes read so far.
    got: usize,
}

/// Every steady reader reads what it reads per round; returns 200 ms after it began.
async fn read_all_steadily(steady: &mut [SteadyReader]) {
    let round = tokio::time::sleep(Duration::from_millis(200));
    let reads = steady.iter_mut().map(|reader| async move {
        let mut buf = vec![0u8; reader.per_read];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), reader.read.read(&mut buf)).await
        {
            reader.got += n;
        }
    });
    futures_util::future::join_all(reads).await;
    round.await;
}

/// A client with a tiny receive buffer that pipelines requests and never reads
/// the responses: hyper cannot write the next response and no header timer runs,
/// so it used to be held forever. Now it is dropped once its socket has taken
/// nothing for --viewer-timeout. Clients that read slowly but steadily are not:
/// every byte they take is progress. One reads a kilobyte every 200 ms through a
/// 1 KB receive buffer, so its window reopens a little at a time (the kernel's
/// TCP_USER_TIMEOUT, used before, cut it at the deadline on Linux 6.18); the other
/// reads 4 KB every 200 ms through 16 KB, so its window reopens seldom but wide.
#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_dropped_after_the_write_deadline() {
    let server = Server::start(&[
        "--width",
        "320",
        "--height",
        "240",
        "--viewer-timeout",
        "2",
        "--send-buffer",
        "4096",
    ]);
    server.wait_healthy().await;
    let pipelined = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(3000);
    // A connection with a receive buffer of `bytes` that pipelines the requests;
    // its writes block too once the server stops reading, and end with it.
    let connect = |bytes: u32| {
        let requests = pipelined.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
            let tcp = socket.connect(server.addr).await.expect("connect");
            let port = tcp.local_addr().expect("local").port();
            let (read, mut write) = tcp.into_split();
            let writer = tokio::spawn(async move {
                let _ = write.write_all(requests.as_bytes()).await;
                write
            });
            (read, port, writer)
        }
    };

    let (mut stuck_read, stuck_port, stuck_writer) = connect(1024).await;
    let mut steady = Vec::new();
    for (bytes, per_read) in [(1024, 1024), (16384, 4096)] {
        let (read, port, writer) = connect(bytes).await;
        steady.push(SteadyReader {
            bytes,
            per_read,
            read,
            port,
            writer,
            got: 0,
        });
    }

    let started = Instant::now();
    let dropped_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a client that reads nothing is still connected after 30 s"
        );
        read_all_steadily(&mut steady).await;
        if !server_side_exists(server.addr, stuck_port) {
            break started.elapsed();
        }
    };
    eprintln!("the stuck client was dropped {dropped_after:?} after it connected");
    assert!(
        dropped_after >= Duration::from_secs(1),
        "dropped before the deadline could pass ({dropped_after:?})"
    );
    // nalcast let go of it: only the steady readers' connections are open.
    wait_open(server.addr, steady.len()).await;
    // They have been reading past the deadline; their responses keep coming, for
    // more than twice the deadline.
    let before: Vec<usize> = steady.iter().map(|s| s.got).collect();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        read_all_steadily(&mut steady).await;
    }
    for (reader, before) in steady.iter().zip(before) {
        let (bytes, got) = (reader.bytes, reader.got);
        assert!(
            got > before,
            "the steady reader with a {bytes}-byte receive buffer still gets responses ({got} bytes)"
        );
        assert!(
            server_side_exists(server.addr, reader.port),
            "the steady reader with a {bytes}-byte receive buffer is still served"
        );
    }
    // The stuck client learns it when it reads: its connection is gone.
    let mut rest = Vec::new();
    let ended =
        tokio::time::timeout(Duration::from_secs(10), stuck_read.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the stuck connection ends once read");
    stuck_writer.abort();
    for reader in steady {
        reader.writer.abort();
    }
}
