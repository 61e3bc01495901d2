//! The hub's subscribers: viewers, and nalcast's own (publishers), each with its
//! bounded queue. The fan-out pushes to every one and says whose queue overflowed;
//! nalcast's own are never counted as viewers. Pure: time comes in.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::StreamState;
use crate::queue::{Pushed, ViewerQueue};
use crate::SharedAu;

/// A subscriber's queue, and whether it is one of nalcast's own (not a viewer).
struct Member {
    queue: Arc<ViewerQueue>,
    internal: bool,
}

/// Every subscriber, by id.
#[derive(Default)]
pub struct Members {
    by_id: HashMap<u64, Member>,
    /// How many are internal: not counted as viewers anywhere.
    internal: usize,
    next_id: u64,
}

/// What a fan-out met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflows {
    /// Viewers whose queue overflowed (each now skips to the next keyframe).
    pub viewers: u64,
    /// Whether one of nalcast's own subscribers overflowed.
    pub internal: bool,
}

impl Overflows {
    /// Whether anyone now waits for a keyframe.
    pub fn any(self) -> bool {
        self.viewers > 0 || self.internal
    }
}

impl Members {
    /// Adds a subscriber; its id, for [`Members::remove`].
    pub fn add(&mut self, queue: Arc<ViewerQueue>, internal: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.by_id.insert(id, Member { queue, internal });
        if internal {
            self.internal += 1;
        }
        id
    }

    /// Removes a subscriber (no-op for an id not here).
    pub fn remove(&mut self, id: u64) {
        if self.by_id.remove(&id).is_some_and(|m| m.internal) {
            self.internal -= 1;
        }
    }

    /// Every subscriber, viewers and nalcast's own.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there is no subscriber at all.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Viewers: the members that are not nalcast's own.
    pub fn viewers(&self) -> usize {
        debug_assert!(self.internal <= self.by_id.len());
        self.by_id.len() - self.internal
    }

    /// Pushes a live access unit to every queue, at `now`.
    pub fn push_au(&self, au: &Arc<SharedAu>, now: Instant) -> Overflows {
        let mut overflows = Overflows::default();
        for member in self.by_id.values() {
            if member.queue.push_au(au.clone(), false, now) == Pushed::Overflowed {
                if member.internal {
                    overflows.internal = true;
                } else {
                    overflows.viewers += 1;
                }
            }
        }
        overflows
    }

    /// Tells every subscriber the stream's state, at `now`.
    pub fn push_status(&self, state: &StreamState, now: Instant) {
        for member in self.by_id.values() {
            member.queue.push_status(state.clone(), now);
        }
    }

    /// Ends every queue with `status` as its last message.
    pub fn finish_all(&self, status: &StreamState, now: Instant) {
        for member in self.by_id.values() {
            member.queue.finish(status.clone(), now);
        }
    }

    /// Closes every queue (shutdown): their tasks end.
    pub fn close_all(&self) {
        for member in self.by_id.values() {
            member.queue.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueLimits;
    use crate::test_support::unit;

    fn queue(max_bytes: usize) -> Arc<ViewerQueue> {
        Arc::new(ViewerQueue::new(QueueLimits {
            max_bytes,
            ..QueueLimits::default()
        }))
    }

    #[test]
    fn internal_subscribers_are_no_viewers_and_ids_are_never_reused() {
        let mut members = Members::default();
        let a = members.add(queue(1 << 20), false);
        let own = members.add(queue(1 << 20), true);
        assert_eq!(members.viewers(), 1);
        members.remove(own);
        members.remove(own);
        assert_eq!(members.viewers(), 1);
        let b = members.add(queue(1 << 20), false);
        assert!(b != a && b != own);
        members.remove(a);
        members.remove(b);
        assert_eq!(members.viewers(), 0);
    }

    #[test]
    fn a_fan_out_says_whose_queue_overflowed() {
        let mut members = Members::default();
        let t = Instant::now();
        members.add(queue(1 << 20), false);
        members.add(queue(100), false);
        members.add(queue(100), true);
        assert_eq!(members.push_au(&unit(0, true, 80), t), Overflows::default());
        let overflows = members.push_au(&unit(1, false, 80), t);
        assert_eq!(
            overflows,
            Overflows {
                viewers: 1,
                internal: true
            }
        );
        assert!(overflows.any());
    }
}
