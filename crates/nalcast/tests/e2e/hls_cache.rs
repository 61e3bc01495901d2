//! LL-HLS behind a real HTTP cache (nginx, through scripts/hls-cache.sh): the
//! cache takes the clients, so nalcast answers about one request per part and
//! playlist version. A correctness check of nalcast's cache headers and blocking
//! playlist, with ten clients; the multi-client rows (10, 100 and 300 clients,
//! nginx and Varnish) and how late parts reach the clients are `make bench`'s.
use std::process::Command;

#[test]
fn nginx_in_front_takes_the_clients() {
    let cache = "nginx";
    if !testkit::tools::require(
        "nginx_in_front_takes_the_clients",
        "nginx",
        std::path::Path::new("/usr/sbin/nginx").exists(),
    ) {
        return;
    }
    let bin = testkit::server::nalcast_bin();
    let load = bin.with_file_name("nalcast-hls-load");
    assert!(
        load.exists(),
        "{} is missing: cargo build -p nalcast-bench (cargo nextest run --workspace builds it)",
        load.display()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/hls-cache.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(&bin)
        .arg(&load)
        .args(["3", "10"])
        .env("CACHE", cache)
        .output()
        .expect("scripts/hls-cache.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // | cache | clients | parts fetched | lateness | within | requests | versions | per version | fan | errors |
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("| nginx |"))
        .unwrap_or_else(|| panic!("no nginx row in the script's table: {stdout}"))
        .split('|')
        .map(str::trim)
        .collect();
    let clients: usize = row[2].parse().expect("clients");
    let parts: usize = row[3].parse().expect("parts fetched");
    let per_version: f64 = row[8].parse().expect("requests per version");
    assert!(
        parts >= clients * 5,
        "{clients} clients fetched only {parts} parts: {stdout}"
    );
    assert_eq!(row[10], "0", "errors: {stdout}");
    // A playlist and a part per version; a little more for joins and segments.
    assert!(
        per_version <= 3.0,
        "nalcast answered {per_version} requests per version for {clients} clients: the cache does not take them ({stdout})"
    );
}
