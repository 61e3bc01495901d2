//! Every fenced command and configuration of README.md, docs/raspberry-pi.md,
//! docs/scale-out.md, docs/security.md and docs/integrations.md, run here (issue 28), so a doc that
//! drifts from the program fails `make test`.
//!
//! Each command line is matched by one rule of [`how`], which says how it runs on
//! a build machine (nalcast itself with the doc's arguments, curl against a server
//! started here, make without building, the package's file name and service…); a
//! line no rule matches fails the test, so a new command in the docs needs a rule.
//! Configuration blocks run through what reads them: TOML through nalcast
//! --config, nginx through `nginx -t` (and the RTMP block through the publish
//! tests), Varnish VCL through `varnishd -C`, a Caddyfile through `caddy adapt`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The documents whose fenced blocks are run.
const DOCS: [&str; 5] = [
    "README.md",
    "docs/raspberry-pi.md",
    "docs/scale-out.md",
    "docs/security.md",
    "docs/integrations.md",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A fenced block: where it is, its language, its text.
#[derive(Debug, Clone)]
pub struct Block {
    pub doc: &'static str,
    pub line: usize,
    pub lang: String,
    pub text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.doc, self.line)
    }
}

/// Every fenced block of the documents.
pub fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(repo(doc)).expect("the doc");
        let mut open: Option<(usize, String, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let fence = line.trim_start().starts_with("```");
            match (&mut open, fence) {
                (None, true) => {
                    let lang = line.trim_start().trim_start_matches('`').trim().to_owned();
                    open = Some((i + 1, lang, String::new()));
                }
                (Some(_), true) => {
                    let (line, lang, text) = open.take().expect("open block");
                    out.push(Block {
                        doc,
                        line,
                        lang,
                        text,
                    });
                }
                (Some((_, _, body)), false) => {
                    body.push_str(line);
                    body.push('\n');
                }
                (None, false) => {}
            }
        }
        assert!(open.is_none(), "{doc}: a fence is not closed");
    }
    out
}

/// The one block of language `lang` in `doc` that contains `marker`.
pub fn block(doc: &str, lang: &str, marker: &str) -> String {
    let found: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.doc == doc && b.lang == lang && b.text.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "{doc}: one ```{lang} block with {marker:?}");
    found[0].text.clone()
}

/// The command lines of a shell block, without comments.
fn commands(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find(" #") {
            Some(at) => &l[..at],
            None if l.trim_start().starts_with('#') => "",
            None => l,
        })
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Words of a command line as a POSIX shell splits them, for the single and
/// double quotes the docs use.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (_, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// How a documented command runs here.
#[derive(Debug)]
enum How {
    /// `make TARGET…`: make shows what it would run (`-n`), without building.
    Make(Vec<String>),
    /// `nalcast ARGS`: the real binary with the doc's arguments.
    Nalcast(Vec<String>),
    /// `curl … localhost:8000/PATH`: against a server started here.
    Curl(Vec<String>, String),
    /// `sudo apt install ./FILE.deb`: the name `make dist` gives the package.
    DebFile(String),
    /// `systemctl … nalcast`, `journalctl -u nalcast`: the packaged unit.
    Service,
    /// Raspberry Pi OS's camera tools, which nalcast's own messages point to.
    PiTool(String),
    /// A script of ours with modes: it parses, and has them.
    Script(String, Vec<String>),
}

fn how(line: &str) -> Option<How> {
    let w = words(line);
    let rest = |n: usize| w[n.min(w.len())..].to_vec();
    match w.first()?.as_str() {
        "make" => Some(How::Make(rest(1))),
        "nalcast" => Some(How::Nalcast(rest(1))),
        "curl" => {
            let url = w.iter().find(|a| a.starts_with("localhost:"))?;
            let path = url.split_once('/').map(|(_, p)| format!("/{p}"))?;
            Some(How::Curl(rest(1), path))
        }
        "sudo" if w.get(1).map(String::as_str) == Some("apt") => {
            let deb = w.iter().find(|a| a.ends_with(".deb"))?;
            Some(How::DebFile(deb.trim_start_matches("./").to_owned()))
        }
        "sudo" if w.get(1).map(String::as_str) == Some("systemctl") => Some(How::Service),
        "journalctl" => Some(How::Service),
        "rpicam-hello" | "libcamera-hello" => Some(How::PiTool(w[0].clone())),
        s if s.starts_with("scripts/") && s.ends_with(".sh") => {
            Some(How::Script(s.to_owned(), rest(1)))
        }
        _ => None,
    }
}

