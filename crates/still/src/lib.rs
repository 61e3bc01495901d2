//! Stills: the newest picture of a stream as a JPEG, for Home Assistant, OctoPrint
//! and anything else that polls a snapshot URL.
//!
//! A stream's cached GOP (its last keyframe up to the newest access unit) is
//! decoded with openh264 — already linked for the test pattern, and decoding on
//! the CPU of any Pi — and the picture encoded as a JPEG with jpeg-encoder (pure
//! Rust: nothing more to cross-compile for the packages), straight from its YUV
//! planes. Each picture is decoded and encoded once: [`Stills`] remembers the last
//! JPEGs by sequence number and size, and keeps its decoder between requests, so a
//! Baseline stream (a Pi camera, the test pattern) decodes only the frames since the
//! last request. A Main or High stream may reorder pictures (B-frames): its GOP is
//! decoded afresh up to the newest access unit, the decoder flushed, and the last
//! picture in display order taken. openh264 decodes those whole access units with
//! B-frames (its per-NAL "flush after decode" mode did not: 22 of 60 pictures).
//!
//! No I/O and no clock: the caller hands over the GOP and serialises requests (one
//! decode at a time per stream).
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8;
use fast_image_resize::{ResizeAlg, ResizeOptions, Resizer};
use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType};
use nalcast_core::SharedAu;
use nalcast_h264::PocCounter;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

/// JPEG quality when none is asked for.
pub const DEFAULT_QUALITY: u8 = 80;
/// JPEGs remembered per stream (different sizes or qualities of recent pictures).
const REMEMBERED: usize = 4;

/// What is asked of a still.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// Width in pixels (even, at most the picture's; the height keeps the aspect);
    /// `None`: the picture's own size.
    pub width: Option<u32>,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
}

impl Default for Want {
    fn default() -> Self {
        Want {
            width: None,
            quality: DEFAULT_QUALITY,
        }
    }
}

/// A JPEG of one picture.
#[derive(Clone, Debug)]
pub struct Jpeg {
    /// The JPEG file.
    pub bytes: Bytes,
    /// The access unit it shows.
    pub seq: u32,
    /// When that picture was captured, µs since the epoch.
    pub capture_us: u64,
    /// Its size.
    pub width: u32,
    /// Its size.
    pub height: u32,
}

/// Why there is no still.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StillError {
    /// The stream has no picture yet (or its GOP does not start with a keyframe).
    #[error("no picture yet")]
    NoPicture,
    /// The decoder refused the stream.
    #[error("the picture cannot be decoded: {0}")]
    Decode(String),
    /// The JPEG could not be made.
    #[error("the JPEG cannot be made: {0}")]
    Encode(String),
}

/// A decoded picture, its planes copied out of the decoder.
struct Picture {
    seq: u32,
    capture_us: u64,
    width: u32,
    height: u32,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl Picture {
    fn copy(yuv: &impl YUVSource, seq: u32, capture_us: u64) -> Picture {
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        let plane = |data: &[u8], stride: usize, w: usize, h: usize| {
            let mut out = Vec::with_capacity(w * h);
            for row in 0..h {
                out.extend_from_slice(&data[row * stride..row * stride + w]);
            }
            out
        };
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        Picture {
            seq,
            capture_us,
            width: w as u32,
            height: h as u32,
            y: plane(yuv.y(), sy, w, h),
            u: plane(yuv.u(), su, cw, ch),
            v: plane(yuv.v(), sv, cw, ch),
        }
    }

    /// The picture at `width` (even), the height keeping the aspect (even too).
    fn scaled(&self, width: u32) -> Result<Picture, StillError> {
        let height = ((u64::from(self.height) * u64::from(width) / u64::from(self.width)) as u32)
            .max(2)
            & !1;
        let mut resizer = Resizer::new();
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(
            fast_image_resize::FilterType::Bilinear,
        ));
        // Typed to one byte a pixel: the untyped `resize` instantiates the resizer
        // for every pixel type it knows, which made this crate 76 s of a cold
        // build (against 9 s typed).
        let mut plane = |data: &[u8], w: u32, h: u32, to_w: u32, to_h: u32| {
            let encode = |e: &dyn std::fmt::Display| StillError::Encode(e.to_string());
            let src = TypedImageRef::<U8>::from_buffer(w, h, data).map_err(|e| encode(&e))?;
            let mut out = vec![0u8; to_w as usize * to_h as usize];
            let mut dst =
                TypedImage::<U8>::from_buffer(to_w, to_h, &mut out).map_err(|e| encode(&e))?;
            resizer
                .resize_typed(&src, &mut dst, &options)
                .map_err(|e| encode(&e))?;
            Ok::<_, StillError>(out)
        };
        let (cw, ch) = (self.width.div_ceil(2), self.height.div_ceil(2));
        Ok(Picture {
            seq: self.seq,
            capture_us: self.capture_us,
            width,
            height,
            y: plane(&self.y, self.width, self.height, width, height)?,
            u: plane(&self.u, cw, ch, width / 2, height / 2)?,
            v: plane(&self.v, cw, ch, width / 2, height / 2)?,
        })
    }

