//! The GOP cache: every frame since the last keyframe, so a new viewer starts at once.
//!
//! Invariant, checked after every change in debug builds: the cache is empty or
//! starts with a keyframe and holds no other; `bytes` is the sum of the frames'
//! lengths; and it is at most `max_bytes` unless the cache is one keyframe alone
//! (a keyframe is kept whatever its size: a viewer can start from it).
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
    /// the next keyframe instead, and so do the frames until it comes.
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
        self.debug_check();
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

    /// The invariant (module docs), in debug builds.
    fn debug_check(&self) {
        debug_assert!(
            self.frames.first().is_none_or(|f| f.keyframe())
                && self.frames.iter().skip(1).all(|f| !f.keyframe()),
            "a GOP is one keyframe and the frames after it"
        );
        debug_assert_eq!(
            self.bytes,
            self.frames.iter().map(|f| f.len()).sum::<usize>(),
            "bytes counts every frame held"
        );
        debug_assert!(
            self.bytes <= self.max_bytes || self.frames.len() == 1,
            "over the limit only as one keyframe alone"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::unit;

    /// What a cache of `max` bytes holds after frames of (keyframe, bytes) are
    /// pushed in order, as (sequence numbers, bytes).
    fn after(max: usize, frames: &[(bool, usize)]) -> (Vec<u32>, usize) {
        let mut cache = GopCache::new(max);
        for (seq, &(key, len)) in frames.iter().enumerate() {
            cache.push(unit(seq as u32, key, len));
        }
        let seqs = cache.frames().iter().map(|f| f.seq).collect();
        (seqs, cache.bytes())
    }

    const K: bool = true;
    const D: bool = false;

    /// A case: its name, the limit, the frames pushed as (keyframe, bytes), and
    /// what stays: sequence numbers and bytes.
    type Case = (
        &'static str,
        usize,
        &'static [(bool, usize)],
        &'static [u32],
        usize,
    );

    #[test]
    fn push_and_evict() {
        let cases: &[Case] = &[
            ("empty", 100, &[], &[], 0),
            (
                "deltas before any keyframe are not kept",
                100,
                &[(D, 10), (D, 10)],
                &[],
                0,
            ),
            (
                "a keyframe starts the GOP",
                100,
                &[(D, 10), (K, 20), (D, 10)],
                &[1, 2],
                30,
            ),
            (
                "the next keyframe replaces it",
                100,
                &[(K, 20), (D, 10), (K, 30), (D, 5)],
                &[2, 3],
                35,
            ),
            (
                "exactly at the limit is kept",
                100,
                &[(K, 50), (D, 25), (D, 25)],
                &[0, 1, 2],
                100,
            ),
            (
                "one byte over drops the GOP",
                100,
                &[(K, 50), (D, 25), (D, 26)],
                &[],
                0,
            ),
            (
                "after an overflow, deltas wait for a keyframe",
                100,
                &[(K, 50), (D, 60), (D, 5), (K, 10), (D, 5)],
                &[3, 4],
                15,
            ),
            (
                "a keyframe over the limit is kept alone",
                100,
                &[(K, 150)],
                &[0],
                150,
            ),
            (
                "and dropped with the next delta",
                100,
                &[(K, 150), (D, 5), (D, 5)],
                &[],
                0,
            ),
            (
                "a keyframe after it starts again",
                100,
                &[(K, 150), (D, 5), (K, 10)],
                &[2],
                10,
            ),
        ];
        for &(name, max, frames, seqs, bytes) in cases {
            assert_eq!(after(max, frames), (seqs.to_vec(), bytes), "{name}");
        }
    }

    #[test]
    fn a_restart_clears_until_the_next_keyframe() {
        let mut cache = GopCache::new(1000);
        cache.push(unit(1, K, 100));
        cache.push(unit(2, D, 10));
        cache.clear();
        assert!(cache.frames().is_empty());
        assert_eq!(cache.bytes(), 0);
        cache.push(unit(3, D, 10));
        assert!(cache.frames().is_empty(), "a delta after a clear waits");
        cache.push(unit(4, K, 100));
        cache.push(unit(5, D, 10));
        let seqs: Vec<u32> = cache.frames().iter().map(|f| f.seq).collect();
        assert_eq!((seqs, cache.bytes()), (vec![4, 5], 110));
    }
}
