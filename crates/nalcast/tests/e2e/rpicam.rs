//! `--source rpicam` against fake camera apps: shell scripts, put first on nalcast's
//! PATH, that take options the way one version of the real app does. Their option
//! tables come from the apps' sources (raspberrypi/rpicam-apps `core/options.cpp`
//! and `core/video_options.hpp` at the version named; raspberrypi/userland's
//! `RaspiVid.c`, `RaspiCommonSettings.c`, `RaspiPreview.c`, `RaspiCamControl.c`).
//! Each prints a `--help` listing laid out like the real one, refuses an option it
//! lacks with the real message and exit code, checks the values the real encoder
//! checks, and then plays an H.264 clip forever; a real WebSocket viewer decodes
//! what nalcast makes of it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use nalcast_core::protocol::ServerMessage;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use tokio::sync::mpsc;

/// rpicam-apps v1.13.0 (2026-08): `name[,short]`, then `=` for an option that takes
/// a value or `!` for one that takes none (boost's implicit values).
const RPICAM_1_13_0: &str = "help,h! version! list-cameras! camera= verbose,v! config,c! \
    info-text= width= height= timeout,t= output,o= post-process-file= post-process-libs= \
    nopreview,n! preview,p= fullscreen,f! qt-preview! preview-libs= preview-backend= hflip! \
    vflip! rotation= roi= shutter= analoggain= gain= metering= exposure= ev= awb= awbgains= \
    ccm= flush! wrap= brightness= contrast= saturation= sharpness= framerate= denoise= \
    viewfinder-width= viewfinder-height= tuning-file= lores-width= lores-height= lores-par! \
    mode= viewfinder-mode= buffer-count= viewfinder-buffer-count= no-raw! autofocus-mode= \
    autofocus-range= autofocus-speed= autofocus-window= lens-position= hdr! metadata= \
    metadata-format= flicker-period= bitrate,b= profile= level= intra,g= inline! codec= \
    encoder-libs= save-pts= quality,q= listen,l! keypress,k! signal,s! initial,i= split! \
    segment= circular! frames= libav-video-codec= libav-video-codec-opts= libav-format= \
    libav-audio! audio-codec= audio-source= audio-device= audio-channels= audio-bitrate= \
    audio-samplerate= av-sync= low-latency! sync=";

/// rpicam-apps v1.5.3 (2024-11), the last without `--low-latency`.
const RPICAM_1_5_3: &str = "help,h! version! list-cameras! camera= verbose,v! config,c! \
    info-text= width= height= timeout,t= output,o= post-process-file= post-process-libs= \
    nopreview,n! preview,p= fullscreen,f! qt-preview! hflip! vflip! rotation= roi= shutter= \
    analoggain= gain= metering= exposure= ev= awb= awbgains= flush! wrap= brightness= \
    contrast= saturation= sharpness= framerate= denoise= viewfinder-width= viewfinder-height= \
    tuning-file= lores-width= lores-height= lores-par! mode= viewfinder-mode= buffer-count= \
    viewfinder-buffer-count= no-raw! autofocus-mode= autofocus-range= autofocus-speed= \
    autofocus-window= lens-position= hdr! metadata= metadata-format= flicker-period= \
    bitrate,b= profile= level= intra,g= inline! codec= save-pts= quality,q= listen,l! \
    keypress,k! signal,s! initial,i= split! segment= circular! frames= libav-video-codec= \
    libav-video-codec-opts= libav-format= libav-audio! audio-codec= audio-source= \
    audio-device= audio-channels= audio-bitrate= audio-samplerate= av-sync=";

