//! Per-viewer bounded queue. The hub pushes without ever waiting; a viewer that
//! falls behind loses what it has queued and resumes at the next keyframe.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::protocol::StreamState;
use crate::SharedAu;

/// How much a viewer's queue may hold before it is reset to the next keyframe.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most bytes of access units queued.
    pub max_bytes: usize,
    /// Oldest queued item may be at most this old.
    pub max_delay: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_bytes: 8 << 20,
            max_delay: Duration::from_millis(2000),
        }
    }
}

/// Something to send to a viewer.
#[derive(Clone, Debug)]
pub enum Item {
    /// A frame; `catch_up` when it comes from the GOP cache rather than live.
    Au {
        /// The access unit.
        au: Arc<SharedAu>,
        /// Sent on join from the GOP cache.
        catch_up: bool,
    },
    /// The viewer lost this many frames and resumes at the keyframe that follows.
    Skipped(u32),
    /// The source's state changed.
    Status(StreamState),
}

/// What happened to a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped because the viewer waits for a keyframe.
    Dropped,
    /// The queue overflowed and was reset; the viewer now waits for a keyframe
    /// (or resumed at once, when this frame was one).
    Overflowed,
}

/// The queue itself: plain synchronous logic, time passed in.
#[derive(Debug, Default)]
pub struct QueueState {
    items: VecDeque<(Item, Instant)>,
    bytes: usize,
    /// Bytes of catch-up access units queued (the GOP cache sent on join).
    catch_up_bytes: usize,
    /// A live keyframe came while catch-up was still queued, and replaced it.
    catch_up_overtaken: bool,
    waiting_for_keyframe: bool,
    lost: u32,
    closed: bool,
    /// Ends once what is queued (status messages only) has been taken.
    finishing: bool,
    /// Frames this viewer lost in all.
    pub total_lost: u64,
    /// How often the queue overflowed.
    pub overflows: u64,
}

