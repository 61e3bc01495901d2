//! One policy for tests that need a program from outside (ffmpeg, nginx, GStreamer):
//! under `make test` (NALCAST_REQUIRE_ALL set) a missing one fails the test, since
//! the setup installs them all; elsewhere the test says SKIPPED and passes.
use std::process::Command;

/// Whether every test must run (`make test` sets NALCAST_REQUIRE_ALL).
pub fn all_required() -> bool {
    std::env::var_os("NALCAST_REQUIRE_ALL").is_some()
}

/// Whether `test` can run, given that it needs `what` and `available` says whether
/// it is there: true when it is; a failure naming `what` under NALCAST_REQUIRE_ALL;
/// otherwise false after one line saying SKIPPED and how to install it.
pub fn require(test: &str, what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(
        !all_required(),
        "{test} needs {what}, which is missing (scripts/setup.sh --test installs it)"
    );
    eprintln!("SKIPPED {test}: needs {what} (scripts/setup.sh --test installs it)");
    false
}

/// Whether `program args…` runs and succeeds (e.g. `ffmpeg -version`).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// [`require`] for ffmpeg and ffprobe with libx264, which the stream tests use.
pub fn require_ffmpeg(test: &str) -> bool {
    let x264 = || {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libx264"))
    };
    require(
        test,
        "ffmpeg and ffprobe with libx264",
        runs("ffprobe", &["-version"]) && x264(),
    )
}
