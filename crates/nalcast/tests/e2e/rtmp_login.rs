//! `--publish rtmp://user:password@host/app/key` to servers that ask for a login
//! (Adobe's `authmod=adobe`, Wowza and Adobe Media Server; Limelight's
//! `authmod=llnw`): nalcast's own client logs in, so no process holds the password
//! on its command line (before, such a URL went to an ffmpeg, URL and all).
//!
//! No server that asks for these logins installs here (nginx-rtmp, MediaMTX, SRS,
//! node-media-server ask for none), so the server is this file's: rml_rtmp's
//! server session, refusing connects as those servers do and checking the
//! response. It is first held to ffmpeg's client, a real one that speaks both
//! schemes: ffmpeg with the right password publishes, with a wrong one it is
//! refused. Then nalcast goes through the same server.
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use md5::{Digest, Md5};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common;
use crate::publish::{
    api_publish_until, assert_recording_whole, command_lines_holding, nalcast_publishing_from_env,
};

const USER: &str = "camera";
const SALT: &str = "c2FsdDEy";
const CHALLENGE: &str = "Y2hhbGxlbmdl";
const OPAQUE: &str = "b3BhcXVlMQ==";
const NONCE: &str = "bm9uY2UtMQ";
/// A smaller test pattern than the default: quicker to encode and record.
const SMALL: &[&str] = &["--width", "640", "--height", "360"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    Adobe,
    Llnw,
}

impl Scheme {
    /// The server's password: one per scheme, so that one test's ffmpeg (which
    /// has it on its command line) is not taken for the other's nalcast.
    fn password(self) -> &'static str {
        match self {
            Scheme::Adobe => "pa55-adobe-only-in-the-environment",
            Scheme::Llnw => "pa55-llnw-only-in-the-environment",
        }
    }
}

/// What the server saw: how each connect went, and the pictures published.
#[derive(Default)]
struct Seen {
    /// One line per connect: "asked", "challenged", "accepted", "wrong".
    connects: Vec<&'static str>,
    /// The published video as Annex B, and its number of pictures.
    annexb: Vec<u8>,
    /// The sequence header's SPS and PPS (Annex B), put before each keyframe as a
    /// player turning RTMP into Annex B does.
    parameter_sets: Vec<u8>,
    pictures: usize,
}

struct LoginServer {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoginServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoginServer {
    async fn start(scheme: Scheme) -> LoginServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, scheme, shared.clone()));
            }
        });
        LoginServer { port, seen, task }
    }

    fn connects(&self) -> Vec<&'static str> {
        self.seen.lock().expect("seen").connects.clone()
    }

    fn pictures(&self) -> usize {
        self.seen.lock().expect("seen").pictures
    }
}