impl QueueState {
    /// Queues a frame under `limits`, at time `now`.
    pub fn push_au(
        &mut self,
        au: Arc<SharedAu>,
        catch_up: bool,
        now: Instant,
        limits: &QueueLimits,
    ) -> Pushed {
        let mut outcome = Pushed::Queued;
        let too_old = self
            .items
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > limits.max_delay);
        if !self.waiting_for_keyframe && (too_old || self.bytes + au.len() > limits.max_bytes) {
            let dropped = self.drop_frames();
            self.lost = self.lost.saturating_add(dropped);
            self.waiting_for_keyframe = true;
            self.overflows += 1;
            outcome = Pushed::Overflowed;
        }
        if au.keyframe() && !catch_up && self.catch_up_bytes > 0 {
            // A new keyframe while the join's burst is still queued: the viewer
            // is live sooner from here than after the rest of the burst.
            self.skip_catch_up();
            self.catch_up_overtaken = true;
        }
        if self.waiting_for_keyframe {
            if !au.keyframe() {
                self.lost = self.lost.saturating_add(1);
                self.total_lost += 1;
                return if outcome == Pushed::Queued {
                    Pushed::Dropped
                } else {
                    outcome
                };
            }
            self.waiting_for_keyframe = false;
            if self.lost > 0 {
                self.items.push_back((Item::Skipped(self.lost), now));
                self.lost = 0;
            }
        }
        self.bytes += au.len();
        if catch_up {
            self.catch_up_bytes += au.len();
        }
        self.items.push_back((Item::Au { au, catch_up }, now));
        outcome
    }

    /// Drops every queued access unit (keeps status items), returning how many.
    fn drop_units(&mut self) -> u32 {
        let before = self.items.len();
        self.items
            .retain(|(item, _)| matches!(item, Item::Status(_)));
        self.bytes = 0;
        self.catch_up_bytes = 0;
        (before - self.items.len()) as u32
    }

    /// Ends the viewer's catch-up early: what is queued of it (and any live frame
    /// behind it) is dropped, and the viewer resumes at the next keyframe with a
    /// skipped message first. Returns how many access units were dropped.
    /// A catch-up giving way is no loss of live frames: not counted in `total_lost`.
    pub fn skip_catch_up(&mut self) -> u32 {
        let dropped = self.drop_units();
        self.lost = self.lost.saturating_add(dropped);
        self.waiting_for_keyframe = true;
        dropped
    }

    /// Bytes of the join's catch-up burst still queued.
    pub fn catch_up_bytes(&self) -> usize {
        self.catch_up_bytes
    }

    /// Whether a live keyframe replaced what was still queued of the catch-up.
    pub fn catch_up_overtaken(&self) -> bool {
        self.catch_up_overtaken
    }

    /// Drops all queued frames (keeps status items), counted as lost; returns how many.
    fn drop_frames(&mut self) -> u32 {
        let dropped = self.drop_units();
        self.total_lost += u64::from(dropped);
        dropped
    }

    /// Queues a status message (never dropped by overflow).
    pub fn push_status(&mut self, status: StreamState, now: Instant) {
        self.items.push_back((Item::Status(status), now));
    }

    /// Takes the oldest item and when it was queued.
    pub fn pop(&mut self) -> Option<(Item, Instant)> {
        let (item, at) = self.items.pop_front()?;
        if let Item::Au { au, catch_up } = &item {
            self.bytes -= au.len();
            if *catch_up {
                self.catch_up_bytes -= au.len();
            }
        }
        Some((item, at))
    }

    /// Moves up to `max` of the oldest items into `out`, oldest first, and returns
    /// how many; whatever does not fit stays queued for the next call. A viewer
    /// that is behind writes what is queued in one go, and the batch size decides
    /// only how many system calls that takes, never which frames arrive.
    /// `max_bytes` bounds the access units' bytes too (one unit always goes).
    pub fn drain_into(
        &mut self,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<(Item, Instant)>,
    ) -> usize {
        let before = out.len();
        let mut bytes = 0;
        while out.len() - before < max {
            if let Some((Item::Au { au, .. }, _)) = self.items.front() {
                if bytes > 0 && bytes + au.len() > max_bytes {
                    break;
                }
                bytes += au.len();
            }
            match self.pop() {
                Some(item) => out.push(item),
                None => break,
            }
        }
        debug_assert!(
            !self.items.is_empty() || self.bytes == 0,
            "an empty queue holds no au bytes"
        );
        out.len() - before
    }

    /// Bytes of frames queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the viewer waits for a keyframe after an overflow.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }
}

/// How a viewer's task is woken when something is queued for it. Without one, the
/// queue wakes the task itself; the server wakes the viewers of one thread together
/// (its wake groups), which costs the publisher one system call per thread rather
/// than one per viewer.
pub trait Wake: Send + Sync + std::fmt::Debug {
    /// Has the task waiting on `viewer` woken.
    fn wake(&self, viewer: &Arc<Notify>);
}

/// A viewer's queue shared between the hub (producer) and the viewer's task.
#[derive(Debug)]
pub struct ViewerQueue {
    state: Mutex<QueueState>,
    notify: Arc<Notify>,
    waker: OnceLock<Arc<dyn Wake>>,
    limits: QueueLimits,
}

impl ViewerQueue {
    /// An empty queue with these limits.
    pub fn new(limits: QueueLimits) -> Self {
        ViewerQueue {
            state: Mutex::new(QueueState::default()),
            notify: Arc::new(Notify::new()),
            waker: OnceLock::new(),
            limits,
        }
    }

    /// Has the viewer woken through `waker` from now on (once; later calls do nothing).
    pub fn wake_through(&self, waker: Arc<dyn Wake>) {
        let _ = self.waker.set(waker);
    }

    fn wake(&self) {
        match self.waker.get() {
            Some(waker) => waker.wake(&self.notify),
            None => self.notify.notify_one(),
        }
    }

