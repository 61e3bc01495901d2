//! Viewer limits: in all and per client address, so one client (or a runaway
//! reconnect loop) cannot take every slot.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a viewer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server has `--max-viewers` viewers.
    Total,
    /// This address has `--max-viewers-per-ip` viewers.
    PerAddress,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Shared viewer slots.
#[derive(Debug, Clone)]
pub struct ViewerLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    limits: ViewerLimits,
    ip: IpAddr,
}

impl ViewerLimits {
    /// Limits of `max_total` viewers, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        ViewerLimits {
            max_total,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters stay consistent even if a holder panicked.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a viewer from `ip`, or says why not.
    pub fn acquire(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let mut c = self.counts();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = c.by_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_in_all_and_per_address_and_freed_on_drop() {
        let limits = ViewerLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), Refused::PerAddress);
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert!(limits.acquire(b).is_ok());
    }
}
