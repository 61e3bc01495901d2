//! Client limits: open connections and WebSocket viewers, in all and per client
//! address, so one client (or a runaway reconnect loop) can take neither every
//! viewer slot nor every file descriptor.
//!
//! A connection takes a connection slot when it is accepted. When it becomes a
//! viewer, the viewer's slot takes a second connection slot for the same address
//! without asking (the connection is already open); the accepting task gives its
//! own back a moment later, when hyper hands the socket over. So an upgraded viewer
//! keeps holding one connection slot, and the connection count is the number of
//! open client sockets (briefly one more per viewer being upgraded).
use nalcast_core::metric::Series;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Connections open now.
pub const CONNECTIONS_OPEN: Series =
    Series::gauge("nalcast_connections_open", "TCP connections open");

/// Why a viewer or a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server has as many as it takes in all.
    Total,
    /// This client address has as many as it may have.
    PerAddress,
}

/// Which clients share the per-address limits: one IPv4 address (also when it
/// arrives IPv4-mapped on an IPv6 socket), or one IPv6 /64 — a home or a phone gets
/// a whole /64 and may use any address in it.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How many per-address limits an IPv6 /48 (a site) may hold together: a home
/// or an office has one /64 or a few, while a holder of a /48 would otherwise
/// have 65,536 of them, each with the full per-address limit.
pub const SITE_SHARE: usize = 4;

/// The site of a client key: an IPv6 /48; an IPv4 address is its own.
pub fn site_key(key: IpAddr) -> IpAddr {
    match key {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_key: HashMap<IpAddr, usize>,
    /// IPv6 keys' counts per /48 (IPv4 keys are their own site: not kept here).
    by_site: HashMap<IpAddr, usize>,
}

/// Slots counted in all, per client key, and per IPv6 site. Invariant: `total`
/// is the sum of `by_key`, each site's count the sum of its keys', and no key or
/// site is kept with a count of 0.
#[derive(Debug, Clone)]
struct Slots {
    max_total: usize,
    max_per_key: usize,
    counts: Arc<Mutex<Counts>>,
    /// Gauge set to the total on every change (under the lock, so never stale).
    gauge: Option<metrics::Gauge>,
}

impl Slots {
    fn new(max_total: usize, max_per_key: usize, gauge: Option<metrics::Gauge>) -> Self {
        Slots {
            max_total,
            max_per_key,
            counts: Arc::default(),
            gauge,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters stay consistent even if a holder panicked.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `key` within the limits, or says why not.
    fn take(&self, key: IpAddr) -> Result<(), Refused> {
        let mut c = self.counts();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        if c.by_key.get(&key).copied().unwrap_or(0) >= self.max_per_key {
            return Err(Refused::PerAddress);
        }
        if key.is_ipv6()
            && c.by_site.get(&site_key(key)).copied().unwrap_or(0)
                >= self.max_per_key.saturating_mul(SITE_SHARE)
        {
            return Err(Refused::PerAddress);
        }
        self.add(&mut c, key);
        Ok(())
    }

    /// Takes a slot for `key` within the total only (for one more descriptor of a
    /// client already counted, whose per-address limit is not the point).
    fn take_within_total(&self, key: IpAddr) -> Result<(), Refused> {
        let mut c = self.counts();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        self.add(&mut c, key);
        Ok(())
    }

    /// Takes a slot for `key` whatever the limits say (for a connection that is
    /// already open and only changes hands).
    fn take_anyway(&self, key: IpAddr) {
        let mut c = self.counts();
        self.add(&mut c, key);
    }

    fn add(&self, c: &mut Counts, key: IpAddr) {
        *c.by_key.entry(key).or_insert(0) += 1;
        if key.is_ipv6() {
            *c.by_site.entry(site_key(key)).or_insert(0) += 1;
        }
        c.total += 1;
        self.publish(c);
    }

    fn give_back(&self, key: IpAddr) {
        let mut c = self.counts();
        let Some(n) = c.by_key.get_mut(&key) else {
            debug_assert!(false, "a slot given back for {key} that holds none");
            return;
        };
        *n -= 1;
        if *n == 0 {
            c.by_key.remove(&key);
        }
        if key.is_ipv6() {
            let site = site_key(key);
            if let Some(n) = c.by_site.get_mut(&site) {
                *n -= 1;
                if *n == 0 {
                    c.by_site.remove(&site);
                }
            }
        }
        c.total -= 1;
        debug_assert_eq!(c.total, c.by_key.values().sum::<usize>());
        debug_assert_eq!(
            c.by_site.values().sum::<usize>(),
            c.by_key
                .iter()
                .filter(|(k, _)| k.is_ipv6())
                .map(|(_, n)| n)
                .sum::<usize>()
        );
        self.publish(&c);
    }

    fn publish(&self, c: &Counts) {
        if let Some(gauge) = &self.gauge {
            gauge.set(c.total as f64);
        }
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.counts().total
    }
}

/// Shared connection slots (`--max-connections`, `--max-connections-per-ip`),
/// for every listener of the process: file descriptors are the process's.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    slots: Slots,
}

/// A taken connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Slots,
    key: IpAddr,
}

impl ConnectionLimits {
    /// Limits of `max_total` open connections, `max_per_ip` from one client address
    /// (see [`client_key`]); the `nalcast_connections_open` gauge follows the count.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        let gauge = CONNECTIONS_OPEN.gauge_now();
        ConnectionLimits {
            slots: Slots::new(max_total, max_per_ip, Some(gauge)),
        }
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub fn acquire(&self, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let key = client_key(ip);
        self.slots.take(key)?;
        Ok(ConnectionSlot {
            slots: self.slots.clone(),
            key,
        })
    }

    /// Open connections, viewers included.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.slots.total()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.slots.give_back(self.key);
    }
}

