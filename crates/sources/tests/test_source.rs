//! The test source, checked with a real decoder: frames decode and carry their stamps.
use nalcast_core::ingest::Splitter;
use nalcast_core::stamp::Stamp;
use nalcast_sources::test_pattern::TestPattern;
use nalcast_sources::VideoSettings;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

fn settings(width: u32, height: u32, keyframe_interval: u32) -> VideoSettings {
    VideoSettings {
        width,
        height,
        fps: 30,
        // Generous, so that rate control never skips a frame here.
        bitrate: 8_000_000,
        keyframe_interval,
    }
}

#[test]
fn decoded_test_source_shows_its_frame_numbers_in_order() {
    let base_us = 1_790_000_000_000_000u64;
    for (w, h) in [(320, 240), (1280, 720)] {
        let mut pattern = TestPattern::new(&settings(w, h, 10)).expect("encoder");
        let mut splitter = Splitter::new(1 << 20, &Default::default());
        let mut decoder = Decoder::new().expect("decoder");
        let mut aus = Vec::new();
        let mut seen = Vec::new();
        for i in 0..25u64 {
            let t = base_us + i * 33_333;
            let bytes = pattern.next_frame(t, false).expect("encode").to_vec();
            splitter.push(&bytes, t, &mut aus);
            splitter.end_of_access_unit(t, &mut aus);
            for au in aus.drain(..) {
                assert_eq!((au.params.info.width, au.params.info.height), (w, h));
                assert_eq!(au.keyframe, i % 10 == 0, "frame {i}");
                if let Some(yuv) = decoder.decode(&au.data).expect("decodes") {
                    let (dw, _) = yuv.dimensions();
                    let (stride, _, _) = yuv.strides();
                    let stamp = Stamp::read(yuv.y(), dw, stride).expect("stamp readable");
                    assert_eq!(
                        stamp.capture_us_near(t),
                        base_us + u64::from(stamp.frame) * 33_333
                    );
                    seen.push(stamp.frame);
                }
            }
        }
        assert!(seen.len() >= 24, "{w}x{h}: decoded {} frames", seen.len());
        assert_eq!(seen, (0..seen.len() as u32).collect::<Vec<_>>(), "{w}x{h}");
    }
}

#[test]
fn keyframe_on_demand() {
    let mut pattern = TestPattern::new(&settings(320, 240, 1000)).expect("encoder");
    let mut splitter = Splitter::new(1 << 20, &Default::default());
    let mut aus = Vec::new();
    for i in 0..6u64 {
        let bytes = pattern.next_frame(i, i == 4).expect("encode").to_vec();
        splitter.push(&bytes, i, &mut aus);
        splitter.end_of_access_unit(i, &mut aus);
    }
    let keyframes: Vec<bool> = aus.iter().map(|a| a.keyframe).collect();
    assert_eq!(keyframes, [true, false, false, false, true, false]);
}
