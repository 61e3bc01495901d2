//! The corpus: H.264 streams made the way cameras make them, encoded at test time
//! with ffmpeg's libx264 from its `testsrc2` pattern (never committed).
//!
//! rpicam-vid's settings: `--inline` (SPS/PPS before every IDR: libx264 does that
//! for raw output by itself), `--low-latency` (x264's zero-latency tune: no
//! B-frames, no lookahead), a fixed `--intra` period (keyframes every `gop`
//! frames, no scene-cut keyframes), `--level 4.1/4.2`, `--bitrate`. The camera
//! hardware makes one slice per picture; four-slice and B-frame streams are what
//! other encoders (a Pi 5's software encoder, IP cameras) make. Then what went
//! wrong once (issue 26): several SPS and PPS ids sent up front, a size change by
//! a new SPS id, B-frames with GOPs of unequal length, a file that starts with P
//! frames, and writers that pause or die in the middle of a frame
//! (tests/fixtures/writer.py).
use std::path::{Path, PathBuf};

/// One stream of the corpus, encoded and ready to play.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Short name for summaries and failure messages.
    pub name: &'static str,
    /// The Annex-B file.
    pub path: PathBuf,
    /// Frames per second it is played at.
    pub fps: u32,
    /// Frames from one keyframe to the next (the first GOP's, where they differ).
    pub gop: u32,
    /// How it is played.
    pub play: Play,
}

/// How a stream is played to nalcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Play {
    /// As a file (paced by nalcast) and through a camera-like pipe (paced by ffmpeg).
    FileAndPipe,
    /// As a file only: its loops are a break nalcast knows of (through a pipe they
    /// would be a broken stream).
    FileOnly,
    /// By tests/fixtures/writer.py: every tenth frame written in two halves
    /// `pause_ms` apart, as a busy machine's encoder does.
    PausingWriter { pause_ms: u32 },
    /// By tests/fixtures/writer.py, dying halfway through a frame every
    /// `frames` frames (nalcast restarts it).
    DyingWriter { frames: u32 },
}

impl Stream {
    /// One GOP's duration in seconds.
    pub fn gop_secs(&self) -> f64 {
        f64::from(self.gop) / f64::from(self.fps)
    }
}

/// What the encoder puts between pictures besides the slices.
#[derive(Clone, Copy, Debug)]
enum Sei {
    /// x264's own: its version string once, in the first access unit.
    Once,
    /// HRD buffering-period and picture-timing SEI in every access unit.
    EveryFrame,
    /// None at all (`-bsf:v filter_units=remove_types=6`).
    Stripped,
}

/// What happens to the encoder's output before it is played.
#[derive(Clone, Copy, Debug)]
enum After {
    /// Played as encoded.
    Nothing,
    /// SPS and PPS only in the first access unit (a camera started once, its
    /// headers long gone when a viewer joins).
    HeadersOnce,
    /// Garbage before the stream and broken NAL units and zero stuffing inside it.
    Garbage,
    /// Every distinct SPS and PPS once, all at the start (an encoder with several
    /// parameter sets that sends them up front), none later.
    HeadersUpFront,
    /// The first 10 frames left out: the file starts with P frames.
    StartsWithP,
}

/// One libx264 encode.
#[derive(Clone, Copy, Debug)]
struct Encode {
    width: u32,
    height: u32,
    fps: u32,
    gop: u32,
    /// GOPs in the file (it loops).
    gops: u32,
    profile: &'static str,
    level: &'static str,
    kbit: u32,
    slices: u32,
    aud: bool,
    sei: Sei,
    /// B-frames between references (0: rpicam's zero-latency settings).
    bframes: u32,
    /// The id of its SPS and PPS (x264's `sps-id`).
    sps_id: u32,
}

const SMALL: Encode = Encode {
    width: 480,
    height: 270,
    fps: 60,
    gop: 60,
    gops: 3,
    profile: "baseline",
    level: "4.1",
    kbit: 1000,
    slices: 1,
    aud: false,
    sei: Sei::Once,
    bframes: 0,
    sps_id: 0,
};