/// Shared viewer slots (`--max-viewers`, `--max-viewers-per-ip`).
#[derive(Debug, Clone)]
pub struct ViewerLimits {
    slots: Slots,
    /// Connection slots a viewer keeps holding once its connection is upgraded.
    connections: Option<Slots>,
}

/// A taken viewer slot; dropping it frees the slot (and the viewer's connection
/// slot, see the module comment).
#[derive(Debug)]
pub struct ViewerSlot {
    slots: Slots,
    connections: Option<Slots>,
    key: IpAddr,
    /// The viewer's place in its stream, where the stream limits its viewers.
    seat: Option<crate::streams::Seat>,
}

impl ViewerLimits {
    /// Limits of `max_total` viewers, `max_per_ip` from one client address (see
    /// [`client_key`]).
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        ViewerLimits {
            slots: Slots::new(max_total, max_per_ip, None),
            connections: None,
        }
    }

    /// Viewers keep their connection's slot in `connections` (see the module comment).
    pub fn holding_connections(self, connections: &ConnectionLimits) -> Self {
        ViewerLimits {
            connections: Some(connections.slots.clone()),
            ..self
        }
    }

    /// Takes a slot for a viewer from `ip`, or says why not.
    pub fn acquire(&self, ip: IpAddr) -> Result<ViewerSlot, Refused> {
        let key = client_key(ip);
        self.slots.take(key)?;
        if let Some(connections) = &self.connections {
            connections.take_anyway(key);
        }
        Ok(ViewerSlot {
            slots: self.slots.clone(),
            connections: self.connections.clone(),
            key,
            seat: None,
        })
    }
}

impl ViewerSlot {
    /// A connection slot for a second descriptor of this viewer's socket (the
    /// TCP_INFO duplicate a join measures with), if the total has room: the
    /// connection budget is a descriptor budget, and a joining viewer holds two (a
    /// budget that counted one let accept() fail for everyone under a low
    /// open-file limit). `Ok(None)` where viewers hold no connection slots (an
    /// embedding without connection limits): nothing to count.
    pub fn descriptor(&self) -> Result<Option<DescriptorSlot>, Refused> {
        let Some(connections) = self.connections.as_ref() else {
            return Ok(None);
        };
        connections.take_within_total(self.key)?;
        Ok(Some(DescriptorSlot {
            slots: connections.clone(),
            key: self.key,
        }))
    }
}

impl ViewerSlot {
    /// Holds `seat` (the viewer's place in its stream) as long as the slot.
    pub fn with_seat(mut self, seat: crate::streams::Seat) -> ViewerSlot {
        self.seat = Some(seat);
        self
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.slots.give_back(self.key);
        if let Some(connections) = &self.connections {
            connections.give_back(self.key);
        }
    }
}

/// A connection slot held for an extra descriptor ([`ViewerSlot::descriptor`]).
#[derive(Debug)]
pub struct DescriptorSlot {
    slots: Slots,
    key: IpAddr,
}

impl Drop for DescriptorSlot {
    fn drop(&mut self) {
        self.slots.give_back(self.key);
    }
}

/// Raises the soft limit on open files to the hard limit (every client connection
/// is a file descriptor, and a soft limit of 1024 is common); returns the limit in
/// force, if it can be read.
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // rlim_t is u64 on 64-bit Linux and u32 on 32-bit ARM (armhf).
    fn widen<T: Into<u64>>(v: T) -> u64 {
        v.into()
    }
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the open-file limit: {e}");
            return None;
        }
    };
    if soft >= hard {
        info!("open-file limit {soft}");
        return Some(widen(soft));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!("open-file limit raised from {soft} to {hard}");
            Some(widen(hard))
        }
        Err(e) => {
            warn!("open-file limit stays at {soft}: cannot raise it to {hard}: {e}");
            Some(widen(soft))
        }
    }
}

/// Descriptors kept free for what nalcast opens besides connections: source
/// processes' pipes across restarts, certificate reloads, /proc reads.
const SPARE_FDS: u64 = 16;