/// The nalcast binary with `args` until it has started or said why it cannot, at
/// most `within`: (exit code or `None` while running, stdout, stderr).
fn run_nalcast(args: &[String], within: Duration) -> (Option<i32>, String, String) {
    let dir = temp_dir("docs-run");
    let mut cmd = Command::new(nalcast_bin());
    cmd.args(args);
    if !args.iter().any(|a| a.starts_with("--listen")) {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    if !args.iter().any(|a| a.starts_with("--legacy-listen")) {
        cmd.args(["--legacy-listen", "off"]);
    }
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut child = cmd
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("nalcast runs");
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        let started = std::fs::read_to_string(&out_path).unwrap_or_default();
        if Instant::now() > deadline || started.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// A usage error of clap's: the doc uses a flag or value nalcast does not take.
fn usage_error(stderr: &str) -> bool {
    [
        "unexpected argument",
        "invalid value",
        "Usage: nalcast",
        "unknown key",
    ]
    .iter()
    .any(|e| stderr.contains(e))
}

fn version() -> String {
    let manifest = std::fs::read_to_string(repo("crates/nalcast/Cargo.toml")).expect("manifest");
    let table: toml::Table = manifest.parse().expect("TOML");
    match &table["package"]["version"] {
        toml::Value::String(v) => v.clone(),
        // version.workspace = true
        _ => {
            let root = std::fs::read_to_string(repo("Cargo.toml")).expect("workspace");
            let root: toml::Table = root.parse().expect("TOML");
            root["workspace"]["package"]["version"]
                .as_str()
                .expect("workspace version")
                .to_owned()
        }
    }
}

#[tokio::test]
async fn every_command_in_the_docs_runs_as_documented() {
    let server = Server::start(&["--width", "320", "--height", "240"]);
    server.wait_healthy().await;
    let mut failures = Vec::new();
    let mut ran = 0;
    for b in blocks()
        .iter()
        .filter(|b| matches!(b.lang.as_str(), "sh" | "bash"))
    {
        for line in commands(&b.text) {
            let at = format!("{}: `{line}`", b.at());
            let Some(how) = how(&line) else {
                failures.push(format!("{at}: no rule says how to run this here (docs.rs)"));
                continue;
            };
            ran += 1;
            let result = match how {
                How::Make(args) => {
                    let out = Command::new("make")
                        .args(["-s", "-n", "-C"])
                        .arg(repo(""))
                        .args(&args)
                        .output()
                        .expect("make runs");
                    (!out.status.success())
                        .then(|| String::from_utf8_lossy(&out.stderr).into_owned())
                }
                How::Nalcast(args) => {
                    let (code, stdout, stderr) = run_nalcast(&args, Duration::from_secs(5));
                    if usage_error(&stderr) {
                        Some(format!("nalcast does not take it: {stderr}"))
                    } else if code.is_none() && !stdout.contains("listening on") {
                        Some(format!("did not start within 5 s: {stderr}"))
                    } else if code.is_some_and(|c| c != 0) && stderr.trim_end().lines().count() != 1
                    {
                        Some(format!("exit {code:?} without a one-line reason: {stderr}"))
                    } else {
                        None
                    }
                }
                How::Curl(args, path) => {
                    let url = format!("http://{}{path}", server.addr);
                    let flags: Vec<&String> = args.iter().filter(|a| a.starts_with('-')).collect();
                    let out = Command::new("curl")
                        .args(&flags)
                        .args(["--max-time", "5"])
                        .arg(&url)
                        .output()
                        .expect("curl runs");
                    let body = String::from_utf8_lossy(&out.stdout);
                    (!out.status.success() || body.trim().is_empty())
                        .then(|| format!("curl {url}: {body}"))
                }
                How::DebFile(name) => {
                    let version = version();
                    let made: Vec<String> = ["arm64", "armhf", "amd64"]
                        .iter()
                        .map(|arch| format!("nalcast_{version}-1_{arch}.deb"))
                        .collect();
                    (!made.contains(&name)).then(|| format!("make dist makes {made:?}, not {name}"))
                }
                How::Service => {
                    let unit = repo("packaging/debian/nalcast.service");
                    let manifest = std::fs::read_to_string(repo("crates/nalcast/Cargo.toml"))
                        .unwrap_or_default();
                    (!unit.exists() || !manifest.contains("systemd-units"))
                        .then(|| "the package installs no nalcast.service".to_owned())
                }
                How::PiTool(tool) => {
                    // nalcast's own advice names the same tool, in the same words.
                    let sources =
                        std::fs::read_to_string(repo("crates/sources/src/rpicam/exit.rs"))
                            .unwrap_or_default()
                            + &std::fs::read_to_string(repo("crates/sources/src/rpicam/mod.rs"))
                                .unwrap_or_default();
                    (!sources.contains(&format!("{tool} --list-cameras")) && tool == "rpicam-hello")
                        .then(|| format!("nalcast's messages do not point to {tool}"))
                }
                How::Script(path, modes) => {
                    let script = repo(&path);
                    let text = std::fs::read_to_string(&script).unwrap_or_default();
                    let parses = Command::new("bash")
                        .arg("-n")
                        .arg(&script)
                        .status()
                        .is_ok_and(|s| s.success());
                    let missing: Vec<&String> = modes
                        .iter()
                        .filter(|m| !text.contains(&format!("{m})")))
                        .collect();
                    (!parses || !missing.is_empty())
                        .then(|| format!("{path}: parses {parses}, no modes {missing:?}"))
                }
            };
            if let Some(why) = result {
                failures.push(format!("{at}: {why}"));
            }
        }
    }
    assert!(ran >= 15, "only {ran} commands found in the docs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_settings_file_in_the_docs_is_one_nalcast_takes() {
    let mut failures = Vec::new();
    for b in blocks().iter().filter(|b| b.lang == "toml") {
        let file = temp_dir("docs-toml").join("nalcast.toml");
        std::fs::write(&file, &b.text).expect("write");
        // The doc's source may need a camera this machine has not: the test
        // pattern stands in (a flag wins over the file), the rest is the doc's.
        // A file of named streams ([[stream]] tables) names cameras in each: it is
        // checked as nalcast reads it (`--check`), cameras aside.
        let config = ["--config".to_owned(), file.display().to_string()];
        let (stand_in, started) = if b.text.contains("[[stream]]") {
            ("--check", "settings ok")
        } else {
            ("--source", "listening on")
        };
        let mut args = config.to_vec();
        args.push(stand_in.to_owned());
        if stand_in == "--source" {
            args.push("test".to_owned());
        }
        let (_, stdout, stderr) = run_nalcast(&args, Duration::from_secs(5));
        if !stdout.contains(started) {
            failures.push(format!(
                "{}: nalcast does not start with it: {stderr}",
                b.at()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_proxy_and_cache_configuration_in_the_docs_is_valid() {
    let dir = temp_dir("docs-configs");
    let mut checked = 0;
    for b in blocks() {
        let file = dir.join(format!("{}-{}", b.doc.replace('/', "-"), b.line));
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("runs");
            (!out.status.success()).then(|| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        };
        let failed = match b.lang.as_str() {
            "nginx" if b.text.contains("# ...") => continue, // a fragment of the block above
            "nginx" => {
                if !testkit::tools::require(
                    "nginx configurations",
                    "nginx",
                    Path::new("/usr/sbin/nginx").exists(),
                ) {
                    return;
                }
                // The doc's block, placed where it says, in an otherwise empty nginx.
                let rtmp = b.text.contains("rtmp {");
                let body = b
                    .text
                    .replace(
                        "/var/cache/nginx/hls",
                        &dir.join("cache").display().to_string(),
                    )
                    .replace(
                        "/etc/letsencrypt/live/camera.example.com/fullchain.pem",
                        &dir.join("cert.pem").display().to_string(),
                    )
                    .replace(
                        "/etc/letsencrypt/live/camera.example.com/privkey.pem",
                        &dir.join("key.pem").display().to_string(),
                    );
                let conf = if rtmp {
                    format!(
                        "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\nevents {{}}\n{body}"
                    )
                } else {
                    format!("events {{}}\nhttp {{\n{body}\n}}\n")
                };
                if body.contains("cert.pem") {
                    let cert =
                        rcgen::generate_simple_self_signed(vec!["camera.example.com".into()])
                            .expect("a certificate");
                    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("cert");
                    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())
                        .expect("key");
                }
                std::fs::write(&file, conf).expect("write");
                run(Command::new("/usr/sbin/nginx")
                    .arg("-t")
                    .arg("-p")
                    .arg(&dir)
                    .arg("-c")
                    .arg(&file)
                    .arg("-g")
                    .arg(format!(
                        "pid {}/nginx.pid; error_log stderr;",
                        dir.display()
                    )))
            }
            "vcl" => {
                if !testkit::tools::require(
                    "Varnish configurations",
                    "varnishd",
                    testkit::tools::runs("varnishd", &["-V"]),
                ) {
                    return;
                }
                std::fs::write(&file, &b.text).expect("write");
                run(Command::new("varnishd")
                    .arg("-C")
                    .arg("-n")
                    .arg(dir.join("varnish"))
                    .arg("-f")
                    .arg(&file))
            }
            "caddy" => {
                if !testkit::tools::require(
                    "Caddy configurations",
                    "caddy",
                    testkit::tools::runs("caddy", &["version"]),
                ) {
                    return;
                }
                std::fs::write(&file, &b.text).expect("write");
                run(Command::new("caddy")
                    .args(["adapt", "--adapter", "caddyfile", "--config"])
                    .arg(&file))
            }
            _ => continue,
        };
        checked += 1;
        assert!(
            failed.is_none(),
            "{}: {}",
            b.at(),
            failed.unwrap_or_default()
        );
    }
    assert!(checked >= 4, "{checked} configurations checked");
}

#[test]
fn shell_lines_split_as_a_shell_splits_them() {
    assert_eq!(
        words("nalcast --source 'rtsp://a:b@c/d' --x \"y z\" w"),
        ["nalcast", "--source", "rtsp://a:b@c/d", "--x", "y z", "w"]
    );
    assert_eq!(
        commands("make run     # installs\n# comment\nmake test\n"),
        ["make run", "make test"]
    );
}

/// What the docs must say, as issue 28 found them missing: the Pi guide's decoders
/// per device and the HLS address, the nginx-rtmp block whole, the RTSP fixture's
/// Python.
#[test]
fn the_guides_say_what_a_newcomer_needs() {
    let read = |doc: &str| std::fs::read_to_string(repo(doc)).expect("doc");
    let pi = read("docs/raspberry-pi.md");
    for needed in [
        "Media Source Extensions",
        "WebCodecs",
        "iPhone",
        "/hls/index.m3u8",
    ] {
        assert!(
            pi.contains(needed),
            "docs/raspberry-pi.md does not mention {needed}"
        );
    }
    assert!(
        !pi.contains("Over plain HTTP the page decodes with Broadway.js"),
        "docs/raspberry-pi.md still says plain HTTP means Broadway.js"
    );
    let rtmp = block("README.md", "nginx", "rtmp {");
    assert!(
        rtmp.contains("application live") && rtmp.contains("listen 1935"),
        "{rtmp}"
    );
    let readme = read("README.md");
    assert!(
        readme.contains("`/usr/bin/python3`") && readme.contains("python3-gi"),
        "README does not say the RTSP fixture needs Debian's Python with python3-gi"
    );
}
