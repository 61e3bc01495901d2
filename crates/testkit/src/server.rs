//! Tests against the real binary: start nalcast on loopback port 0, and talk to it
//! with plain HTTP/1.1 and WebSocket clients.
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The nalcast binary: `NALCAST_BIN`, else the one cargo built beside the test
/// executable (`<target>/<profile>/nalcast`, which `cargo test -p nalcast` builds).
pub fn nalcast_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NALCAST_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(|d| d.parent())
        .expect("test executables run from <target>/<profile>/deps");
    let bin = profile.join("nalcast");
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build -p nalcast) or set NALCAST_BIN",
        bin.display()
    );
    bin
}

/// A running nalcast process, stopped on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// The main listener.
    pub addr: SocketAddr,
    /// The legacy raw listener, when on.
    pub legacy: Option<SocketAddr>,
    /// Whether the main port speaks HTTPS.
    pub https: bool,
    /// The TLS certificate's SHA-256 fingerprint, as printed.
    pub fingerprint: Option<String>,
}

impl Server {
    /// Starts nalcast with `args` (plus loopback listeners on port 0) and waits
    /// until it prints its addresses.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(nalcast_bin());
        cmd.args(["--listen", "127.0.0.1:0", "--legacy-listen", "127.0.0.1:0"]);
        // WebRTC's UDP port too, unless the test chooses: many servers run at once.
        if !args.iter().any(|a| a.starts_with("--webrtc")) {
            cmd.args(["--webrtc", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::from_command(cmd)
    }

    /// Runs a prepared command (stdout must be piped) and waits for its addresses.
    pub fn from_command(mut cmd: Command) -> Server {
        let mut child = cmd.spawn().expect("nalcast starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut legacy, mut https, mut fingerprint) = (None, None, false, None);
        for line in lines.by_ref() {
            let line = line.expect("stdout line");
            if let Some(rest) = line.strip_prefix("legacy raw WebSocket on ws://") {
                legacy = Some(rest.trim_end_matches('/').parse().expect("legacy addr"));
            }
            if let Some((_, fp)) = line.split_once("SHA-256 fingerprint ") {
                fingerprint = Some(fp.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("listening on ") {
                https = rest.starts_with("https://");
                let rest = rest
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                addr = Some(rest.trim_end_matches('/').parse().expect("addr"));
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.expect("nalcast printed its address"),
            legacy,
            https,
            fingerprint,
        }
    }

    /// A `ws://` URL of `path` on the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until /healthz says ok.
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/healthz").await {
                return;
            }
            assert!(Instant::now() < deadline, "server never became healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Politely first, so nalcast stops its source processes; then for sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nalcast --hash-password` for `password`: the argon2 hash it prints.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(nalcast_bin())
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, path, &[]).await.map(|(s, _, b)| (s, b))
}

/// GET with extra headers: (status, raw headers, body).
pub async fn http_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    http_request_on(stream, &addr.to_string(), path, headers).await
}

/// GET over an open connection (plain or TLS): (status, raw headers, body).
pub async fn http_request_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    // A TLS peer may end without close_notify after a complete response: keep what came.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(e);
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = status_code(head).unwrap_or(0);
    Ok((status, head.to_owned(), body.to_owned()))
}

/// The status code of an HTTP response head (`HTTP/1.1 200 OK…`).
pub fn status_code(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

/// The headers of a browser's WebSocket handshake (add Host and Origin as needed).
pub const UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// A browser-like WebSocket upgrade request for `/ws` on `addr`, for clients that
/// speak raw TCP.
pub fn ws_handshake(addr: SocketAddr) -> Vec<u8> {
    let mut req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in UPGRADE {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends one request (`Host: addr` unless `extra` has a Host) and returns the
/// status code of the answer; the body is not read (a 101 would stream forever).
pub async fn status_of(
    addr: SocketAddr,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    let line = String::from_utf8_lossy(&head);
    status_code(&line).unwrap_or_else(|| panic!("no status line for {method} {target}: {line:?}"))
}

/// A WebSocket client connection, plain or TLS.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url`.
pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

/// The next binary message, within `timeout`.
pub async fn next_binary<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    timeout: Duration,
) -> Option<Bytes> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => return Some(b),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nalcast-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
