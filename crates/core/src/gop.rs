//! The GOP cache: every frame since the last keyframe, so a new viewer starts at once.
use std::sync::Arc;

use crate::SharedAu;

/// Frames since the last keyframe, bounded in bytes.
#[derive(Debug)]
pub struct GopCache {
    frames: Vec<Arc<SharedAu>>,
    bytes: usize,
    max_bytes: usize,
}

impl GopCache {
    /// An empty cache holding at most `max_bytes` of access units.
    pub fn new(max_bytes: usize) -> Self {
        GopCache {
            frames: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds a frame. A keyframe starts a new GOP. A GOP that outgrows the limit is
    /// dropped whole: a partial GOP would not decode, so new viewers then wait for
    /// the next keyframe instead.
    pub fn push(&mut self, au: Arc<SharedAu>) {
        if au.keyframe() {
            self.clear();
        } else if self.frames.is_empty() {
            return;
        } else if self.bytes + au.len() > self.max_bytes {
            self.clear();
            return;
        }
        self.bytes += au.len();
        self.frames.push(au);
    }

    /// Forgets every frame: `push` does when a keyframe starts a new GOP or a GOP
    /// outgrows the limit. A source restart does not clear the cache: the hub only
    /// tells viewers the source is lost, so the old GOP stays (a viewer joining
    /// meanwhile gets it) until the restarted source's first frame replaces it. That
    /// frame is a keyframe: each run of a source has a fresh assembler, which drops
    /// what comes before one.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// The cached frames, keyframe first; empty when no complete GOP is held.
    pub fn frames(&self) -> &[Arc<SharedAu>] {
        &self.frames
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
