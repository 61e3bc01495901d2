//! What HLS requests may hold at once: requests per client address (a blocking
//! reload or a preload hint is held up to 12 s, a slow reader for as long as its
//! socket keeps taking bytes), and memory kept alive by answers not yet sent, in
//! all.
//!
//! Parts and segments are sent as the shared buffers the HLS window holds (a
//! segment as its parts), so many readers of one part keep one copy alive: the
//! memory counted is that of the distinct buffers answers still hold (by address
//! and length), plus each playlist answer (made per request). It bounds what slow
//! readers can keep alive after the window moved on: 4000 slow segment readers,
//! each with a copy, took nalcast from 17 MB to 2.31 GB; readers of one segment
//! after another could pile up shared copies the same way. Over either limit a
//! request is answered at once, 429 or 503, and costs nothing more.
use nalcast_core::metric::Series;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::limits::client_key;

/// HLS requests refused, by which limit.
pub const HLS_REFUSED: Series = Series::counter(
    "nalcast_hls_refused_total",
    "HLS requests refused, by the limit they met: per_ip (--max-hls-requests-per-ip), \
     memory (--max-hls-memory)",
)
.labelled("reason", &["per_ip", "memory"]);

/// The limits, and what is held against them now.
#[derive(Debug)]
pub struct HlsBudget {
    max_per_address: usize,
    max_bytes: usize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    held: Mutex<Held>,
}

/// Buffers answers hold. Invariant: `bytes` is the sum of the lengths in
/// `buffers` plus the playlist bytes of open answers; no buffer is kept with no
/// holder.
#[derive(Debug, Default)]
struct Held {
    /// (address, length) -> holders.
    buffers: HashMap<(usize, usize), usize>,
    /// Playlist bytes of open answers.
    own: usize,
    bytes: usize,
}

impl Held {
    fn check(&self) {
        debug_assert!(self.buffers.values().all(|&n| n > 0));
        debug_assert_eq!(
            self.bytes,
            self.buffers.keys().map(|id| id.1).sum::<usize>() + self.own
        );
    }
}

/// Why an HLS request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The address has as many HLS requests open as it may.
    PerAddress,
    /// Open answers hold as much memory as all may.
    Bytes,
}

fn identity(b: &Bytes) -> (usize, usize) {
    (b.as_ptr() as usize, b.len())
}

impl HlsBudget {
    /// At most `max_per_address` requests per client address (an IPv6 /64 counts as
    /// one) and `max_bytes` held by answers not yet sent.
    pub fn new(max_per_address: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(HlsBudget {
            max_per_address: max_per_address.max(1),
            max_bytes,
            per_address: Mutex::default(),
            held: Mutex::default(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request slot for `ip`, or why not.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<HlsSlot, Over> {
        let key = client_key(ip);
        let mut table = self.table();
        let n = table.entry(key).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Over::PerAddress);
        }
        *n += 1;
        Ok(HlsSlot {
            budget: self.clone(),
            key,
            buffers: Vec::new(),
            own: 0,
        })
    }

    /// Memory held by open answers.
    pub fn bytes(&self) -> usize {
        self.held().bytes
    }

    /// Requests open from `ip`'s address.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.table().get(&client_key(ip)).copied().unwrap_or(0)
    }
}

/// One HLS request in progress: its address's slot, and what its answer holds.
#[derive(Debug)]
pub struct HlsSlot {
    budget: Arc<HlsBudget>,
    key: IpAddr,
    /// Shared buffers held (identities), counted once in all however many hold them.
    buffers: Vec<(usize, usize)>,
    /// Bytes of an answer of its own (a playlist).
    own: usize,
}

impl HlsSlot {
    /// Holds shared `pieces` (a part, a segment's parts) until the slot is dropped,
    /// if what they add to the total fits.
    pub fn hold(&mut self, pieces: &[Bytes]) -> Result<(), Over> {
        let budget = self.budget.clone();
        let mut held = budget.held();
        let mut ids: Vec<(usize, usize)> = pieces.iter().map(identity).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| !self.buffers.contains(id));
        let new: usize = ids
            .iter()
            .filter(|id| !held.buffers.contains_key(id))
            .map(|id| id.1)
            .sum();
        if held.bytes.saturating_add(new) > budget.max_bytes {
            return Err(Over::Bytes);
        }
        for id in &ids {
            *held.buffers.entry(*id).or_insert(0) += 1;
        }
        held.bytes += new;
        held.check();
        self.buffers.extend(ids);
        Ok(())
    }

