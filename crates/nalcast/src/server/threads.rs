//! Viewer threads. Each frame costs one socket write per viewer, and those writes
//! should run on every core at once. On the work-stealing runtime they did not:
//! the worker that woke a thousand viewer tasks woke its sibling over and over,
//! the sibling mostly landed on the same core, took a few tasks and slept again,
//! and a fan-out ran on one core at a time (perf sched_switch; docs/architecture.md). So
//! plain-TCP viewers live on a few single-threaded runtimes instead, one per core,
//! each with its own reactor; a frame wakes every thread once and each writes its
//! own share of the viewers. Each thread is pinned to its own core: left to
//! itself the kernel often kept both threads on one core of this 2-core machine
//! (one run in three, measured with perf sched_switch), and the fan-out ran on
//! one core again.
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nalcast_core::queue::Wake;
use tokio::runtime::Handle;
use tokio::sync::Notify;

/// A few single-threaded runtimes that carry viewer connections.
pub struct ViewerThreads {
    threads: Vec<Thread>,
}

struct Thread {
    runtime: Handle,
    /// Viewers on the thread.
    viewers: Arc<AtomicUsize>,
    /// Wakes the thread's viewers with one wake-up of the thread per frame.
    wake: Arc<WakeGroup>,
}

impl ViewerThreads {
    /// Starts `n` threads; with none, viewers run on the caller's runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(n);
        // The cores this process may use (a container may allow only some).
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        for i in 0..n {
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let wake = WakeGroup::new();
            threads.push(Thread {
                runtime: runtime.handle().clone(),
                viewers: Arc::new(AtomicUsize::new(0)),
                wake: wake.clone(),
            });
            // The thread lives as long as the process: viewers end on shutdown by
            // themselves (their queues close), and main waits for them.
            std::thread::Builder::new()
                .name(format!("viewers-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::debug!("viewer thread {i} runs on any core (cannot pin it)");
                        }
                    }
                    runtime.block_on(wake.dispatch())
                })?;
        }
        Ok(ViewerThreads { threads })
    }

    /// No threads: viewers run on the caller's runtime.
    pub fn none() -> Self {
        ViewerThreads {
            threads: Vec::new(),
        }
    }

    /// Runs `task` on the thread with the fewest viewers (or on the current
    /// runtime when there are no threads), handing it the thread's wake group.
    /// `task` is made on that thread, so sockets it opens register with that
    /// thread's reactor.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Option<Arc<WakeGroup>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(thread) = self
            .threads
            .iter()
            .min_by_key(|t| t.viewers.load(Ordering::Relaxed))
        else {
            tokio::spawn(async move { task(None).await });
            return;
        };
        thread.viewers.fetch_add(1, Ordering::Relaxed);
        let guard = Leaving(thread.viewers.clone());
        let wake = thread.wake.clone();
        thread.runtime.spawn(async move {
            let _guard = guard;
            task(Some(wake)).await;
        });
    }
}

/// Viewers whose tasks run on one thread, woken together: the publisher wakes the
/// group once per frame and the group's dispatcher, on that thread, wakes each
/// viewer there. Waking each viewer from the publisher's thread would cost a
/// system call per viewer (the runtime's reactor is woken every time).
#[derive(Debug, Default)]
pub struct WakeGroup {
    pending: Mutex<Vec<Arc<Notify>>>,
    notify: Notify,
}

impl WakeGroup {
    /// An empty group.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Wakes the group's viewers as they are asked for; runs on their thread, forever.
    pub async fn dispatch(&self) {
        let mut woken = Vec::new();
        loop {
            self.notify.notified().await;
            std::mem::swap(
                &mut woken,
                &mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()),
            );
            for viewer in woken.drain(..) {
                viewer.notify_one();
            }
        }
    }
}

impl Wake for WakeGroup {
    fn wake(&self, viewer: &Arc<Notify>) {
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(viewer.clone());
            pending.len() == 1
        };
        if first {
            self.notify.notify_one();
        }
    }
}

/// Counts a viewer out of its thread however its task ends.
struct Leaving(Arc<AtomicUsize>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalcast_core::protocol::StreamState;
    use nalcast_core::queue::{Item, ViewerQueue};
    use std::time::{Duration, Instant};

    #[test]
    fn viewers_in_a_wake_group_are_woken_on_their_own_thread() {
        let group = WakeGroup::new();
        let queues: Vec<_> = (0..3)
            .map(|_| {
                let q = Arc::new(ViewerQueue::new(Default::default()));
                q.wake_through(group.clone());
                q
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let (their_queues, their_group) = (queues.clone(), group.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut viewers = tokio::task::JoinSet::new();
                for (i, q) in their_queues.into_iter().enumerate() {
                    let tx = tx.clone();
                    viewers.spawn(async move {
                        while let Some((Item::Status(s), _)) = q.next().await {
                            let _ = tx.send((
                                i,
                                s.reason().unwrap_or_default().to_owned(),
                                std::thread::current().id(),
                            ));
                        }
                    });
                }
                tokio::select! {
                    _ = async { while viewers.join_next().await.is_some() {} } => {}
                    _ = their_group.dispatch() => unreachable!("dispatch runs forever"),
                }
            });
        });
        // Pushed from this thread, as the source pushes from its own.
        for reason in ["a", "b"] {
            for q in &queues {
                let status = StreamState::SourceLost(reason.into());
                q.push_status(status, Instant::now());
            }
        }
        let mut got: Vec<(usize, String)> = Vec::new();
        for _ in 0..6 {
            let (i, state, on) = rx.recv_timeout(Duration::from_secs(5)).expect("woken");
            assert_eq!(on, thread.thread().id(), "woken on the group's thread");
            got.push((i, state));
        }
        got.sort();
        let want: Vec<(usize, String)> = (0..3)
            .flat_map(|i| [(i, "a".to_owned()), (i, "b".to_owned())])
            .collect();
        assert_eq!(got, want);
        for q in &queues {
            q.close();
        }
        thread.join().expect("every viewer ends on close");
    }

    #[tokio::test]
    async fn tasks_go_to_the_least_busy_thread_and_run_there() {
        let threads = ViewerThreads::start(2).expect("threads");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let tx = tx.clone();
            let mut hold = hold_rx.clone();
            threads.spawn(move |_| async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send(name);
                let _ = hold.wait_for(|h| *h).await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(rx.recv().await.flatten().expect("thread name"));
        }
        names.sort();
        assert_eq!(names, ["viewers-0", "viewers-0", "viewers-1", "viewers-1"]);
        let busy: Vec<usize> = threads
            .threads
            .iter()
            .map(|t| t.viewers.load(Ordering::Relaxed))
            .collect();
        assert_eq!(busy, [2, 2]);
        hold_tx.send(true).expect("release");
        // Finished tasks are counted out.
        let counted_out = async {
            for thread in &threads.threads {
                while thread.viewers.load(Ordering::Relaxed) > 0 {
                    tokio::task::yield_now().await;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), counted_out)
            .await
            .expect("finished viewers are counted out");
    }
}