/// rpicam-apps v1.4.1 (2023-11): the one whose libav encoder finds no profiles.
const RPICAM_1_4_1: &str = "help,h! version! list-cameras! camera= verbose,v! config,c! \
    info-text= width= height= timeout,t= output,o= post-process-file= nopreview,n! preview,p= \
    fullscreen,f! qt-preview! hflip! vflip! rotation= roi= shutter= analoggain= gain= \
    metering= exposure= ev= awb= awbgains= flush! wrap= brightness= contrast= saturation= \
    sharpness= framerate= denoise= viewfinder-width= viewfinder-height= tuning-file= \
    lores-width= lores-height= mode= viewfinder-mode= buffer-count= viewfinder-buffer-count= \
    no-raw! autofocus-mode= autofocus-range= autofocus-speed= autofocus-window= \
    lens-position= hdr! metadata= metadata-format= flicker-period= bitrate,b= profile= level= \
    intra,g= inline! codec= save-pts= quality,q= listen,l! keypress,k! signal,s! initial,i= \
    split! segment= circular! frames= libav-video-codec= libav-video-codec-opts= \
    libav-format= libav-audio! audio-codec= audio-source= audio-device= audio-channels= \
    audio-bitrate= audio-samplerate= av-sync=";

/// libcamera-apps as Raspberry Pi OS Bullseye first shipped them (commit 3300790,
/// 2021-11), which print `--help` on stderr.
const LIBCAMERA_2021_11: &str = "help,h! version! verbose,v! config,c= info-text= width= \
    height= timeout,t= output,o= post-process-file= rawfull! nopreview,n! preview,p= \
    fullscreen,f! qt-preview! hflip! vflip! rotation= roi= shutter= analoggain= gain= \
    metering= exposure= ev= awb= awbgains= flush! wrap= brightness= contrast= saturation= \
    sharpness= framerate= denoise= viewfinder-width= viewfinder-height= tuning-file= \
    lores-width= lores-height= bitrate,b= profile= level= intra,g= inline! codec= save-pts= \
    quality,q= listen,l! keypress,k! signal,s! initial,i= split! segment= circular!";

/// The first libcamera-vid (commit b1ca899, 2021-01), before `--denoise` (2021-02).
const LIBCAMERA_2021_01: &str = "help,h! verbose,v! width= height= timeout,t= output,o= \
    rawfull! nopreview,n! preview,p= fullscreen,f! hflip! vflip! rotation= roi= shutter= \
    analoggain= gain= metering= exposure= ev= awb= awbgains= flush! wrap= brightness= \
    contrast= saturation= sharpness= framerate= bitrate,b= profile= level= intra,g= inline! \
    codec= save-pts= quality,q= listen,l! keypress,k! signal,s! initial,i= split! segment= \
    circular!";

/// raspivid (userland): `name,abbreviation` as its command tables have them.
const RASPIVID: &str = "bitrate,b= timeout,t= demo,d= framerate,fps= penc,e! intra,g= \
    profile,pf= timed,td! signal,s! keypress,k! initial,i= qp,qp= inline,ih! segment,sg= \
    wrap,wr= start,sn= split,sp! circular,c! vectors,x= irefresh,if= flush,fl! \
    save-pts,pts= codec,cd= level,lev= raw,r= raw-format,rf= listen,l! spstimings,stm! \
    help,?! width,w= height,h= output,o= verbose,v! camselect,cs= mode,md= gpsdexif,gps! \
    preview,p= fullscreen,f! opacity,op= nopreview,n! dispnum,dn= sharpness,sh= contrast,co= \
    brightness,br= saturation,sa= ISO,ISO= vstab,vs! ev,ev= exposure,ex= flicker,fli= awb,awb= \
    imxfx,ifx= colfx,cfx= metering,mm= rotation,rot= hflip,hf! vflip,vf! roi,roi= \
    shutter,ss= awbgains,awbg= drc,drc= annotate,a= stereo,3d= annotateex,ae= \
    analoggain,ag= digitalgain,dg= settings,set! focus,fw!";