    /// Locks the state. A poisoned lock only means another thread panicked while
    /// holding it; the queue's data stays consistent, so keep going.
    pub fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame and wakes the viewer's task. Never blocks on the viewer.
    pub fn push_au(&self, au: Arc<SharedAu>, catch_up: bool, now: Instant) -> Pushed {
        let outcome = self.lock().push_au(au, catch_up, now, &self.limits);
        if outcome != Pushed::Dropped {
            self.wake();
        }
        outcome
    }

    /// Queues a status message and wakes the viewer's task.
    pub fn push_status(&self, status: StreamState, now: Instant) {
        self.lock().push_status(status, now);
        self.wake();
    }

    /// Ends the viewer with `status` as the last thing it is told: the pictures
    /// still queued are dropped, the status goes out, then the queue reads as
    /// closed (a stream removed from the settings says why before it closes).
    pub fn finish(&self, status: StreamState, now: Instant) {
        let mut state = self.lock();
        state.drop_units();
        state.push_status(status, now);
        state.finishing = true;
        drop(state);
        self.wake();
    }

    /// Marks the queue closed: the viewer's task ends after draining nothing more.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    /// Waits until something is queued, then moves up to `max` of the oldest items
    /// (and at most `max_bytes` of access units, one at least) into `out` (see
    /// [`QueueState::drain_into`]); `false` once the queue is closed.
    /// Cancel-safe: items leave the queue only in the poll that returns them.
    pub async fn next_batch(
        &self,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<(Item, Instant)>,
    ) -> bool {
        debug_assert!(max > 0, "a batch holds at least one item");
        loop {
            {
                let mut state = self.lock();
                if state.closed {
                    return false;
                }
                if state.drain_into(max, max_bytes, out) > 0 {
                    return true;
                }
                if state.finishing {
                    return false;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Waits for the next item; `None` once the queue is closed.
    pub async fn next(&self) -> Option<(Item, Instant)> {
        let mut one = Vec::with_capacity(1);
        if self.next_batch(1, usize::MAX, &mut one).await {
            one.pop()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::unit;

    #[tokio::test]
    async fn a_finished_queue_gives_its_last_status_then_ends() {
        let q = ViewerQueue::new(limits());
        let now = Instant::now();
        q.push_au(unit(1, true, 100), false, now);
        q.push_au(unit(2, false, 100), false, now);
        q.finish(StreamState::SourceLost("removed".into()), now);
        let mut out = Vec::new();
        assert!(q.next_batch(10, usize::MAX, &mut out).await);
        let items: Vec<_> = out.iter().map(|(item, _)| item).collect();
        assert!(
            matches!(items.as_slice(), [Item::Status(StreamState::SourceLost(r))] if r == "removed"),
            "{items:?}"
        );
        out.clear();
        assert!(
            !q.next_batch(10, usize::MAX, &mut out).await,
            "then it ends"
        );
    }

    fn limits() -> QueueLimits {
        QueueLimits {
            max_bytes: 1000,
            max_delay: Duration::from_millis(500),
        }
    }

    fn frames(q: &mut QueueState) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((item, _)) = q.pop() {
            out.push(match item {
                Item::Au { au, .. } => {
                    format!("{}{}", if au.keyframe() { "K" } else { "P" }, au.seq)
                }
                Item::Skipped(n) => format!("skip{n}"),
                Item::Status(s) => s.name().to_owned(),
            });
        }
        out
    }

    fn roomy() -> QueueLimits {
        QueueLimits {
            max_bytes: 1 << 20,
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_keyframe_overtakes_a_catch_up_still_queued() {
        let t = Instant::now();
        let mut q = QueueState::default();
        for seq in 1..=4 {
            q.push_au(unit(seq, seq == 1, 100), true, t, &roomy());
        }
        assert_eq!(q.catch_up_bytes(), 400);
        // The keyframe and one catch-up frame went out; two are still queued.
        q.pop();
        q.pop();
        q.push_au(unit(5, false, 100), false, t, &roomy());
        assert_eq!(q.catch_up_bytes(), 200);
        q.push_au(unit(6, true, 100), false, t, &roomy());
        q.push_au(unit(7, false, 100), false, t, &roomy());
        assert_eq!(frames(&mut q), ["skip3", "K6", "P7"]);
        assert!(q.catch_up_overtaken());
        assert_eq!(
            q.total_lost, 0,
            "a shortened catch-up is no loss of live frames"
        );
        assert_eq!(q.catch_up_bytes(), 0);
    }

    #[test]
    fn a_keyframe_after_the_catch_up_went_out_changes_nothing() {
        let t = Instant::now();
        let mut q = QueueState::default();
        for seq in 1..=3 {
            q.push_au(unit(seq, seq == 1, 100), true, t, &roomy());
        }
        let mut out = Vec::new();
        q.drain_into(32, usize::MAX, &mut out);
        q.push_au(unit(4, false, 100), false, t, &roomy());
        q.push_au(unit(5, true, 100), false, t, &roomy());
        assert_eq!(frames(&mut q), ["P4", "K5"]);
    }

    #[test]
    fn skipping_the_catch_up_resumes_at_the_next_keyframe() {
        let t = Instant::now();
        let mut q = QueueState::default();
        q.push_status(StreamState::Live, t);
        for seq in 1..=5 {
            q.push_au(unit(seq, seq == 1, 100), true, t, &roomy());
        }
        q.push_au(unit(6, false, 100), false, t, &roomy());
        assert_eq!(q.skip_catch_up(), 6);
        assert_eq!(
            q.push_au(unit(7, false, 100), false, t, &roomy()),
            Pushed::Dropped
        );
        q.push_au(unit(8, true, 100), false, t, &roomy());
        assert_eq!(frames(&mut q), ["live", "skip7", "K8"]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn batches_are_bounded_in_bytes_but_hold_one_unit_at_least() {
        let t = Instant::now();
        let mut q = QueueState::default();
        q.push_au(unit(1, true, 50_000), true, t, &roomy());
        for seq in 2..=5 {
            q.push_au(unit(seq, false, 10_000), true, t, &roomy());
        }
        let mut out = Vec::new();
        assert_eq!(q.drain_into(32, 20_000, &mut out), 1, "the keyframe alone");
        out.clear();
        assert_eq!(q.drain_into(32, 20_000, &mut out), 2);
        out.clear();
        assert_eq!(q.drain_into(32, usize::MAX, &mut out), 2);
        assert_eq!(q.catch_up_bytes(), 0);
    }

    #[test]
    fn overflow_by_bytes_resumes_at_next_keyframe_and_reports_loss() {
        let t = Instant::now();
        let mut q = QueueState::default();
        assert_eq!(
            q.push_au(unit(1, true, 400), false, t, &limits()),
            Pushed::Queued
        );
        assert_eq!(
            q.push_au(unit(2, false, 400), false, t, &limits()),
            Pushed::Queued
        );
        assert_eq!(
            q.push_au(unit(3, false, 400), false, t, &limits()),
            Pushed::Overflowed
        );
        assert!(q.is_empty());
        assert_eq!(
            q.push_au(unit(4, false, 10), false, t, &limits()),
            Pushed::Dropped
        );
        assert_eq!(
            q.push_au(unit(5, true, 10), false, t, &limits()),
            Pushed::Queued
        );
        assert_eq!(
            q.push_au(unit(6, false, 10), false, t, &limits()),
            Pushed::Queued
        );
        assert_eq!(frames(&mut q), ["skip4", "K5", "P6"]);
        assert_eq!(q.total_lost, 4);
        assert_eq!(q.overflows, 1);
    }

    /// A viewer that joined mid-GOP (catch-up frames queued) and then got live
    /// frames, drained in batches of `max`: (labels in the order drained, batches).
    fn drain_all(catch_up: u32, live: u32, max: usize) -> (Vec<String>, usize) {
        let t = Instant::now();
        let roomy = QueueLimits {
            max_bytes: 1 << 20,
            max_delay: Duration::from_secs(60),
        };
        let mut q = QueueState::default();
        for seq in 1..=catch_up + live {
            q.push_au(unit(seq, seq == 1, 10), seq <= catch_up, t, &roomy);
        }
        let (mut out, mut batches) = (Vec::new(), 0);
        loop {
            let mut batch = Vec::new();
            let n = q.drain_into(max, usize::MAX, &mut batch);
            assert_eq!(n, batch.len());
            assert!(n <= max, "a batch of {n} where {max} fit");
            if n == 0 {
                break;
            }
            batches += 1;
            for (item, _) in batch {
                let Item::Au { au, catch_up } = item else {
                    panic!("only frames were queued")
                };
                out.push(format!("{}{}", if catch_up { "c" } else { "l" }, au.seq));
            }
        }
        assert_eq!(q.bytes(), 0);
        (out, batches)
    }

    #[test]
    fn draining_in_batches_keeps_every_frame_in_order_at_any_batch_size() {
        for (catch_up, live) in [
            (0, 1),
            (31, 0),
            (32, 0),
            (33, 0),
            (40, 25),
            (59, 3),
            (64, 64),
        ] {
            let expected: Vec<String> = (1..=catch_up + live)
                .map(|seq| format!("{}{seq}", if seq <= catch_up { "c" } else { "l" }))
                .collect();
            for max in [1, 2, 31, 32, 33, 64, 1000] {
                let (got, batches) = drain_all(catch_up, live, max);
                assert_eq!(
                    got, expected,
                    "{catch_up} catch-up + {live} live, batches of {max}"
                );
                assert_eq!(batches, expected.len().div_ceil(max));
            }
        }
    }

    #[tokio::test]
    async fn next_batch_leaves_what_does_not_fit_for_the_next_call() {
        let q = ViewerQueue::new(QueueLimits {
            max_bytes: 1 << 20,
            max_delay: Duration::from_secs(60),
        });
        for seq in 1..=33 {
            q.push_au(unit(seq, seq == 1, 10), true, Instant::now());
        }
        let mut batch = Vec::new();
        assert!(q.next_batch(32, usize::MAX, &mut batch).await);
        assert_eq!(batch.len(), 32);
        batch.clear();
        assert!(q.next_batch(32, usize::MAX, &mut batch).await);
        let seqs: Vec<u32> = batch
            .iter()
            .filter_map(|(item, _)| match item {
                Item::Au { au, .. } => Some(au.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [33], "the 33rd au waits for the second batch");
        q.close();
        assert!(!q.next_batch(32, usize::MAX, &mut batch).await);
    }

    #[test]
    fn overflow_by_age_drops_stale_frames() {
        let t = Instant::now();
        let mut q = QueueState::default();
        q.push_au(unit(1, true, 10), false, t, &limits());
        let later = t + Duration::from_millis(600);
        // A keyframe arriving after the stale one resumes at once.
        assert_eq!(
            q.push_au(unit(2, true, 10), false, later, &limits()),
            Pushed::Overflowed
        );
        assert_eq!(frames(&mut q), ["skip1", "K2"]);
    }

    #[test]
    fn status_survives_overflow() {
        let t = Instant::now();
        let mut q = QueueState::default();
        q.push_au(unit(1, true, 900), false, t, &limits());
        q.push_status(StreamState::SourceLost(String::new()), t);
        q.push_au(unit(2, false, 900), false, t, &limits());
        assert_eq!(frames(&mut q), ["source-lost"]);
        assert_eq!(q.bytes(), 0);
    }

    #[tokio::test]
    async fn next_wakes_on_push_and_ends_on_close() {
        let q = Arc::new(ViewerQueue::new(limits()));
        let q2 = q.clone();
        let waiter =
            tokio::spawn(async move { q2.next().await.map(|(i, _)| matches!(i, Item::Au { .. })) });
        q.push_au(unit(1, true, 10), false, Instant::now());
        assert_eq!(waiter.await.ok().flatten(), Some(true));
        q.close();
        assert!(q.next().await.is_none());
    }
}