    /// `pieces` (held with [`HlsSlot::hold`]) made to keep the slot until the last of
    /// them is dropped, wherever that happens: the body hands them to the
    /// connection, which may queue them unwritten well after the body is done. The
    /// same bytes, not copied.
    pub fn attach(self, pieces: Vec<Bytes>) -> Vec<Bytes> {
        let slot = Arc::new(self);
        pieces
            .into_iter()
            .map(|piece| {
                Bytes::from_owner(Holding {
                    piece,
                    _slot: slot.clone(),
                })
            })
            .collect()
    }

    /// Holds `n` bytes of an answer made for this request alone.
    fn hold_own(&mut self, n: usize) -> Result<(), Over> {
        let budget = self.budget.clone();
        let mut held = budget.held();
        if held.bytes.saturating_add(n) > budget.max_bytes {
            return Err(Over::Bytes);
        }
        held.bytes += n;
        held.own += n;
        self.own += n;
        Ok(())
    }
}

impl Drop for HlsSlot {
    fn drop(&mut self) {
        {
            let mut held = self.budget.held();
            held.bytes -= self.own;
            held.own -= self.own;
            for id in self.buffers.drain(..) {
                if let Some(n) = held.buffers.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        held.buffers.remove(&id);
                        held.bytes -= id.1;
                    }
                }
            }
            held.check();
        }
        let mut table = self.budget.table();
        if let Some(n) = table.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.key);
            }
        }
    }
}

/// A piece of an answer that keeps its request's slot.
struct Holding {
    piece: Bytes,
    _slot: Arc<HlsSlot>,
}

impl AsRef<[u8]> for Holding {
    fn as_ref(&self) -> &[u8] {
        &self.piece
    }
}

/// An answer's body that holds its slot, and what it counts, until the connection
/// has taken the last of it or the client went away. (Not as each piece is taken:
/// the connection queues pieces it has not written yet, and a slow reader's queue
/// is what keeps them alive.)
pub struct Metered {
    inner: Body,
    _slot: HlsSlot,
}

impl Metered {
    /// `inner`, holding `slot` until it is done.
    pub fn body(inner: Body, slot: HlsSlot) -> Body {
        Body::new(Metered { inner, _slot: slot })
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request over a limit.
pub fn refused(over: Over) -> Response {
    let (status, reason, text) = match over {
        Over::PerAddress => (
            StatusCode::TOO_MANY_REQUESTS,
            "per_ip",
            "too many HLS requests from your address at once (--max-hls-requests-per-ip)\n",
        ),
        Over::Bytes => (
            StatusCode::SERVICE_UNAVAILABLE,
            "memory",
            "the server holds as much HLS for slow readers as it may (--max-hls-memory); try again\n",
        ),
    };
    HLS_REFUSED.count_as(reason).increment(1);
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::RETRY_AFTER, "1"),
        ],
        text,
    )
        .into_response()
}

/// The slot of the request being answered, for its handler to hold shared buffers
/// with ([`HlsSlot::hold`]); left in place, the guard counts the answer as the
/// request's own.
#[derive(Clone, Default)]
pub struct SlotHandle(Arc<Mutex<Option<HlsSlot>>>);