/// The values the Pi 4's hardware encoder and libcamera take
/// (encoder/h264_encoder.cpp, core/rpicam_app.cpp), with their refusals.
const VC4_VALUE_CHECKS: &str = r#"    '--profile') case "$2" in baseline|main|high) ;; *) echo "ERROR: *** no such profile $2 ***" >&2; exit 255;; esac; shift 2;;
    '--level') case "$2" in 4|4.1|4.2) ;; *) echo "ERROR: *** no such level $2 ***" >&2; exit 255;; esac; shift 2;;
    '--denoise') case "$2" in auto|off|cdn_off|cdn_fast|cdn_hq) ;; *) echo "ERROR: *** Invalid denoise mode $2 ***" >&2; exit 255;; esac; shift 2;;
    '--codec') case "$2" in h264|mjpeg|yuv420|libav) ;; *) echo "ERROR: *** Unrecognised codec $2 ***" >&2; exit 255;; esac; shift 2;;
    '--rotation') case "$2" in 0|180) ;; *) echo "ERROR: *** illegal rotation value ***" >&2; exit 255;; esac; shift 2;;
    '--camera') case "$2" in 0|1) ;; *) echo "ERROR: *** selected camera is not available ***" >&2; exit 255;; esac; shift 2;;
"#;

/// The picture nalcast asks for.
const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const SETTINGS: [&str; 10] = [
    "--width",
    "320",
    "--height",
    "240",
    "--fps",
    "30",
    "--bitrate",
    "500000",
    "--keyframe-interval",
    "10",
];

const PI_4: &str = "Raspberry Pi 4 Model B Rev 1.4";
const PI_5: &str = "Raspberry Pi 5 Model B Rev 1.0";

/// One option of a table.
struct Opt {
    long: String,
    short: Option<String>,
    takes_value: bool,
}

fn options(table: &str) -> Vec<Opt> {
    table
        .split_whitespace()
        .map(|entry| {
            let (names, takes_value) = match entry.strip_suffix('=') {
                Some(names) => (names, true),
                None => (entry.trim_end_matches('!'), false),
            };
            let (long, short) = match names.split_once(',') {
                Some((long, short)) => (long.to_owned(), Some(short.to_owned())),
                None => (names.to_owned(), None),
            };
            Opt {
                long,
                short,
                takes_value,
            }
        })
        .collect()
}

/// Which app family a fake imitates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// rpicam-vid and libcamera-vid (boost::program_options).
    Libcamera,
    /// raspivid.
    Raspivid,
}

/// A help listing laid out like the real app's.
fn help_text(family: Family, opts: &[Opt]) -> String {
    match family {
        Family::Libcamera => {
            // boost::program_options with 120 columns: the description at column 40,
            // on its own line when the option column is too wide, wrapped lines
            // indented to it.
            let mut out = String::from("Valid options are:\n");
            for o in opts {
                let mut col = match &o.short {
                    Some(s) => format!("-{s} [ --{} ]", o.long),
                    None => format!("--{}", o.long),
                };
                col.push_str(if o.takes_value {
                    " arg"
                } else {
                    " [=arg(=1)] (=0)"
                });
                let desc = if o.long == "camera" {
                    format!(
                        "Chooses the camera to use. To list the available indexes, use the\n{:40}--list-cameras option.",
                        ""
                    )
                } else {
                    format!("what --{} does", o.long)
                };
                if col.len() > 36 {
                    out.push_str(&format!("  {col}\n{:40}{desc}\n", ""));
                } else {
                    out.push_str(&format!("  {col:<38}{desc}\n"));
                }
            }
            out
        }
        Family::Raspivid => {
            let mut out = String::from(
                "\n\"raspivid\" Camera App (commit 7cbfbd3 Tainted)\n\n\
                 Display camera output to display, and optionally saves an H264 capture at requested bitrate\n\n\n\
                 usage: raspivid [options]\n\nImage parameter commands\n\n",
            );
            for o in opts {
                let short = o.short.as_deref().unwrap_or_default();
                out.push_str(&format!("-{short}, --{}\t: what it does\n", o.long));
            }
            out.push_str("\n\nH264 Profile options :\nbaseline,main,high\n\n");
            out
        }
    }
}

/// A fake camera app.
struct Fake<'a> {
    /// Its file name.
    app: &'a str,
    family: Family,
    /// Its options (one of the tables above).
    table: &'a str,
    /// Whether `--help` goes to stderr (libcamera-apps from 2021-10 to 2022-07).
    help_on_stderr: bool,
    /// Shell run for `--help` after the listing is printed (e.g. hanging).
    on_help: &'a str,
    /// `case` arms tried before the table's: value checks, refusals.
    arms: &'a str,
    /// Shell run once the options are accepted, before playing (e.g. failing).
    before_play: &'a str,
}

