//! Password guessing against the real binary: a wrong user name costs as much time
//! as a right one, one request carries one guess, and an address that keeps
//! guessing is made to wait (429) and then let in again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{hash_password, http_request_on, Server};
use base64::Engine;

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// GET `path` from the local address `local` (any of 127/8): (status, head).
async fn get_from(
    local: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, head, _) = get_body_from(local, addr, path, headers).await;
    (status, head)
}

/// GET `path` from the local address `local`: (status, head, body).
async fn get_body_from(
    local: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let stream = crate::common::connect_from(local, addr)
        .await
        .expect("connect");
    http_request_on(stream, &addr.to_string(), path, headers)
        .await
        .expect("GET")
}

/// The status of a WebSocket handshake for `/ws` from `local` with `authorization`
/// (the connection is dropped after the status line).
async fn ws_status_from(local: &str, addr: SocketAddr, authorization: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = crate::common::connect_from(local, addr)
        .await
        .expect("connect");
    let mut req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n");
    for (k, v) in crate::common::UPGRADE {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("an answer")
        .expect("status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Before: a wrong user name was refused in 0.06 ms and a right one with a wrong
/// password in 22 ms (the argon2 run), so timing told which names exist.
#[tokio::test]
async fn a_wrong_user_name_takes_as_long_as_a_right_one() {
    let hash = hash_password("correct horse");
    let auth = format!("ann:{hash}");
    let server = Server::start(&["--width", "160", "--height", "128", "--auth", &auth]);
    server.wait_healthy().await;
    let (mut wrong_times, mut right_times) = (Vec::new(), Vec::new());
    // New credentials every time (a failed one is known afterwards without argon2),
    // each from an address of its own (five guesses lock an address out).
    for i in 0..5 {
        let (wrong_user, right_user) = (
            basic(&format!("bob{i}:correct horse")),
            basic(&format!("ann:wrong {i}")),
        );
        for (n, creds, times) in [
            (0, &wrong_user, &mut wrong_times),
            (1, &right_user, &mut right_times),
        ] {
            let local = format!("127.0.2.{}", 2 * i + n + 1);
            let started = Instant::now();
            let (status, _) = get_from(
                &local,
                server.addr,
                "/api/stream",
                &[("Authorization", creds)],
            )
            .await;
            times.push(started.elapsed());
            assert_eq!(status, 401);
        }
    }
    let (wrong, right) = (median(wrong_times), median(right_times));
    println!("median answer: wrong user {wrong:?}, right user with a wrong password {right:?}");
    // Both run argon2 now; a coarse bound that load cannot break (it was 1/366).
    assert!(
        wrong * 4 >= right,
        "a wrong user name is answered in {wrong:?}, a right one in {right:?}"
    );
}

#[tokio::test]
async fn only_the_first_authorization_header_counts() {
    let server = Server::start(&["--width", "160", "--height", "128", "--auth", "ann:pw"]);
    server.wait_healthy().await;
    let (good, bad) = (basic("ann:pw"), basic("ann:nope"));
    let cases = [
        (vec![good.as_str(), bad.as_str()], 200),
        (vec![bad.as_str(), good.as_str()], 401),
        (vec!["Bearer nothing-of-the-sort", good.as_str()], 401),
    ];
    for (values, expected) in cases {
        let headers: Vec<(&str, &str)> = values.iter().map(|v| ("Authorization", *v)).collect();
        let (status, head) = get_from("127.0.0.1", server.addr, "/api/stream", &headers).await;
        assert_eq!(status, expected, "{values:?}: {head}");
    }
}

/// Before: the same wrong password again was no new guess (a flood of one guess
/// never locked anything out), and a locked-out address was refused even with the
/// right password, so anyone sharing it (a LAN neighbour behind the same NAT or
/// IPv6 prefix) could lock the owner out.
#[tokio::test]
async fn a_guessing_address_waits_but_proven_requests_pass() {
    let server = Server::start(&["--width", "160", "--height", "128", "--auth", "ann:pw"]);
    server.wait_healthy().await;
    let good = basic("ann:pw");
    let (guesser, neighbour) = ("127.0.0.2", "127.0.0.3");
    // The same wrong password, five times: five guesses...
    let stale = basic("ann:last year's");
    for _ in 0..5 {
        let (status, _) = get_from(
            guesser,
            server.addr,
            "/api/stream",
            &[("Authorization", &stale)],
        )
        .await;
        assert_eq!(status, 401);
    }
    // ...and the address's guesses wait, the same one or new ones.
    for wrong in [stale.clone(), basic("ann:new guess")] {
        let (status, head) = get_from(
            guesser,
            server.addr,
            "/api/stream",
            &[("Authorization", &wrong)],
        )
        .await;
        assert_eq!(status, 429, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1\r\n"),
            "{head}"
        );
    }
    // The right password from that very address passes: the page, the API and
    // the WebSockets alike.
    for path in ["/api/stream", "/"] {
        let (status, head) =
            get_from(guesser, server.addr, path, &[("Authorization", &good)]).await;
        assert_eq!(status, 200, "{path}: {head}");
    }
    assert_eq!(ws_status_from(guesser, server.addr, &good).await, 101);
    // A browser's first request (no credentials) gets the login prompt, not 429.
    let (status, head) = get_from(guesser, server.addr, "/", &[]).await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    // Another address is not held.
    let (status, _) = get_from(
        neighbour,
        server.addr,
        "/api/stream",
        &[("Authorization", &basic("ann:typo"))],
    )
    .await;
    assert_eq!(status, 401);
    let (_, _, metrics) = get_body_from(
        neighbour,
        server.addr,
        "/metrics",
        &[("Authorization", &good)],
    )
    .await;
    assert!(
        metrics.contains(r#"nalcast_auth_refused_total{reason="locked_out"} 2"#),
        "{metrics}"
    );
}
