//! H.264 streams from ffmpeg's test patterns, encoded once per set of arguments
//! and kept under the target directory, so a test run encodes only what it has not
//! encoded before (`cargo clean` forgets them).
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Annex-B file `ffmpeg -f lavfi -i <pattern> <args…> -f h264` writes, from
/// the cache. Tests check for ffmpeg first ([`crate::tools::require_ffmpeg`]); a
/// failed encode panics with ffmpeg's message.
pub fn encode(pattern: &str, args: &[&str]) -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("the test-stream cache folder");
    let path = dir.join(format!("{:016x}.h264", key(pattern, args)));
    if path.exists() {
        return path;
    }
    // Written aside and renamed: tests running at once may encode the same stream.
    let partial = dir.join(format!(
        "{}.{}.{:?}.part",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("stream"),
        std::process::id(),
        std::thread::current().id()
    ));
    let output = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            pattern,
        ])
        .args(args)
        .args(["-f", "h264"])
        .arg(&partial)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg -i {pattern} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &path).expect("the encoded stream moves into the cache");
    path
}

/// The bytes of [`encode`]'s file.
pub fn bytes(pattern: &str, args: &[&str]) -> Vec<u8> {
    std::fs::read(encode(pattern, args)).expect("the cached stream")
}

/// `<target>/nalcast-test-streams`: test executables run from `<target>/<profile>/deps`.
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().filter(|d| d.ends_with("deps"));
    match deps.and_then(Path::parent).and_then(Path::parent) {
        Some(target) => target.join("nalcast-test-streams"),
        None => std::env::temp_dir().join("nalcast-test-streams"),
    }
}

/// FNV-1a over the pattern and arguments: a name that changes with any of them
/// (a hand-written hash, since std's may change between Rust releases).
fn key(pattern: &str, args: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in std::iter::once(pattern).chain(args.iter().copied()) {
        for &b in part.as_bytes().iter().chain(&[0]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_argument_and_its_place_changes_the_key() {
        let base = super::key("testsrc2", &["-g", "30"]);
        assert_ne!(base, super::key("testsrc2", &["-g", "31"]));
        assert_ne!(base, super::key("testsrc2", &["-g30"]));
        assert_ne!(base, super::key("testsrc", &["-g", "30"]));
        assert_eq!(base, super::key("testsrc2", &["-g", "30"]));
    }
}