impl Fake<'_> {
    fn rpicam(table: &str) -> Fake<'_> {
        Fake {
            app: "rpicam-vid",
            family: Family::Libcamera,
            table,
            help_on_stderr: false,
            on_help: "",
            arms: VC4_VALUE_CHECKS,
            before_play: "",
        }
    }

    /// Writes the fake into `dir/bin`, with its listing beside it. It appends each
    /// run's arguments to `dir/APP.runs` and a line per `--help` to `dir/APP.helps`.
    fn install(&self, dir: &Path) {
        let opts = options(self.table);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let listing = dir.join(format!("{}.help", self.app));
        std::fs::write(&listing, help_text(self.family, &opts)).expect("write listing");
        let forms = |o: &Opt| {
            let mut f = vec![format!("'--{}'", o.long)];
            f.extend(o.short.iter().map(|s| format!("'-{s}'")));
            f.join("|")
        };
        let pick = |value: bool| {
            opts.iter()
                .filter(|o| o.takes_value == value)
                .map(forms)
                .collect::<Vec<_>>()
                .join("|")
        };
        let help = opts
            .iter()
            .find(|o| o.long == "help")
            .map(forms)
            .expect("a help option");
        // What the real app says of an option it lacks, or of one without its value.
        let (unknown, missing) = match self.family {
            Family::Libcamera => (
                r#"echo "ERROR: *** unrecognised option '$1' ***" >&2; exit 255"#,
                r#"echo "ERROR: *** the required argument for option '$1' is missing ***" >&2; exit 255"#,
            ),
            Family::Raspivid => (
                r#"echo "Invalid command line option ($1)" >&2; exit 64"#,
                r#"echo "Invalid command line option ($1)" >&2; exit 64"#,
            ),
        };
        // A value check only for an option this version has.
        let arms: String = self
            .arms
            .lines()
            .filter(|arm| {
                let named = arm
                    .trim_start()
                    .trim_start_matches('\'')
                    .trim_start_matches('-');
                opts.iter()
                    .any(|o| named.starts_with(&format!("{}'", o.long)))
            })
            .map(|arm| format!("{arm}\n"))
            .collect();
        let d = dir.display();
        let app = self.app;
        let to = if self.help_on_stderr { " >&2" } else { "" };
        let script = format!(
            r#"#!/bin/sh
# A fake {app} for nalcast's tests.
d='{d}'
case "$1" in {help}) echo >> "$d/{app}.helps"; cat "$d/{app}.help"{to}; {on_help} exit 0;; esac
echo "$*" >> "$d/{app}.runs"
while [ $# -gt 0 ]; do
  case "$1" in
{arms}    {values}) if [ $# -lt 2 ]; then {missing}; fi; shift 2;;
    {flags}) shift;;
    *) {unknown};;
  esac
done
{before_play}
while :; do cat "$d/clip.h264" || exit 1; sleep 0.2; done
"#,
            on_help = self.on_help,
            values = pick(true),
            flags = pick(false),
            before_play = self.before_play,
        );
        let path = bin.join(app);
        std::fs::write(&path, script).expect("write fake");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// A test's directory with the clip the fakes play.
fn setup(name: &str) -> PathBuf {
    let dir = temp_dir(&format!("rpicam-{name}"));
    // Ten frames, a keyframe first: every pass of the loop decodes on its own.
    write_h264(&dir.join("clip.h264"), WIDTH, HEIGHT, 10, 10);
    dir
}

/// What nalcast logs, line by line.
struct Log(mpsc::UnboundedReceiver<String>);

impl Log {
    /// Waits for a line containing `needle` and returns it.
    async fn line_with(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.0.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line with {needle:?}"),
        }
    }
}

/// Starts nalcast on `--source rpicam` with `dir/bin` first on PATH, on a board
/// of this `model`.
fn start(dir: &Path, model: &str) -> (Server, Log) {
    start_with(dir, model, &[])
}

