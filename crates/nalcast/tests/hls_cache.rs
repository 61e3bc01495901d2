//! LL-HLS behind real HTTP caches (nginx, Varnish: scripts/hls-cache.sh): with 10 or
//! 100 clients on the cache, nalcast answers about one request per part and playlist
//! version, the same for both counts. How late the parts reach the clients is a
//! timing figure: printed here, judged in `make bench` (bench/results).
use std::process::Command;

fn run(cache: &str) -> Vec<Vec<String>> {
    let bin = env!("CARGO_BIN_EXE_nalcast");
    let load = std::path::Path::new(bin).with_file_name("nalcast-hls-load");
    if !load.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "nalcast-bench", "--bin", "nalcast-hls-load"])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building nalcast-hls-load");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/hls-cache.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(bin)
        .arg(&load)
        .args(["5", "10", "100"])
        .env("CACHE", cache)
        .output()
        .expect("scripts/hls-cache.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cache}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("| {cache} |")))
        .map(|l| l.split('|').map(|c| c.trim().to_owned()).collect())
        .collect()
}

fn check(cache: &str) {
    let rows = run(cache);
    assert_eq!(rows.len(), 2, "one row per client count");
    let mut per_version = Vec::new();
    for row in &rows {
        // | cache | clients | parts fetched | lateness | within | requests | versions | per version | fan | errors |
        let clients: usize = row[2].parse().expect("clients");
        let parts: usize = row[3].parse().expect("parts fetched");
        let ratio: f64 = row[8].parse().expect("requests per version");
        assert!(
            parts >= clients * 10,
            "{cache}: {clients} clients fetched only {parts} parts"
        );
        assert_eq!(row[10], "0", "{cache}: errors at {clients} clients");
        // A playlist and a part per version; a little more for joins and segments.
        assert!(
            ratio <= 3.0,
            "{cache}: nalcast answered {ratio} requests per version at {clients} clients"
        );
        per_version.push(ratio);
    }
    assert!(
        (per_version[1] - per_version[0]).abs() <= 0.5,
        "{cache}: nalcast's requests per version grew with the clients: {per_version:?}"
    );
}

#[test]
fn nginx_in_front_takes_the_clients() {
    check("nginx");
}

#[test]
fn varnish_in_front_takes_the_clients() {
    check("varnish");
}
