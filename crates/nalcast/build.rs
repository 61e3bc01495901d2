//! The binary embeds the player page and Broadway.js (the decoder for browsers
//! without WebCodecs, such as every plain-HTTP page on a LAN). Broadway.js comes
//! from npm; a build without it would serve a page that cannot decode, so the
//! build stops instead and says how to get it.
use std::path::Path;

const BROADWAY: &str = "../../web/node_modules/broadway-player/Player";
const FILES: [&str; 3] = ["Decoder.js", "YUVCanvas.js", "Player.js"];

fn main() {
    let dir = Path::new(BROADWAY);
    println!("cargo::rerun-if-changed={BROADWAY}");
    for file in FILES {
        println!("cargo::rerun-if-changed={BROADWAY}/{file}");
    }
    let missing: Vec<&str> = FILES
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        println!(
            "cargo::error=Broadway.js is missing (web/node_modules/broadway-player/Player/{}): \
             run `make setup` once, then build again",
            missing.join(", ")
        );
    }
}
