//! The built-in `test` source: draws the test picture and encodes it with openh264
//! (Baseline) in real time, on its own thread because encoding is CPU-bound.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use crate::pattern::Picture;
use crate::{SourceError, SourceOptions, VideoSettings};
use nalcast_core::clock::wall_us;
use nalcast_core::ingest::Ingest;
use nalcast_core::Hub;

/// Encodes the test pattern; owns the encoder and the picture buffer.
pub struct TestPattern {
    encoder: Encoder,
    picture: Picture,
    frame: u32,
    annexb: Vec<u8>,
}

impl TestPattern {
    /// An encoder for these settings.
    pub fn new(v: &VideoSettings) -> Result<Self, String> {
        let config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(v.bitrate))
            .max_frame_rate(FrameRate::from_hz(v.fps as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(v.keyframe_interval))
            .complexity(Complexity::Low)
            .scene_change_detect(false)
            // Analysis meant for camera pictures, wasted on a synthetic one: without
            // them the test source costs about a tenth less CPU (16 % -> 14 % of a
            // core at 720p30, /proc/PID/stat over 10 s).
            .background_detection(false)
            .adaptive_quantization(false)
            // openh264 only honours the bitrate when it may skip frames; at our
            // bitrates it has not needed to, and a skipped frame is just not sent.
            .skip_frames(true)
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the openh264 encoder: {e}"))?;
        Ok(TestPattern {
            encoder,
            picture: Picture::new(v.width as usize, v.height as usize),
            frame: 0,
            annexb: Vec::new(),
        })
    }

    /// Draws and encodes the next frame captured at `capture_us`; returns its Annex-B
    /// bytes (one whole access unit). `keyframe` forces an IDR.
    pub fn next_frame(&mut self, capture_us: u64, keyframe: bool) -> Result<&[u8], String> {
        self.picture.draw(self.frame, capture_us);
        self.frame = self.frame.wrapping_add(1);
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let p = &self.picture;
        let yuv = YUVSlices::new(
            (&p.y, &p.u, &p.v),
            (p.width, p.height),
            (p.width, p.width / 2, p.width / 2),
        );
        let bitstream = self
            .encoder
            .encode(&yuv)
            .map_err(|e| format!("openh264 encode failed: {e}"))?;
        self.annexb.clear();
        bitstream.write_vec(&mut self.annexb);
        Ok(&self.annexb)
    }
}

/// Runs the test source until it fails or the returned future is dropped.
pub async fn run(opts: &SourceOptions, hub: &Arc<Hub>) -> Result<(), SourceError> {
    let stop = Arc::new(AtomicBool::new(false));
    // Dropping this future (shutdown) stops the thread.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _guard = StopOnDrop(stop.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (opts, hub) = (opts.clone(), hub.clone());
    std::thread::Builder::new()
        .name("test-pattern".into())
        .spawn(move || {
            let _ = done_tx.send(encode_loop(&opts, hub, &stop));
        })
        .map_err(|e| SourceError::Retry(format!("cannot start test pattern thread: {e}")))?;
    match done_rx.await {
        Ok(result) => result.map_err(SourceError::Retry),
        Err(_) => Err(SourceError::Retry("test pattern thread died".into())),
    }
}

fn encode_loop(opts: &SourceOptions, hub: Arc<Hub>, stop: &AtomicBool) -> Result<(), String> {
    let mut pattern = TestPattern::new(&opts.video)?;
    let mut ingest = Ingest::new(hub.clone(), opts.max_nal_size);
    let interval = Duration::from_secs_f64(1.0 / f64::from(opts.video.fps.max(1)));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let capture_us = wall_us();
        let bytes = pattern.next_frame(capture_us, hub.take_keyframe_request())?;
        ingest.push(bytes, capture_us);
        ingest.end_of_access_unit(capture_us);
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > interval * 4 {
            // Far behind (machine busy): skip ahead rather than burst.
            next = now;
        }
    }
    Ok(())
}