impl SlotHandle {
    /// The slot, taken out (once).
    pub fn take(&self) -> Option<HlsSlot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The middleware around `/hls/`: a slot for the request's address while it waits
/// and while its answer is sent, and the memory the answer holds counted until
/// then.
pub async fn guard(State(budget): State<Arc<HlsBudget>>, mut req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let slot = match budget.enter(ip) {
        Ok(slot) => slot,
        Err(over) => return refused(over),
    };
    let handle = SlotHandle(Arc::new(Mutex::new(Some(slot))));
    req.extensions_mut().insert(handle.clone());
    let response = next.run(req).await;
    let Some(mut slot) = handle.take() else {
        // The handler holds it in the body it made.
        return response;
    };
    let size = response.body().size_hint().exact().unwrap_or(0);
    if let Err(over) = slot.hold_own(usize::try_from(size).unwrap_or(usize::MAX)) {
        return refused(over);
    }
    response.map(|inner| Metered::body(inner, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn slots_per_address_and_memory_in_all_are_bounded_and_given_back() {
        let budget = HlsBudget::new(2, 1000);
        let a = ip("192.0.2.1");
        let first = budget.enter(a).expect("one");
        let mut second = budget.enter(ip("::ffff:192.0.2.1")).expect("two");
        assert_eq!(budget.enter(a).unwrap_err(), Over::PerAddress);
        let mut other = budget.enter(ip("192.0.2.2")).expect("another address");
        let big = Bytes::from(vec![0u8; 600]);
        second.hold(std::slice::from_ref(&big)).expect("fits");
        // The same buffer again costs nothing more, for any number of requests.
        other.hold(std::slice::from_ref(&big)).expect("shared");
        assert_eq!(budget.bytes(), 600);
        let small = Bytes::from(vec![0u8; 401]);
        assert_eq!(other.hold(std::slice::from_ref(&small)), Err(Over::Bytes));
        other.hold(&[small.slice(..400)]).expect("fits exactly");
        assert_eq!(budget.bytes(), 1000);
        drop(second);
        assert_eq!(budget.bytes(), 1000, "still held by the other request");
        assert_eq!(budget.open(a), 1);
        drop(other);
        assert_eq!(budget.bytes(), 0, "given back when no request holds it");
        drop(first);
        assert_eq!(budget.open(a), 0);
        assert!(budget.table().is_empty(), "no address kept at zero");
        assert!(budget.held().buffers.is_empty());
    }

    #[test]
    fn attached_pieces_hold_the_slot_until_the_last_is_dropped() {
        let budget = HlsBudget::new(1, 1 << 20);
        let a = ip("192.0.2.1");
        let mut slot = budget.enter(a).expect("slot");
        let pieces = vec![Bytes::from(vec![1u8; 100]), Bytes::from(vec![2u8; 50])];
        slot.hold(&pieces).expect("fits");
        let mut attached = slot.attach(pieces.clone());
        assert_eq!(attached, pieces, "the same bytes");
        assert_eq!(attached[0].as_ptr(), pieces[0].as_ptr(), "not copied");
        let queued = attached[1].clone();
        attached.clear();
        assert_eq!((budget.bytes(), budget.open(a)), (150, 1), "one is queued");
        drop(queued);
        assert_eq!((budget.bytes(), budget.open(a)), (0, 0));
    }

    #[tokio::test]
    async fn a_metered_body_holds_its_memory_and_slot_until_it_is_done() {
        use http_body_util::BodyExt;
        let budget = HlsBudget::new(1, 1 << 20);
        let a = ip("192.0.2.1");
        let mut slot = budget.enter(a).expect("slot");
        let pieces = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
        slot.hold(&pieces).expect("fits");
        let body = super::super::hls::pieces_body(pieces);
        assert_eq!(body.size_hint().exact(), Some(7));
        let mut metered = Metered::body(body, slot);
        let first = metered.frame().await.expect("a frame").expect("ok");
        assert_eq!(first.data_ref().map(|d| d.len()), Some(3));
        assert_eq!((budget.bytes(), budget.open(a)), (7, 1));
        drop(metered);
        assert_eq!((budget.bytes(), budget.open(a)), (0, 0));
    }
}