/// `--max-connections`, lowered if need be so that connections cannot use up the
/// open-file limit (then new clients would wait in the accept queue until they
/// time out, instead of being refused at once).
pub fn connection_budget(max_connections: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return max_connections;
    };
    // Listeners, runtimes, viewer threads and the source are open by now.
    let in_use = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64);
    let room = limit.saturating_sub(in_use + SPARE_FDS).max(1);
    let budget = usize::try_from(room).unwrap_or(usize::MAX);
    if budget < max_connections {
        warn!(
            "at most {budget} connections (not --max-connections {max_connections}): the open-file limit is {limit} and {in_use} descriptors are in use; raise the limit (e.g. LimitNOFILE= in the systemd unit) for more"
        );
        return budget;
    }
    max_connections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn slots_are_limited_in_all_and_per_address_and_freed_on_drop() {
        let limits = ViewerLimits::new(3, 2);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let a1 = limits.acquire(a).expect("first");
        let _a2 = limits.acquire(a).expect("second");
        assert_eq!(limits.acquire(a).unwrap_err(), Refused::PerAddress);
        let _b1 = limits.acquire(b).expect("other address");
        assert_eq!(limits.acquire(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert!(limits.acquire(b).is_ok());
    }

    #[test]
    fn mapped_ipv4_is_its_ipv4_address_and_ipv6_counts_per_64() {
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        let limits = ConnectionLimits::new(100, 2);
        let _a = limits.acquire(ip("2001:db8:1:2::1")).expect("first");
        let _b = limits.acquire(ip("2001:db8:1:2::2")).expect("second");
        assert_eq!(
            limits.acquire(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::PerAddress,
            "same /64"
        );
        assert!(limits.acquire(ip("2001:db8:1:3::1")).is_ok(), "next /64");
        // A /48 holds at most SITE_SHARE per-address limits, however many /64s it
        // uses (before: 65,536 of them, each with the full limit).
        let mut held = Vec::new();
        let refused = (4..1000u16).flat_map(|i| [i, i]).find_map(|i| {
            let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, i, 0, 0, 0, 1));
            match limits.acquire(addr) {
                Ok(slot) => {
                    held.push(slot);
                    None
                }
                Err(why) => Some(why),
            }
        });
        assert_eq!(refused, Some(Refused::PerAddress));
        assert_eq!(
            held.len() + 2,
            2 * SITE_SHARE,
            "the /48's share of the per-address limits, /64 by /64"
        );
        assert!(
            limits.acquire(ip("2001:db8:2::1")).is_ok(),
            "another /48 is not held"
        );
        drop(held);
        assert!(limits.acquire(ip("2001:db8:1:ff::1")).is_ok(), "given back");
        let _c = limits.acquire(ip("192.0.2.7")).expect("v4");
        let _d = limits.acquire(ip("::ffff:192.0.2.7")).expect("v4 mapped");
        assert_eq!(
            limits.acquire(ip("192.0.2.7")).unwrap_err(),
            Refused::PerAddress,
            "mapped and plain IPv4 share a count"
        );
    }

    #[test]
    fn an_upgraded_viewer_keeps_holding_one_connection_slot() {
        let connections = ConnectionLimits::new(10, 3);
        let viewers = ViewerLimits::new(10, 10).holding_connections(&connections);
        let a = ip("10.0.0.1");
        let accepted = connections.acquire(a).expect("connection");
        let viewer = viewers.acquire(a).expect("viewer");
        assert_eq!(connections.open(), 2, "during the upgrade");
        drop(accepted); // hyper hands the socket to the viewer
        assert_eq!(connections.open(), 1, "the viewer's connection");
        let _b = connections.acquire(a).expect("second");
        let _c = connections.acquire(a).expect("third");
        assert_eq!(
            connections.acquire(a).unwrap_err(),
            Refused::PerAddress,
            "the viewer counts against its address"
        );
        drop(viewer);
        assert_eq!(connections.open(), 2);
        assert!(connections.acquire(a).is_ok());
    }

    #[test]
    fn a_joining_viewers_second_descriptor_is_counted_within_the_total() {
        let connections = ConnectionLimits::new(2, 2);
        let viewers = ViewerLimits::new(10, 10).holding_connections(&connections);
        let a = ip("192.0.2.1");
        let conn = connections.acquire(a).expect("connection");
        let viewer = viewers.acquire(a).expect("viewer");
        drop(conn); // hyper hands the socket over
        assert_eq!(connections.open(), 1);
        let dup = viewer
            .descriptor()
            .expect("room for the TCP_INFO duplicate")
            .expect("counted");
        assert_eq!(connections.open(), 2);
        assert_eq!(
            connections.acquire(ip("192.0.2.2")).unwrap_err(),
            Refused::Total,
            "the duplicate holds a descriptor like a connection"
        );
        assert_eq!(
            viewer.descriptor().unwrap_err(),
            Refused::Total,
            "none past the total"
        );
        drop(dup);
        assert_eq!(connections.open(), 1);
        let other = connections.acquire(ip("192.0.2.2")).expect("room again");
        drop((other, viewer));
        assert_eq!(connections.open(), 0);
    }

    #[test]
    fn a_full_server_refuses_with_total_first() {
        let connections = ConnectionLimits::new(2, 5);
        let _a = connections.acquire(ip("10.0.0.1")).expect("a");
        let _b = connections.acquire(ip("10.0.0.2")).expect("b");
        assert_eq!(
            connections.acquire(ip("10.0.0.3")).unwrap_err(),
            Refused::Total
        );
    }
}
