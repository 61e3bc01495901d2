//! The command line and config file: help and docs made from the option definitions,
//! clear one-line errors with exit code 2, every source kind.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use clap::CommandFactory;
use nalcast::config::{file_key, heading, shown_default, Options};
use nalcast_core::protocol::ServerMessage;

fn nalcast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nalcast"))
        .args(args)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("runs")
}

/// Every option as `Options` defines it, the way the docs show it.
fn options() -> Vec<clap::Arg> {
    Options::command().get_arguments().cloned().collect()
}

/// What `nalcast ARGS` prints on a terminal `columns` wide (clap reads COLUMNS and
/// LINES when both are set), or with no terminal at all.
fn help_text(args: &[&str], columns: Option<usize>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    command.args(args).env_remove("COLUMNS").env_remove("LINES");
    if let Some(columns) = columns {
        command
            .env("COLUMNS", columns.to_string())
            .env("LINES", "50");
    }
    let out = command.output().expect("runs");
    assert!(out.status.success(), "nalcast {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// `--help` names every option and its default, `-h` the everyday ones (a wrapped
/// line read as one), and both say where the rest is.
#[test]
fn help_shows_every_option_with_its_default() {
    for page in ["-h", "--help"] {
        let lines = help_text(&[page], None);
        let help = lines.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("docs/configuration.md"), "{page}: {help}");
        for arg in options() {
            if page == "-h" && arg.is_hide_short_help_set() {
                let flag = format!("--{} ", arg.get_long().expect("long flag"));
                let listed = lines.lines().any(|l| l.trim_start().starts_with(&flag));
                assert!(!listed, "-h lists the tuning option {flag}");
                continue;
            }
            let flag = format!("--{}", arg.get_long().expect("every option is a long flag"));
            assert!(help.contains(&flag), "{page} lacks {flag}");
            if let Some(default) = shown_default(&arg) {
                let shown = format!("[default: {default}]");
                assert!(help.contains(&shown), "{page} lacks {flag}'s {shown}");
            }
        }
    }
}

/// `-h` is a screenful: each option in a line or two under its topic. `--help` adds
/// the explanations. Both wrap to the terminal, and to 100 columns without one.
#[test]
fn help_is_grouped_by_topic_and_wrapped_to_the_terminal() {
    for (page, columns, width) in [
        ("-h", Some(80), 80),
        ("--help", Some(80), 80),
        ("-h", None, 100),
        ("--help", None, 100),
    ] {
        let help = help_text(&[page], columns);
        let widest = help
            .lines()
            .max_by_key(|l| l.chars().count())
            .unwrap_or_default();
        assert!(
            widest.chars().count() <= width,
            "{page} with COLUMNS={columns:?} has a line of {} characters: {widest}",
            widest.chars().count()
        );
        // Each topic once, in order, and each option under its own: an option's
        // line is the one that starts with its flag, after clap's indent.
        let mut topics = Vec::new();
        let mut topic_of = std::collections::HashMap::new();
        for line in help.lines() {
            if let Some(topic) = line.strip_suffix(':').filter(|t| !t.starts_with(' ')) {
                topics.push(topic.to_owned());
            } else if let Some(flag) = line.strip_prefix("      --") {
                let flag = flag.split([' ', ',']).next().unwrap_or_default().to_owned();
                topic_of.insert(flag, topics.last().cloned());
            }
        }
        assert_eq!(
            topics,
            ["Options"]
                .into_iter()
                .chain(heading::ALL)
                .collect::<Vec<_>>(),
            "{page}'s topics"
        );
        for arg in options() {
            if page == "-h" && arg.is_hide_short_help_set() {
                continue;
            }
            let long = arg.get_long().expect("long flag");
            let expected = arg.get_help_heading().unwrap_or("Options");
            assert_eq!(
                topic_of.get(long).cloned().flatten().as_deref(),
                Some(expected),
                "{page}: --{long}"
            );
        }
    }
    let short = help_text(&["-h"], Some(100)).lines().count();
    let long = help_text(&["--help"], Some(100)).lines().count();
    assert!(short <= 66, "-h is {short} lines");
    assert!(
        long > short * 2,
        "--help ({long} lines) explains more than -h ({short})"
    );
}

/// The help text docs/configuration.md shows for an option: all of `--help`'s, with
/// a rule default (part of the first paragraph) left to its own column.
fn doc_help(arg: &clap::Arg) -> String {
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let help = match help.find(" [default: ") {
        Some(from) => {
            let to = from + help[from..].find(']').expect("a rule default ends with ]");
            format!("{}{}", &help[..from], &help[to + 1..])
        }
        None => help,
    };
    // A table cell is one line: the paragraphs become sentences in a row.
    let sentence = |text: &str| format!("{}.", text.trim().trim_end_matches('.'));
    help.split("\n\n")
        .map(sentence)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reference tables of docs/configuration.md, one per `--help` topic, made from
/// the option definitions.
fn reference_table() -> String {
    let cell = |text: &str| text.replace('|', "\\|").replace('*', "\\*");
    let mut tables = String::new();
    let topics = std::iter::once(None).chain(heading::ALL.map(Some));
    for topic in topics {
        tables += &format!("### {}\n\n", topic.unwrap_or("General"));
        tables += "| flag | file key | default | what it does |\n|---|---|---|---|\n";
        for arg in options().iter().filter(|a| a.get_help_heading() == topic) {
            let long = arg.get_long().expect("every option is a long flag");
            let mut flag = format!("--{long}");
            if arg.get_action().takes_values() {
                let name = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| long.to_uppercase(), ToString::to_string);
                flag = format!("{flag} {name}");
            }
            let mut flag = format!("`{}`", cell(&flag));
            if let Some(env) = arg.get_env() {
                flag = format!("{flag} or `{}`", env.to_string_lossy());
            }
            let key = file_key(arg).map_or_else(|| "—".to_owned(), |k| format!("`{k}`"));
            let default = match (arg.get_default_values(), shown_default(arg)) {
                ([], Some(rule)) => cell(&rule),
                (_, Some(value)) => format!("`{value}`"),
                (_, None) => "—".to_owned(),
            };
            tables += &format!(
                "| {flag} | {key} | {default} | {} |\n",
                cell(&doc_help(arg))
            );
        }
        tables += "\n";
    }
    tables
}

/// Every option is under one of the topics `--help` and the docs group them by
/// (only `--config`, and `--check` which checks it, stay with `--help` and
/// `--version`).
#[test]
fn every_option_has_a_topic() {
    let loose: Vec<_> = options()
        .iter()
        .filter(|a| a.get_help_heading().is_none())
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    assert_eq!(loose, ["config", "check"]);
    for arg in options() {
        if let Some(topic) = arg.get_help_heading() {
            assert!(
                heading::ALL.contains(&topic),
                "--{:?}: {topic}",
                arg.get_long()
            );
        }
    }
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// docs/configuration.md lists each option with its file key and default as
/// `Options` defines them. `NALCAST_UPDATE_DOCS=1` rewrites the table.
#[test]
fn the_configuration_reference_is_made_from_the_options() {
    let path = repo_file("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let (start, end) = ("<!-- options:start -->\n", "<!-- options:end -->");
    let from = doc.find(start).expect("options:start marker") + start.len();
    let to = doc.find(end).expect("options:end marker");
    let table = reference_table();
    if doc[from..to] != table {
        if std::env::var_os("NALCAST_UPDATE_DOCS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &doc[..from], &doc[to..]))
                .expect("write docs/configuration.md");
            return;
        }
        panic!(
            "docs/configuration.md's table is out of date with the options in crates/nalcast/src/config.rs: run NALCAST_UPDATE_DOCS=1 cargo test -p nalcast --test e2e cli::"
        );
    }
}

/// A number with its unit as the prose writes it ("10 s", "8 MiB", "2000 ms"), in
/// the flag's own unit.
fn prose_number(text: &str) -> Option<f64> {
    let digits: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let number: f64 = digits.parse().ok()?;
    let unit = text[digits.len()..].trim_start();
    let scale = if unit.starts_with("MiB") {
        1024.0 * 1024.0
    } else if unit.starts_with("KiB") {
        1024.0
    } else {
        1.0
    };
    Some(number * scale)
}

/// The README and the other docs mention defaults in passing, as "`--flag` (10 s)":
/// each such flag exists and the number is its default.
#[test]
fn defaults_mentioned_in_the_docs_are_the_defaults() {
    let mut files = vec![repo_file("README.md")];
    for entry in std::fs::read_dir(repo_file("docs")).expect("docs/") {
        files.push(entry.expect("docs entry").path());
    }
    let options = options();
    let mut checked = 0;
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(file).expect("read doc");
        for (at, _) in text.match_indices("`--") {
            let rest = &text[at + 3..];
            let Some(close) = rest.find('`') else {
                continue;
            };
            let name = &rest[..close];
            // "`--token T` (16+ characters…" describes a value, not the default.
            let Some(prose) = rest[close + 1..].strip_prefix(" (") else {
                continue;
            };
            if name.contains(' ') || !prose.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let arg = options
                .iter()
                .find(|a| a.get_long() == Some(name))
                .unwrap_or_else(|| panic!("{}: --{name} is not a flag", file.display()));
            let default = shown_default(arg).and_then(|d| prose_number(&d));
            assert_eq!(
                prose_number(prose),
                default,
                "{}: `--{name}` ({}…) is not its default",
                file.display(),
                prose.chars().take(12).collect::<String>()
            );
            checked += 1;
        }
    }
    assert!(checked > 5, "found only {checked} defaults in the docs");
}

#[test]
fn bad_configuration_exits_2_with_one_clear_line() {
    let dir = temp_dir("cli");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "fps = \"fast\"\n").expect("write");
    let unknown_key = dir.join("unknown.toml");
    std::fs::write(&unknown_key, "frame-rate = 30\n").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--source".into(), "file:missing.h264".into()],
            "missing.h264",
        ),
        (
            vec!["--source".into(), "webcam".into()],
            "unknown source 'webcam'",
        ),
        (vec!["--width".into(), "1281".into()], "even"),
        (vec!["--fps".into(), "abc".into()], "invalid value 'abc'"),
        (
            vec!["--listen".into(), "localhost".into()],
            "--listen 'localhost'",
        ),
        (
            vec!["--config".into(), bad_toml.display().to_string()],
            "bad.toml",
        ),
        (
            vec!["--config".into(), "/nonexistent.toml".into()],
            "cannot read config file",
        ),
        (
            vec!["--config".into(), unknown_key.display().to_string()],
            "unknown key 'frame-rate'",
        ),
        (
            vec!["--source".into(), "rpicam".into()],
            "looked for rpicam-vid, libcamera-vid, raspivid",
        ),
        (vec!["--tls".into(), "yes".into()], "--tls 'yes'"),
        (
            vec!["--tls-cert".into(), "/etc/x.pem".into()],
            "--tls-cert and --tls-key go together",
        ),
        (
            vec![
                "--tls-cert".into(),
                "/nonexistent/c.pem".into(),
                "--tls-key".into(),
                "/nonexistent/k.pem".into(),
            ],
            "cannot read TLS certificate /nonexistent/c.pem",
        ),
        (vec!["--auth".into(), "nopassword".into()], "USER:PASSWORD"),
        (vec!["--token".into(), "short".into()], "--token must be"),
        (
            vec!["--header-timeout".into(), "0".into()],
            "--header-timeout",
        ),
        (
            vec!["--trusted-proxy".into(), "proxy.lan".into()],
            "--trusted-proxy 'proxy.lan' is not an address or network",
        ),
        (
            vec!["--public-host".into(), "https://cam.example.com/".into()],
            "--public-host 'https://cam.example.com/' is not a host name",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nalcast(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        // clap adds a usage hint after its own errors; ours are a single line.
        if !needle.starts_with("invalid value") {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

/// The file's values stand in for the defaults; a flag or its environment
/// variable wins over the file.
#[tokio::test]
async fn flags_and_environment_win_over_the_config_file() {
    let dir = temp_dir("precedence");
    let config = dir.join("nalcast.toml");
    std::fs::write(
        &config,
        "width = 320\nheight = 240\nbitrate = 500000\nkeyframe-interval = 15\ntoken = \"from-the-file-0123456789\"\n",
    )
    .expect("write");
    let server = Server::start_with_env(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--keyframe-interval",
            "20",
        ],
        &[("NALCAST_TOKEN", "from-the-environment-0123")],
    );
    let bearer = |token: &str| format!("Bearer {token}");
    let env_token = bearer("from-the-environment-0123");
    let (status, _, body) =
        http_request(server.addr, "/api/stream", &[("Authorization", &env_token)])
            .await
            .expect("GET");
    assert_eq!(status, 200, "the environment's token: {body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(info["bitrate"], 500_000, "from the file");
    assert_eq!(info["keyframe_interval"], 20, "the flag over the file");
    let file_token = bearer("from-the-file-0123456789");
    let (status, _, _) = http_request(
        server.addr,
        "/api/stream",
        &[("Authorization", &file_token)],
    )
    .await
    .expect("GET");
    assert_eq!(status, 401, "the file's token is overridden");
}

async fn first_keyframe_size(server: &Server) -> (u32, u32) {
    let mut ws = connect(&server.url("/ws")).await;
    let mut size = None;
    loop {
        match next_framed(&mut ws, Duration::from_secs(10))
            .await
            .expect("message")
        {
            ServerMessage::StreamInfo(i) => size = Some((i.width, i.height)),
            ServerMessage::AccessUnit { .. } => return size.expect("stream-info first"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn file_source_plays_and_loops() {
    let dir = temp_dir("file");
    let file = dir.join("clip.h264");
    write_h264(&file, 320, 240, 10, 5);
    let server = Server::start(&[
        "--source",
        &format!("file:{}", file.display()),
        "--fps",
        "60",
    ]);
    assert_eq!(first_keyframe_size(&server).await, (320, 240));
    // 10 frames per pass: 35 frames means it looped.
    let mut ws = connect(&server.url("/ws/raw")).await;
    let mut slices = 0;
    while slices < 35 {
        let msg = next_binary(&mut ws, Duration::from_secs(5))
            .await
            .expect("looping frames");
        if matches!(raw_nal_type(&msg), 1 | 5) {
            slices += 1;
        }
    }
}

#[tokio::test]
async fn exec_source_streams_a_commands_output() {
    let dir = temp_dir("exec");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 10, 5);
    let server = Server::start(&[
        "--source",
        &format!(
            "exec:while true; do cat {}; sleep 0.2; done",
            clip.display()
        ),
    ]);
    assert_eq!(first_keyframe_size(&server).await, (320, 240));
}

#[tokio::test]
async fn stdin_source_streams_what_is_piped_in() {
    let dir = temp_dir("stdin");
    let clip = dir.join("clip.h264");
    write_h264(&clip, 320, 240, 10, 5);
    let input = std::fs::File::open(&clip).expect("clip");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args([
        "--source",
        "stdin",
        "--listen",
        "127.0.0.1:0",
        "--legacy-listen",
        "off",
    ])
    .env("RUST_LOG", "warn")
    .stdin(input)
    .stdout(std::process::Stdio::piped());
    let server = Server::from_command(cmd);
    assert_eq!(first_keyframe_size(&server).await, (320, 240));
}