/// The server's answer to a connect whose application is `app` (with the query
/// the client appended): `Ok` accepts it, `Err` refuses it with that description.
fn answer(scheme: Scheme, app: &str) -> Result<&'static str, (&'static str, String)> {
    let (name, query) = app.split_once('?').unwrap_or((app, ""));
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let get = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let authmod = match scheme {
        Scheme::Adobe => "adobe",
        Scheme::Llnw => "llnw",
    };
    if get("authmod") != Some(authmod) {
        return Err((
            "asked",
            format!("[ AccessManager.Reject ] : [ code=403 need auth; authmod={authmod} ] : "),
        ));
    }
    let Some(response) = get("response") else {
        let user = get("user").unwrap_or_default();
        let extra = match scheme {
            Scheme::Adobe => format!("salt={SALT}&challenge={CHALLENGE}&opaque={OPAQUE}"),
            Scheme::Llnw => format!("nonce={NONCE}"),
        };
        return Err((
            "challenged",
            format!("[ AccessManager.Reject ] : [ authmod={authmod} ] : ?reason=needauth&user={user}&{extra}"),
        ));
    };
    // The response the server expects, from the password it knows.
    let md5 = |parts: &[&str]| {
        let mut md5 = Md5::new();
        for part in parts {
            md5.update(part.as_bytes());
        }
        md5.finalize()
    };
    let hex = |text: &str| {
        md5(&[text])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let expected = match scheme {
        Scheme::Adobe => {
            let secret = b64(&md5(&[USER, SALT, scheme.password()]));
            b64(&md5(&[
                &secret,
                OPAQUE,
                get("challenge").unwrap_or_default(),
            ]))
        }
        Scheme::Llnw => {
            let ha1 = hex(&format!("{USER}:live:{}", scheme.password()));
            let ha2 = hex(&format!("publish:/{name}/_definst_"));
            let (nc, cnonce) = (
                get("nc").unwrap_or_default(),
                get("cnonce").unwrap_or_default(),
            );
            hex(&format!("{ha1}:{NONCE}:{nc}:{cnonce}:auth:{ha2}"))
        }
    };
    if get("user") == Some(USER) && response == expected {
        Ok("accepted")
    } else {
        Err((
            "wrong",
            format!("[ AccessManager.Reject ] : [ authmod={authmod} ] : ?reason=authfailed&opaque={OPAQUE}"),
        ))
    }
}

/// One client connection: handshake, then the session; connects answered by
/// [`answer`], publish requests accepted, video kept.
async fn serve(mut tcp: TcpStream, scheme: Scheme, seen: Arc<Mutex<Seen>>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut handshake = Handshake::new(PeerType::Server);
    let leftover = loop {
        let Ok(n) = tcp.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        match handshake.process_bytes(&buf[..n]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                let _ = tcp.write_all(&response_bytes).await;
            }
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => {
                let _ = tcp.write_all(&response_bytes).await;
                break remaining_bytes;
            }
            Err(_) => return,
        }
    };
    let Ok((mut session, results)) = ServerSession::new(ServerSessionConfig::new()) else {
        return;
    };
    let mut pending = results;
    let mut input = leftover;
    loop {
        pending.extend(session.handle_input(&input).unwrap_or_default());
        while !pending.is_empty() {
            for result in std::mem::take(&mut pending) {
                match result {
                    ServerSessionResult::OutboundResponse(packet) => {
                        let _ = tcp.write_all(&packet.bytes).await;
                    }
                    ServerSessionResult::RaisedEvent(event) => {
                        pending.extend(handle(&mut session, scheme, &seen, event));
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }
        match tcp.read(&mut buf).await {
            Ok(n) if n > 0 => input = buf[..n].to_vec(),
            _ => return,
        }
    }
}

fn handle(
    session: &mut ServerSession,
    scheme: Scheme,
    seen: &Mutex<Seen>,
    event: ServerSessionEvent,
) -> Vec<ServerSessionResult> {
    match event {
        ServerSessionEvent::ConnectionRequested {
            request_id,
            app_name,
        } => {
            let (what, results) = match answer(scheme, &app_name) {
                Ok(what) => (what, session.accept_request(request_id)),
                Err((what, description)) => (
                    what,
                    session.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        &description,
                    ),
                ),
            };
            seen.lock().expect("seen").connects.push(what);
            results.unwrap_or_default()
        }
        ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
            session.accept_request(request_id).unwrap_or_default()
        }
        ServerSessionEvent::VideoDataReceived { data, .. } => {
            keep_video(&mut seen.lock().expect("seen"), &data);
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// An FLV AVC video tag body into Annex B: a picture's length-prefixed NAL units,
/// a keyframe's after the sequence header's SPS and PPS.
fn keep_video(seen: &mut Seen, tag: &[u8]) {
    const START: [u8; 4] = [0, 0, 0, 1];
    if tag.len() < 5 || tag[0] & 0x0f != 7 {
        return;
    }
    let body = &tag[5..];
    if tag[1] == 0 {
        // avcC: version, profile, compat, level, length size, SPS count + SPSs,
        // PPS count + PPSs.
        let mut at = 5;
        seen.parameter_sets.clear();
        for count_mask in [0x1f, 0xff] {
            let Some(&count) = body.get(at) else { return };
            at += 1;
            for _ in 0..(count & count_mask) {
                let Some(len) = body.get(at..at + 2) else {
                    return;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let Some(nal) = body.get(at + 2..at + 2 + len) else {
                    return;
                };
                seen.parameter_sets.extend_from_slice(&START);
                seen.parameter_sets.extend_from_slice(nal);
                at += 2 + len;
            }
        }
        return;
    }
    if tag[0] >> 4 == 1 {
        let sets = seen.parameter_sets.clone();
        seen.annexb.extend_from_slice(&sets);
    }
    let mut rest = body;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(nal) = rest.get(4..4 + len) else {
            return;
        };
        seen.annexb.extend_from_slice(&START);
        seen.annexb.extend_from_slice(nal);
        rest = &rest[4 + len..];
    }
    seen.pictures += 1;
}

/// ffmpeg's client publishing two seconds of a test picture to `url`: whether it
/// succeeded.
async fn ffmpeg_publishes(url: &str) -> bool {
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi"])
        .args(["-i", "testsrc=size=320x240:rate=30", "-t", "2"])
        .args(["-c:v", "libx264", "-g", "30", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("ffmpeg ends")
        .expect("ffmpeg runs")
        .success()
}

async fn logs_in_and_publishes(scheme: Scheme) {
    let dir = common::temp_dir(&format!("rtmp-login-{scheme:?}"));
    let url = |password: &str, port: u16| {
        format!("rtmp://{USER}:{password}@127.0.0.1:{port}/live/garden")
    };

    // The server double against a real client: ffmpeg logs in with the password
    // and is refused without it.
    let reference = LoginServer::start(scheme).await;
    assert!(
        ffmpeg_publishes(&url(scheme.password(), reference.port)).await,
        "ffmpeg logs in"
    );
    assert_eq!(reference.connects(), ["asked", "challenged", "accepted"]);
    assert!(
        reference.pictures() >= 30,
        "{} pictures from ffmpeg",
        reference.pictures()
    );
    let refused = LoginServer::start(scheme).await;
    assert!(!ffmpeg_publishes(&url("wrong-password", refused.port)).await);
    assert_eq!(refused.connects(), ["asked", "challenged", "wrong"]);

    // nalcast through the same server.
    let server_side = LoginServer::start(scheme).await;
    let log = dir.join("nalcast.log");
    let server =
        nalcast_publishing_from_env(&url(scheme.password(), server_side.port), &log, SMALL);
    api_publish_until(&server, Duration::from_secs(20), |p| p["state"] == "live").await;
    assert_eq!(server_side.connects(), ["asked", "challenged", "accepted"]);
    assert_eq!(
        command_lines_holding(scheme.password()),
        Vec::<String>::new()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server_side.pictures() < 60 {
        assert!(
            Instant::now() < deadline,
            "{} pictures",
            server_side.pictures()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
    let recorded = dir.join("recorded.h264");
    let annexb = server_side.seen.lock().expect("seen").annexb.clone();
    std::fs::write(&recorded, annexb).expect("write");
    assert_recording_whole(&recorded, 60);
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !log_text.contains(scheme.password()),
        "the password in the log"
    );

    // A wrong password: refused, said so, retried later; never published.
    let wrong_side = LoginServer::start(scheme).await;
    let server = nalcast_publishing_from_env(&url("wrong-password", wrong_side.port), &log, SMALL);
    let failed = api_publish_until(&server, Duration::from_secs(20), |p| {
        p["state"] == "retrying" && p["last_error"].as_str().is_some()
    })
    .await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused the user and password"),
        "{failed}"
    );
    assert_eq!(wrong_side.pictures(), 0);
    assert!(!failed.to_string().contains("wrong-password"), "{failed}");
}

#[tokio::test]
async fn an_adobe_login_is_made_by_nalcast_with_the_password_on_no_command_line() {
    logs_in_and_publishes(Scheme::Adobe).await;
}

#[tokio::test]
async fn a_limelight_login_is_made_by_nalcast_with_the_password_on_no_command_line() {
    logs_in_and_publishes(Scheme::Llnw).await;
}
