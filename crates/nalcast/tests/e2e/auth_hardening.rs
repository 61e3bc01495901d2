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
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("local address"))
        .expect("bind");
    let stream = socket.connect(addr).await.expect("connect");
    http_request_on(stream, &addr.to_string(), path, headers)
        .await
        .expect("GET")
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
    let (wrong_user, right_user) = (basic("bob:correct horse"), basic("ann:wrong"));
    let (mut wrong_times, mut right_times) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (creds, times) in [
            (&wrong_user, &mut wrong_times),
            (&right_user, &mut right_times),
        ] {
            let started = Instant::now();
            let (status, _) = get_from(
                "127.0.0.1",
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

#[tokio::test]
async fn an_address_that_keeps_guessing_waits_then_gets_in() {
    let server = Server::start(&["--width", "160", "--height", "128", "--auth", "ann:pw"]);
    server.wait_healthy().await;
    let good = basic("ann:pw");
    let (guesser, neighbour) = ("127.0.0.2", "127.0.0.3");
    // A stale password sent again and again is one guess, not twenty.
    let stale = basic("ann:last year's");
    for _ in 0..20 {
        let (status, _) = get_from(
            guesser,
            server.addr,
            "/api/stream",
            &[("Authorization", &stale)],
        )
        .await;
        assert_eq!(status, 401);
    }
    // Four more different guesses make five...
    for i in 0..4 {
        let wrong = basic(&format!("ann:guess{i}"));
        let (status, _) = get_from(
            guesser,
            server.addr,
            "/api/stream",
            &[("Authorization", &wrong)],
        )
        .await;
        assert_eq!(status, 401);
    }
    // ...and the address waits, whatever it sends; the page and the WebSockets alike.
    for path in ["/api/stream", "/", "/ws"] {
        let (status, head) =
            get_from(guesser, server.addr, path, &[("Authorization", &good)]).await;
        assert_eq!(status, 429, "{path}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1\r\n"),
            "{head}"
        );
    }
    // Another address is not held.
    let (status, _) = get_from(
        neighbour,
        server.addr,
        "/api/stream",
        &[("Authorization", &good)],
    )
    .await;
    assert_eq!(status, 200);
    // The wait is a second (Retry-After); then the right password gets in again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, head) = get_from(
        guesser,
        server.addr,
        "/api/stream",
        &[("Authorization", &good)],
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let (_, _, metrics) = get_body_from(
        neighbour,
        server.addr,
        "/metrics",
        &[("Authorization", &good)],
    )
    .await;
    assert!(
        metrics.contains(r#"nalcast_auth_refused_total{reason="locked-out"} 3"#),
        "{metrics}"
    );
}
