//! The Debian package's unit and maintainer scripts: the settings file is not
//! world-readable, and systemd's sandbox scores 2.0 or lower.
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Before: DynamicUser (so the settings file had to be 0644 to be read), no
/// MemoryMax, TasksMax, SystemCallArchitectures or ProtectProc; score 3.7.
#[test]
fn the_unit_is_sandboxed_and_the_settings_file_readable_by_the_service_only() {
    let unit = read("packaging/debian/nalcast.service");
    let set = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "User=nalcast",
        "Group=nalcast",
        "MemoryMax=50%",
        "TasksMax=512",
        "SystemCallArchitectures=native",
        "ProtectProc=invisible",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(set(line), "the unit lacks {line}");
    }
    assert!(
        !set("DynamicUser=yes"),
        "a fixed user, for a 0640 settings file"
    );
    let postinst = read("packaging/debian/postinst");
    assert!(
        postinst.contains(
            "dpkg-statoverride --update --add root nalcast 0640 /etc/nalcast/nalcast.toml"
        ),
        "{postinst}"
    );
    assert!(
        postinst.find("adduser --system").expect("makes the user")
            < postinst.find("#DEBHELPER#").expect("debhelper part"),
        "the user exists before the service starts"
    );
    let cargo = read("crates/nalcast/Cargo.toml");
    assert!(
        cargo.contains(r#"["../../packaging/nalcast.toml", "etc/nalcast/nalcast.toml", "640"]"#),
        "the conffile is never unpacked world-readable"
    );
    assert!(cargo.contains("adduser"), "the package depends on adduser");

    let analyze = "systemd-analyze";
    if !testkit::tools::require(
        "the_unit_is_sandboxed_and_the_settings_file_readable_by_the_service_only",
        "systemd-analyze (systemd)",
        testkit::tools::runs(analyze, &["--version"]),
    ) {
        return;
    }
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo("packaging/debian/nalcast.service"))
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for nalcast.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no score: {text}"));
    assert!(score <= 2.0, "systemd-analyze security: {score}\n{text}");
}