    fn jpeg(&self, quality: u8) -> Result<Bytes, StillError> {
        let (Ok(w), Ok(h)) = (u16::try_from(self.width), u16::try_from(self.height)) else {
            return Err(StillError::Encode(
                "the picture is too large for a JPEG".into(),
            ));
        };
        let mut out = Vec::with_capacity(self.y.len() / 4);
        Encoder::new(&mut out, quality.clamp(1, 100))
            .encode_image(Planes { p: self, w, h })
            .map_err(|e| StillError::Encode(e.to_string()))?;
        Ok(Bytes::from(out))
    }
}

/// Video's limited range (Y 16-235, Cb and Cr 16-240, what cameras and encoders
/// send) to JPEG's full range (0-255): without it a still is washed out.
static LUMA_TO_FULL: std::sync::LazyLock<[u8; 256]> =
    std::sync::LazyLock::new(|| range_table(16.0, 219.0, 0.0));
static CHROMA_TO_FULL: std::sync::LazyLock<[u8; 256]> =
    std::sync::LazyLock::new(|| range_table(128.0, 224.0, 128.0));

fn range_table(from: f64, span: f64, to: f64) -> [u8; 256] {
    std::array::from_fn(|v| {
        ((v as f64 - from) * 255.0 / span + to)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// A picture's planes as jpeg-encoder reads them: a row at a time, as Y, Cb, Cr.
struct Planes<'a> {
    p: &'a Picture,
    w: u16,
    h: u16,
}

impl ImageBuffer for Planes<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.w
    }

    fn height(&self) -> u16 {
        self.h
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, row) = (usize::from(self.w), usize::from(y));
        let cw = w.div_ceil(2);
        let (luma, chroma) = (&*LUMA_TO_FULL, &*CHROMA_TO_FULL);
        buffers[0].extend(
            self.p.y[row * w..(row + 1) * w]
                .iter()
                .map(|&v| luma[usize::from(v)]),
        );
        let at = (row / 2) * cw;
        for x in 0..w {
            buffers[1].push(chroma[usize::from(self.p.u[at + x / 2])]);
            buffers[2].push(chroma[usize::from(self.p.v[at + x / 2])]);
        }
    }
}

/// One stream's stills: its decoder, its newest decoded picture and its last JPEGs.
#[derive(Default)]
pub struct Stills {
    decoder: Option<Decoder>,
    /// The keyframe the decoder started at, and the last access unit fed to it.
    fed: Option<(u32, u32)>,
    picture: Option<Picture>,
    jpegs: VecDeque<(u32, Want, Jpeg)>,
    /// The newest access unit the picture was brought up to.
    upto: Option<u32>,
    /// Access units decoded so far (for the metrics and tests).
    pub decoded: u64,
}

impl Stills {
    /// Stills of a stream with nothing decoded yet.
    pub fn new() -> Stills {
        Stills::default()
    }

    /// A JPEG of the newest picture of `gop` (the stream's cached GOP, keyframe
    /// first, in decode order), as `want` asks.
    pub fn jpeg(&mut self, gop: &[Arc<SharedAu>], want: Want) -> Result<Jpeg, StillError> {
        let (first, newest) = match (gop.first(), gop.last()) {
            (Some(first), Some(newest)) if first.keyframe() => (first, newest),
            _ => return Err(StillError::NoPicture),
        };
        if let Some((_, _, jpeg)) = self
            .jpegs
            .iter()
            .find(|(seq, w, _)| *seq == newest.seq && *w == want)
        {
            return Ok(jpeg.clone());
        }
        self.decode(gop, first.seq, newest.seq)?;
        let picture = self.picture.as_ref().ok_or(StillError::NoPicture)?;
        let jpeg = match want.width {
            Some(w) if w < picture.width => {
                let scaled = picture.scaled(w.max(2) & !1)?;
                make(&scaled, want.quality)?
            }
            _ => make(picture, want.quality)?,
        };
        if self.jpegs.len() == REMEMBERED {
            self.jpegs.pop_front();
        }
        self.jpegs.push_back((newest.seq, want, jpeg.clone()));
        Ok(jpeg)
    }