/// [`start`] with more of nalcast's options.
fn start_with(dir: &Path, model: &str, extra: &[&str]) -> (Server, Log) {
    let model_file = dir.join("model");
    std::fs::write(&model_file, format!("{model}\0")).expect("write model");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nalcast"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--legacy-listen",
        "off",
        "--source",
        "rpicam",
    ])
    .args(SETTINGS)
    .args(extra)
    .env(
        "PATH",
        format!("{}:/usr/bin:/bin", dir.join("bin").display()),
    )
    .env("NALCAST_DEVICE_MODEL_PATH", &model_file)
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut server = Server::from_command(cmd);
    let stderr = server.child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    (server, Log(rx))
}

/// The arguments of each run of the fake `app`.
fn runs(dir: &Path, app: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{app}.runs")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// How often the fake `app` was asked for `--help`.
fn helps(dir: &Path, app: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{app}.helps")))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Watches `/ws` until `pictures` pictures have decoded, each the size asked for.
async fn pictures_decode(server: &Server, pictures: usize) {
    let mut ws = connect(&server.url("/ws")).await;
    let mut decoder = Decoder::new().expect("openh264 decoder");
    let (mut info, mut decoded) = (None, 0);
    while decoded < pictures {
        match next_framed(&mut ws, Duration::from_secs(15)).await {
            Some(ServerMessage::StreamInfo(i)) => info = Some((i.width, i.height, i.baseline)),
            Some(ServerMessage::AccessUnit { data, .. }) => {
                assert_eq!(info, Some((WIDTH, HEIGHT, true)), "stream-info first");
                if let Some(yuv) = decoder.decode(&data).expect("decodable access unit") {
                    assert_eq!(yuv.dimensions(), (WIDTH as usize, HEIGHT as usize));
                    decoded += 1;
                }
            }
            Some(_) => {}
            None => panic!("{decoded} of {pictures} pictures decoded, then nothing"),
        }
    }
}

/// The reason of the next `source-lost` a `/ws` viewer is told.
async fn lost_reason(server: &Server) -> String {
    let mut ws = connect(&server.url("/ws")).await;
    loop {
        match next_framed(&mut ws, Duration::from_secs(20)).await {
            Some(ServerMessage::Status(s)) if s.name() == "source-lost" => {
                return s.reason().map(str::to_owned).expect("a reason")
            }
            Some(_) => {}
            None => panic!("no source-lost status"),
        }
    }
}

/// `/api/stream`'s reason.
async fn api_reason(server: &Server) -> Option<String> {
    let (status, body) = http_get(server.addr, "/api/stream").await.expect("api");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    json["reason"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_current_rpicam_vid_on_a_pi_4_streams_with_every_option() {
    let dir = setup("current");
    Fake::rpicam(RPICAM_1_13_0).install(&dir);
    let (server, mut log) = start(&dir, PI_4);
    log.line_with("with --low-latency").await;
    pictures_decode(&server, 15).await;
    assert_eq!(
        runs(&dir, "rpicam-vid")[0],
        "-t 0 -n --codec h264 --profile baseline --inline --flush --low-latency --denoise cdn_off \
         --width 320 --height 240 --framerate 30 --bitrate 500000 --intra 10 -o -"
    );
    assert_eq!(helps(&dir, "rpicam-vid"), 1);
}

#[tokio::test]
async fn the_second_camera_of_a_pi_5_turned_and_mirrored_as_the_app_takes_it() {
    let dir = setup("second-camera");
    Fake::rpicam(RPICAM_1_13_0).install(&dir);
    let (server, _log) = start_with(
        &dir,
        PI_5,
        &["--camera", "1", "--rotation", "180", "--hflip", "on"],
    );
    pictures_decode(&server, 15).await;
    let run = &runs(&dir, "rpicam-vid")[0];
    assert!(
        run.ends_with(" --rotation 180 --hflip --camera 1 -o -"),
        "{run}"
    );
}

#[tokio::test]
async fn rpicam_vid_1_5_gets_no_low_latency_and_is_asked_for_its_options_once() {
    let dir = setup("1-5-3");
    let mut fake = Fake::rpicam(RPICAM_1_5_3);
    // It stops after one pass of the clip, so nalcast restarts it.
    fake.before_play = r#"cat "$d/clip.h264"; exit 0"#;
    fake.install(&dir);
    let (server, mut log) = start(&dir, PI_4);
    log.line_with("without --low-latency").await;
    pictures_decode(&server, 5).await;
    log.line_with("source lost: camera process exited with status 0")
        .await;
    log.line_with("source lost: camera process exited with status 0")
        .await;
    let runs = runs(&dir, "rpicam-vid");
    assert!(runs.len() >= 2, "{runs:?}");
    for run in &runs {
        assert!(!run.contains("--low-latency"), "{run}");
        assert!(run.contains("--profile baseline --inline --flush"), "{run}");
    }
    assert_eq!(
        helps(&dir, "rpicam-vid"),
        1,
        "asked once, not at every start"
    );
}

#[tokio::test]
async fn rpicam_vid_on_a_pi_5_is_asked_for_baseline() {
    let dir = setup("pi5");
    let mut fake = Fake::rpicam(RPICAM_1_13_0);
    // libav's profile names (libx264 through rpicam-apps' libav encoder).
    fake.arms = r#"    '--profile') case "$2" in baseline|main|high|constrained*|extended|high10|high422|high444*) ;; *) echo "ERROR: *** libav: no such profile $2 ***" >&2; exit 255;; esac; shift 2;;
"#;
    fake.install(&dir);
    let (server, mut log) = start(&dir, PI_5);
    let line = log.line_with("no hardware H.264 encoder").await;
    assert!(line.contains(PI_5), "{line}");
    assert!(line.contains("--profile baseline"), "{line}");
    pictures_decode(&server, 15).await;
    let run = &runs(&dir, "rpicam-vid")[0];
    assert!(
        run.contains("--profile baseline") && run.contains("--low-latency"),
        "{run}"
    );
}

#[tokio::test]
async fn rpicam_vid_1_4_1_on_a_pi_5_refuses_baseline_and_runs_without_a_profile() {
    let dir = setup("pi5-1-4-1");
    let mut fake = Fake::rpicam(RPICAM_1_4_1);
    // v1.4.1 looked the profile up in libx264's own (empty) list.
    fake.arms = r#"    '--profile') echo "ERROR: *** libav: no such profile $2 ***" >&2; exit 255;;
"#;
    fake.install(&dir);
    let (server, mut log) = start(&dir, PI_5);
    let expected = "camera: rpicam-vid cannot make H.264 Baseline here (rpicam-vid said: \
                    \"ERROR: *** libav: no such profile baseline ***\"); nalcast asks for no \
                    profile from the next start: the stream will be High profile, which the \
                    page plays only with WebCodecs, over HTTPS (--tls self-signed); updating \
                    rpicam-apps brings Baseline back";
    log.line_with("this rpicam-vid has no --low-latency").await;
    let line = log.line_with("source lost: camera:").await;
    assert!(line.contains(expected), "{line}");
    pictures_decode(&server, 15).await;
    let runs = runs(&dir, "rpicam-vid");
    assert!(runs[0].contains("--profile baseline"), "{runs:?}");
    assert!(!runs[1].contains("--profile"), "{runs:?}");
}

#[tokio::test]
async fn libcamera_vid_of_bullseye_is_used_when_there_is_no_rpicam_vid() {
    let dir = setup("bullseye");
    let mut fake = Fake::rpicam(LIBCAMERA_2021_11);
    fake.app = "libcamera-vid";
    fake.help_on_stderr = true;
    fake.install(&dir);
    let (server, mut log) = start(&dir, PI_4);
    log.line_with("libcamera-vid (").await;
    pictures_decode(&server, 15).await;
    assert_eq!(
        runs(&dir, "libcamera-vid")[0],
        "-t 0 -n --codec h264 --profile baseline --inline --flush --denoise cdn_off \
         --width 320 --height 240 --framerate 30 --bitrate 500000 --intra 10 -o -"
    );
}

#[tokio::test]
async fn raspivid_is_used_when_neither_is_there() {
    let dir = setup("raspivid");
    Fake {
        app: "raspivid",
        family: Family::Raspivid,
        table: RASPIVID,
        help_on_stderr: false,
        on_help: "",
        arms: "",
        before_play: "",
    }
    .install(&dir);
    let (server, _log) = start(&dir, "Raspberry Pi 3 Model B Rev 1.2");
    pictures_decode(&server, 15).await;
    assert_eq!(
        runs(&dir, "raspivid")[0],
        "-t 0 -n -pf baseline -ih -fl -w 320 -h 240 -fps 30 -b 500000 -g 10 -o -"
    );
}

#[tokio::test]
async fn a_hanging_help_times_out_and_an_option_the_app_lacks_is_dropped() {
    let dir = setup("hang");
    // The first libcamera-vid (2021-01) has no --denoise; its --help hangs here (as
    // an app stuck on a broken camera stack would), so nalcast cannot know that.
    let mut fake = Fake::rpicam(LIBCAMERA_2021_01);
    fake.app = "libcamera-vid";
    fake.on_help = "sleep 60;";
    fake.install(&dir);
    let (server, mut log) = start(&dir, PI_4);
    log.line_with("libcamera-vid --help: no answer within 5 s")
        .await;
    let expected = "camera: libcamera-vid does not know the option --denoise (libcamera-vid \
                    said: \"ERROR: *** unrecognised option '--denoise' ***\"); nalcast leaves \
                    it out from the next start";
    assert_eq!(lost_reason(&server).await, expected);
    pictures_decode(&server, 15).await;
    let runs = runs(&dir, "libcamera-vid");
    assert!(runs[0].contains("--denoise"), "{runs:?}");
    assert!(!runs[1].contains("--denoise"), "{runs:?}");
    assert_eq!(helps(&dir, "libcamera-vid"), 1);
}

#[tokio::test]
async fn each_way_the_camera_fails_is_one_clear_line() {
    let cases = [
        (
            "no-camera",
            r#"echo "[0:00:01.557112345] [1017]  INFO Camera camera_manager.cpp:284 libcamera v0.2.0+120-eb00c13d" >&2
echo "ERROR: *** no cameras available ***" >&2; exit 255"#,
            "camera: no camera found (rpicam-vid said: \"ERROR: *** no cameras available ***\"); \
             check the ribbon cable and 'rpicam-hello --list-cameras'",
        ),
        (
            "busy",
            r#"echo "[0:19:06.419783286] [2746]  INFO Camera camera.cpp:839 Pipeline handler in use by another process" >&2
echo "ERROR: *** failed to acquire camera /base/soc/i2c0mux/i2c@1/imx708@1a ***" >&2; exit 255"#,
            "camera: camera busy, in use by another process (rpicam-vid said: \"ERROR: *** failed \
             to acquire camera /base/soc/i2c0mux/i2c@1/imx708@1a ***\"); stop the other program \
             ('sudo fuser -v /dev/media* /dev/video*' shows which)",
        ),
        (
            "size",
            r#"echo "ERROR: *** failed to configure streams ***" >&2; exit 255"#,
            "camera: size or format not supported (rpicam-vid said: \"ERROR: *** failed to \
             configure streams ***\"); try a smaller --width and --height or a lower --fps",
        ),
        (
            "unknown",
            r#"echo "ERROR: *** something nobody has seen yet ***" >&2; exit 255"#,
            "camera process exited with status 255 (rpicam-vid said: \"ERROR: *** something \
             nobody has seen yet ***\")",
        ),
    ];
    for (name, fails, expected) in cases {
        let dir = setup(&format!("fails-{name}"));
        let mut fake = Fake::rpicam(RPICAM_1_13_0);
        fake.before_play = fails;
        fake.install(&dir);
        let (server, mut log) = start(&dir, PI_4);
        assert_eq!(lost_reason(&server).await, expected, "{name}");
        assert_eq!(
            api_reason(&server).await.as_deref(),
            Some(expected),
            "{name}"
        );
        let line = log.line_with("source lost:").await;
        assert!(line.contains(&format!("source lost: {expected}")), "{line}");
    }
}