struct Recipe {
    name: &'static str,
    /// Concatenated in this order (more than one: the picture size changes).
    encodes: &'static [Encode],
    after: After,
    play: Play,
}

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "baseline",
        encodes: &[SMALL],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "baseline-4slices-aud-nosei",
        encodes: &[Encode {
            level: "4.2",
            slices: 4,
            aud: true,
            sei: Sei::Stripped,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "main-aud-sei",
        encodes: &[Encode {
            profile: "main",
            aud: true,
            sei: Sei::EveryFrame,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "high-4slices-nosei",
        encodes: &[Encode {
            profile: "high",
            level: "4.2",
            slices: 4,
            sei: Sei::Stripped,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "main-sps-once",
        encodes: &[Encode {
            profile: "main",
            ..SMALL
        }],
        after: After::HeadersOnce,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "high-1080p30-8M",
        encodes: &[Encode {
            width: 1920,
            height: 1080,
            fps: 30,
            gop: 30,
            profile: "high",
            kbit: 8000,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "main-bframes",
        encodes: &[Encode {
            profile: "main",
            bframes: 3,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        // One GOP at each size, so the picture size changes at every other keyframe.
        name: "size-change",
        encodes: &[
            Encode {
                width: 640,
                height: 360,
                gops: 1,
                ..SMALL
            },
            Encode { gops: 1, ..SMALL },
        ],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        name: "garbage",
        encodes: &[SMALL],
        after: After::Garbage,
        play: Play::FileAndPipe,
    },
    Recipe {
        // SPS 0, 1, 2 and PPS 0, 1, 2, each PPS naming its own SPS, all sent once
        // at the start; a GOP uses each in turn.
        name: "three-sps-ids-up-front",
        encodes: &[
            Encode { gops: 1, ..SMALL },
            Encode {
                gops: 1,
                sps_id: 1,
                ..SMALL
            },
            Encode {
                gops: 1,
                sps_id: 2,
                ..SMALL
            },
        ],
        after: After::HeadersUpFront,
        play: Play::FileAndPipe,
    },
    Recipe {
        // The picture size changes by a new SPS id (not a new SPS under id 0).
        name: "size-change-by-sps-id",
        encodes: &[
            Encode {
                width: 640,
                height: 360,
                gops: 1,
                ..SMALL
            },
            Encode {
                gops: 1,
                sps_id: 1,
                ..SMALL
            },
        ],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        // B-frames and GOPs of unequal length: 2 s, then two of 0.5 s.
        name: "bframes-unequal-gops",
        encodes: &[
            Encode {
                profile: "main",
                bframes: 3,
                gop: 120,
                gops: 1,
                ..SMALL
            },
            Encode {
                profile: "main",
                bframes: 3,
                gop: 30,
                gops: 2,
                ..SMALL
            },
        ],
        after: After::Nothing,
        play: Play::FileAndPipe,
    },
    Recipe {
        // Two GOPs less their first 10 frames: every capture spans a loop.
        name: "starts-with-p-frames",
        encodes: &[Encode { gops: 2, ..SMALL }],
        after: After::StartsWithP,
        play: Play::FileOnly,
    },
    Recipe {
        name: "writer-pausing-mid-frame",
        encodes: &[Encode {
            fps: 30,
            gop: 30,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::PausingWriter { pause_ms: 20 },
    },
    Recipe {
        name: "writer-dying-mid-frame",
        encodes: &[Encode {
            fps: 30,
            gop: 30,
            ..SMALL
        }],
        after: After::Nothing,
        play: Play::DyingWriter { frames: 34 },
    },
];

/// The streams of the corpus whose name contains one of `only` (all when empty),
/// written into `dir`; encodes not in the test kit's cache yet are made two at a
/// time.
pub fn encode_all(dir: &Path, only: &[String]) -> Vec<Stream> {
    let recipes: Vec<&Recipe> = RECIPES
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|o| r.name.contains(o.as_str())))
        .collect();
    let mut jobs: Vec<&Encode> = recipes.iter().flat_map(|r| r.encodes).collect();
    // The longest first, so the two encoders finish together.
    jobs.sort_by_key(|e| std::cmp::Reverse(e.width * e.height * e.gop * e.gops));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(e) = jobs.get(i) else {
                    break;
                };
                encode(e);
            });
        }
    });
    recipes
        .iter()
        .map(|r| {
            let bytes: Vec<u8> = r.encodes.iter().flat_map(encode).collect();
            let bytes = match r.after {
                After::Nothing => bytes,
                After::HeadersOnce => headers_once(&bytes),
                After::Garbage => with_garbage(&bytes),
                After::HeadersUpFront => headers_up_front(&bytes),
                After::StartsWithP => without_first_frames(&bytes, 10),
            };
            let path = dir.join(format!("{}.h264", r.name));
            std::fs::write(&path, bytes).expect("write stream");
            Stream {
                name: r.name,
                path,
                fps: r.encodes[0].fps,
                gop: r.encodes[0].gop,
                play: r.play,
            }
        })
        .collect()
}

/// One encode, from the test kit's cache of x264 streams.
fn encode(e: &Encode) -> Vec<u8> {
    let mut x264 = vec![
        format!("slices={}", e.slices),
        format!("aud={}", u8::from(e.aud)),
        format!("sps-id={}", e.sps_id),
    ];
    if let Sei::EveryFrame = e.sei {
        x264.push("nal-hrd=vbr".into());
    }
    let frames = (e.gop * e.gops).to_string();
    let gop = e.gop.to_string();
    let bframes = e.bframes.to_string();
    let rate = format!("{}k", e.kbit);
    let x264 = x264.join(":");
    // One thread: slices are what x264-params say, and both cores encode.
    let mut args = vec![
        "-frames:v",
        &frames,
        "-threads",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
    ];
    if e.bframes == 0 {
        args.extend(["-tune", "zerolatency"]);
    } else {
        args.extend(["-bf", &bframes]);
    }
    args.extend(["-profile:v", e.profile, "-level", e.level]);
    args.extend(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate]);
    args.extend(["-g", &gop, "-keyint_min", &gop]);
    args.extend(["-sc_threshold", "0", "-x264-params", &x264]);
    if let Sei::Stripped = e.sei {
        args.extend(["-bsf:v", "filter_units=remove_types=6"]);
    }
    let pattern = format!("testsrc2=size={}x{}:rate={}", e.width, e.height, e.fps);
    testkit::x264::bytes(&pattern, &args)
}

/// The NAL units of an Annex-B buffer (header byte first, no start code).
pub fn split_annexb(data: &[u8]) -> Vec<Vec<u8>> {
    testkit::annexb::split(data)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Drops every SPS and PPS after the first slice.
fn headers_once(stream: &[u8]) -> Vec<u8> {
    let mut seen_slice = false;
    let nals: Vec<Vec<u8>> = split_annexb(stream)
        .into_iter()
        .filter(|nal| {
            let t = nal[0] & 0x1f;
            seen_slice |= matches!(t, 1 | 5);
            !(seen_slice && matches!(t, 7 | 8))
        })
        .collect();
    testkit::annexb::join(&nals)
}

/// Every distinct SPS and PPS once at the start, in the order first seen, and
/// none anywhere else.
fn headers_up_front(stream: &[u8]) -> Vec<u8> {
    let nals = split_annexb(stream);
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for nal in nals.iter().filter(|n| matches!(n[0] & 0x1f, 7 | 8)) {
        if !headers.contains(nal) {
            headers.push(nal.clone());
        }
    }
    let rest: Vec<Vec<u8>> = nals
        .into_iter()
        .filter(|n| !matches!(n[0] & 0x1f, 7 | 8))
        .collect();
    testkit::annexb::join(&[headers, rest].concat())
}

/// The stream without its first `frames` pictures (and what came with them): it
/// starts with P frames, which refer to pictures the file does not hold.
fn without_first_frames(stream: &[u8], frames: usize) -> Vec<u8> {
    let nals = split_annexb(stream);
    let mut pictures = 0;
    let start = nals
        .iter()
        .position(|n| {
            let first_slice =
                matches!(n[0] & 0x1f, 1 | 5) && n.get(1).is_some_and(|b| b & 0x80 != 0);
            pictures += usize::from(first_slice);
            pictures > frames
        })
        .expect("a stream longer than the frames left out");
    testkit::annexb::join(&nals[start..])
}

pub use testkit::rng::Rng;

/// What a misbehaving camera wrapper adds: text and binary junk before the first
/// start code; inside, after every 23rd NAL unit, a unit with forbidden_zero_bit
/// set (a corrupt header) and a run of zero bytes (legal stuffing). The file ends
/// with such a broken unit, so when the stream loops the junk before the next
/// pass lands in a unit the server drops anyway rather than in the last slice.
fn with_garbage(stream: &[u8]) -> Vec<u8> {
    let mut rng = Rng(13);
    let mut out = b"[0:00:00.000] camera: starting, ignore this line\n".to_vec();
    out.extend((0..2000).map(|_| rng.nonzero_byte()));
    let broken = |rng: &mut Rng| {
        let mut unit = vec![0, 0, 0, 1, 0x80 | (rng.next_u64() as u8 & 0x7f)];
        let len = 50 + rng.next_u64() % 500;
        unit.extend((0..len).map(|_| rng.nonzero_byte()));
        unit
    };
    for (i, nal) in split_annexb(stream).iter().enumerate() {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        if i % 23 == 22 {
            out.extend(broken(&mut rng));
            out.extend_from_slice(&[0; 7]);
        }
    }
    out.extend(broken(&mut rng));
    out
}