    /// Brings the newest picture up to `newest`.
    fn decode(
        &mut self,
        gop: &[Arc<SharedAu>],
        keyframe: u32,
        newest: u32,
    ) -> Result<(), StillError> {
        if self.upto == Some(newest) && self.picture.is_some() {
            return Ok(());
        }
        let params = &gop[0].au.params;
        // Without reordering (Baseline has no B-frames; an SPS may promise none) a
        // picture comes out as its access unit goes in, so the decoder goes on from
        // where it was within the same GOP.
        let in_order = params.info.baseline_compatible || !params.details.may_reorder();
        let resume = in_order
            && self
                .fed
                .is_some_and(|(k, last)| k == keyframe && last < newest);
        if !resume {
            let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
            self.decoder = Some(
                Decoder::with_api_config(OpenH264API::from_source(), config)
                    .map_err(|e| StillError::Decode(e.to_string()))?,
            );
            self.fed = None;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(StillError::NoPicture);
        };
        let from = self.fed.map(|(_, last)| last);
        for au in gop.iter().filter(|au| from.is_none_or(|f| au.seq > f)) {
            self.decoded += 1;
            let out = decoder
                .decode(&au.au.data)
                .map_err(|e| StillError::Decode(e.to_string()))?;
            if let Some(yuv) = out {
                if in_order {
                    self.picture = Some(Picture::copy(&yuv, au.seq, au.au.timestamp_us));
                }
            }
            self.fed = Some((keyframe, au.seq));
        }
        if !in_order {
            // The last picture in display order (the highest picture order count)
            // is the newest; the decoder is spent (flushed) and starts afresh.
            let mut order = PocCounter::new();
            let shown = gop
                .iter()
                .filter_map(|au| order.push(&au.au).ok().map(|p| (p.poc, au)))
                .max_by_key(|(poc, _)| *poc)
                .map(|(_, au)| (au.seq, au.au.timestamp_us));
            let pictures = decoder
                .flush_remaining()
                .map_err(|e| StillError::Decode(e.to_string()))?;
            if let (Some(last), Some((seq, at))) = (pictures.last(), shown) {
                self.picture = Some(Picture::copy(last, seq, at));
            }
            self.decoder = None;
            self.fed = None;
        }
        self.upto = Some(newest);
        Ok(())
    }
}

fn make(picture: &Picture, quality: u8) -> Result<Jpeg, StillError> {
    Ok(Jpeg {
        bytes: picture.jpeg(quality)?,
        seq: picture.seq,
        capture_us: picture.capture_us,
        width: picture.width,
        height: picture.height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scaling keeps what is where: a picture dark on the left and bright on the
    /// right, halved, is still dark on the left and bright on the right (each
    /// plane scaled, the sizes even and in proportion).
    #[test]
    fn a_scaled_picture_keeps_its_content_in_place() {
        let (w, h) = (64u32, 36u32);
        let side = |dark: u8, bright: u8, w: u32, h: u32| -> Vec<u8> {
            (0..h)
                .flat_map(|_| (0..w).map(move |x| if x < w / 2 { dark } else { bright }))
                .collect()
        };
        let picture = Picture {
            seq: 1,
            capture_us: 0,
            width: w,
            height: h,
            y: side(40, 200, w, h),
            u: side(100, 150, w / 2, h / 2),
            v: side(90, 160, w / 2, h / 2),
        };
        let small = picture.scaled(32).expect("scaled");
        assert_eq!((small.width, small.height), (32, 18));
        assert_eq!(small.y.len(), 32 * 18);
        assert_eq!((small.u.len(), small.v.len()), (16 * 9, 16 * 9));
        let row = &small.y[9 * 32..10 * 32];
        assert_eq!((row[2], row[29]), (40, 200), "{row:?}");
        assert_eq!((small.u[16 * 4 + 1], small.u[16 * 4 + 14]), (100, 150));
        assert_eq!((small.v[16 * 4 + 1], small.v[16 * 4 + 14]), (90, 160));
    }
}
