//! Optional access control: HTTP Basic (a plain password or an argon2 hash of one)
//! and/or a token, taken from an `Authorization: Bearer` header, a cookie or a
//! `?token=` query parameter, so both the page and its WebSocket work. Everything
//! but the main port's `/healthz` needs it. Secrets are compared in constant time (as SHA-256
//! digests, so lengths leak nothing either).
//!
//! Guessing is slowed down three ways: a wrong user name costs the same argon2 run
//! as a right one (so timing does not tell which names exist); only the first
//! `Authorization` header is tried (so one request cannot carry a hundred guesses);
//! and an address with repeated failures is made to wait, longer each time
//! ([`Failures`]). Argon2 runs one at a time, on one reused block of memory, and a
//! request that cannot have its turn within [`HASH_WAIT`] is answered 503, so
//! guesses cannot pile up unbounded; credentials that failed lately are known
//! without a second run ([`RecentlyFailed`]).
//!
//! A lock-out holds back guesses only: credentials are checked first, and a request
//! that proves itself (token, cookie, a password known to be right) passes whatever
//! its address did, so a neighbour behind the same address or IPv6 prefix cannot
//! lock the owner out. What a locked-out address cannot get is a new argon2 run.
use nalcast_core::metric::Series;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use tracing::{debug, info};

use super::limits::client_key;

/// Requests refused before their credentials were checked, by reason.
pub const AUTH_REFUSED: Series = Series::counter(
    "nalcast_auth_refused_total",
    "requests refused before their credentials were checked, by reason",
)
.labelled("reason", &["busy", "locked_out"]);
/// Requests with missing or wrong credentials.
pub const AUTH_FAILURES: Series = Series::counter(
    "nalcast_auth_failures_total",
    "requests refused for missing or wrong credentials",
);

/// The cookie that carries the token after the page was opened with `?token=`.
pub const TOKEN_COOKIE: &str = "nalcast_token";
/// Fewest characters a token may have.
const MIN_TOKEN_LEN: usize = 16;
/// Credentials already checked against a password hash (digests), so a browser's
/// every request does not pay for argon2 again.
const VERIFIED_CACHE: usize = 64;
/// Longest a request waits for its turn at argon2 before it is answered 503.
pub const HASH_WAIT: Duration = Duration::from_secs(2);
/// Failed attempts one address may make before it is made to wait.
pub const FREE_FAILURES: u32 = 5;
/// Wrong credentials (digests) remembered without regard to address, so the same
/// wrong password again costs no argon2 run: a flood of one guess ran argon2 for
/// every request (and took memory 13 -> 251 MB).
const RECENTLY_FAILED: usize = 4096;
/// How long a failed digest is remembered. Any time would do (the right password
/// does not change while nalcast runs); this keeps the table fresh.
const FAILED_MEMORY: Duration = Duration::from_secs(600);
/// The first wait; it doubles with every further failure, up to [`MAX_LOCKOUT`].
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(60);
/// An address quiet this long (after its wait, if any) is forgotten.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it the one quiet longest is forgotten.
const MAX_TRACKED: usize = 4096;

type Digest = [u8; 32];

fn sha256(data: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn same(a: &Digest, b: &Digest) -> bool {
    a.ct_eq(b).into()
}

enum Password {
    Plain(Digest),
    /// From a PHC string (`$argon2id$v=19$...`).
    Hash(Arc<Argon2Hash>),
}

/// An argon2 hash, taken apart once so that each check can run on memory of ours.
struct Argon2Hash {
    algorithm: argon2::Algorithm,
    version: argon2::Version,
    params: argon2::Params,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

impl Argon2Hash {
    fn parse(phc: &str) -> Result<Argon2Hash, String> {
        let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm.as_str())
            .map_err(|_| "only argon2 password hashes are accepted".to_owned())?;
        let version = match hash.version {
            Some(v) => argon2::Version::try_from(v).map_err(|e| e.to_string())?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&hash).map_err(|e| e.to_string())?;
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return Err("the hash has no salt or no output".into());
        };
        Ok(Argon2Hash {
            algorithm,
            version,
            params,
            salt: salt.as_ref().to_vec(),
            expected: expected.as_bytes().to_vec(),
        })
    }

    /// Whether `password` is the one, computed in `memory` (sized on first use, then
    /// reused: argon2's default takes 19 MiB per run, and fresh buffers on the
    /// blocking pool's threads each stayed in their own malloc arena).
    fn verify(&self, password: &[u8], memory: &mut Vec<argon2::Block>) -> bool {
        let blocks = self.params.block_count();
        if memory.len() != blocks {
            *memory = vec![argon2::Block::default(); blocks];
        }
        let mut out = vec![0u8; self.expected.len()];
        argon2::Argon2::new(self.algorithm, self.version, self.params.clone())
            .hash_password_into_with_memory(password, &self.salt, &mut out, memory.as_mut_slice())
            .is_ok()
            && bool::from(out.ct_eq(&self.expected))
    }
}

struct Basic {
    user: Digest,
    password: Password,
}

/// The configured credentials and what they need at run time.
pub struct Auth {
    basic: Option<Basic>,
    token: Option<Digest>,
    secure_cookie: bool,
    verified: Mutex<HashSet<Digest>>,
    /// One argon2 verification at a time: each costs tens of milliseconds of CPU
    /// (more on a Pi), and wrong guesses must not starve the video.
    hashing: tokio::sync::Semaphore,
    /// The memory argon2 runs in, one block for all runs (they take turns).
    hash_memory: Arc<Mutex<Vec<argon2::Block>>>,
    /// Credentials that failed lately, whatever their address.
    recently_failed: Mutex<RecentlyFailed>,
    /// How long a request may wait for `hashing` ([`HASH_WAIT`]).
    hash_wait: Duration,
    /// Argon2 verifications run so far (a wrong user name runs one too).
    hash_checks: AtomicU64,
    /// Recent failures per client address.
    failures: Mutex<Failures>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No credentials, or wrong ones: 401.
    Unauthorized,
    /// Argon2 was busy past [`HASH_WAIT`]: 503.
    Busy,
    /// Too many failures from this address: 429 for this long.
    LockedOut(Duration),
}

/// What the credentials a request carries prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Valid(Via),
    /// Credentials were shown, and they are wrong: a guess.
    Wrong,
    /// None shown (a browser's first request, before it asks for a password).
    Missing,
    /// A password only argon2 could check, not run: the address is locked out.
    Unchecked,
}

/// Digests of credentials that failed, each for [`FAILED_MEMORY`]. Pure: time is
/// passed in. Invariant: at most `cap` digests.
#[derive(Debug)]
struct RecentlyFailed {
    by_digest: HashMap<Digest, Instant>,
    cap: usize,
}

impl RecentlyFailed {
    fn new(cap: usize) -> Self {
        RecentlyFailed {
            by_digest: HashMap::new(),
            cap: cap.max(1),
        }
    }

    fn contains(&self, digest: &Digest, now: Instant) -> bool {
        self.by_digest
            .get(digest)
            .is_some_and(|&at| now < at + FAILED_MEMORY)
    }

    fn insert(&mut self, digest: Digest, now: Instant) {
        if self.by_digest.len() >= self.cap && !self.by_digest.contains_key(&digest) {
            self.by_digest.retain(|_, at| now < *at + FAILED_MEMORY);
            if self.by_digest.len() >= self.cap {
                let oldest = self
                    .by_digest
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(d, _)| *d);
                if let Some(d) = oldest {
                    self.by_digest.remove(&d);
                }
            }
        }
        self.by_digest.insert(digest, now);
        debug_assert!(self.by_digest.len() <= self.cap);
    }
}

/// Argon2 could not be had within the wait.
#[derive(Debug)]
struct Busy;

/// Failed attempts per client address, and how long each must wait. Pure: time is
/// passed in. Invariant: at most `cap` addresses are remembered.
#[derive(Debug)]
pub struct Failures {
    by_address: HashMap<IpAddr, Failed>,
    cap: usize,
}

#[derive(Debug, Clone, Copy)]
struct Failed {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Failed {
    /// When this record no longer matters: a while after the last failure, or after
    /// the wait it imposed.
    fn forgotten_at(&self) -> Instant {
        self.locked_until.unwrap_or(self.last).max(self.last) + FAILURE_MEMORY
    }
}

impl Failures {
    /// A table remembering at most `cap` addresses.
    pub fn new(cap: usize) -> Self {
        Failures {
            by_address: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// How much longer `address` must wait before it may try again, if at all.
    pub fn wait(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.by_address.get(&address)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failed guess; the wait it starts, if any (the first after
    /// [`FREE_FAILURES`] guesses, then twice as long each time, up to
    /// [`MAX_LOCKOUT`]). The same wrong credentials again count too: not counting
    /// them let a flood of one guess run on without a lock-out (and a browser with
    /// a stale password gets in as soon as its user types the right one, lock-out
    /// or not).
    pub fn failed(&mut self, address: IpAddr, now: Instant) -> Option<Duration> {
        if let Some(f) = self.by_address.get(&address) {
            if now >= f.forgotten_at() {
                self.by_address.remove(&address);
            }
        }
        if !self.by_address.contains_key(&address) && self.by_address.len() >= self.cap {
            self.make_room(now);
        }
        // Room for one more: the cap holds after the insertion below.
        debug_assert!(self.by_address.contains_key(&address) || self.by_address.len() < self.cap);
        let f = self.by_address.entry(address).or_insert(Failed {
            count: 0,
            last: now,
            locked_until: None,
        });
        f.last = now;
        f.count = f.count.saturating_add(1);
        let over = f.count.checked_sub(FREE_FAILURES)?;
        let lockout = FIRST_LOCKOUT
            .checked_mul(1u32.checked_shl(over).unwrap_or(u32::MAX))
            .map_or(MAX_LOCKOUT, |d| d.min(MAX_LOCKOUT));
        f.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// Forgets what no longer matters, and if that is not enough, the address quiet
    /// the longest (an attacker with many addresses can only push out old entries).
    fn make_room(&mut self, now: Instant) {
        self.by_address.retain(|_, f| now < f.forgotten_at());
        if self.by_address.len() >= self.cap {
            let oldest = self
                .by_address
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(a, _)| *a);
            if let Some(address) = oldest {
                self.by_address.remove(&address);
            }
        }
    }
}

impl std::fmt::Debug for Auth {
    // Never prints a secret, not even hashed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("basic", &self.basic.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// How a request proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Basic,
    Bearer,
    Cookie,
    Query,
}

impl Auth {
    /// The credentials `config` asks for, `None` when it asks for none; the token
    /// cookie is HTTPS-only when the main port serves HTTPS.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Arc<Auth>>, String> {
        let credentials = &config.credentials;
        let auth = Auth::new(
            credentials.basic.as_deref(),
            credentials.token.as_deref(),
            config.tls.is_some(),
        )?;
        Ok(auth.map(Arc::new))
    }

    /// Credentials from `--auth USER:PASSWORD` (the password may be an argon2 hash)
    /// and `--token`; `None` when neither is set. `secure_cookie` marks the token
    /// cookie HTTPS-only.
    pub fn new(
        basic: Option<&str>,
        token: Option<&str>,
        secure_cookie: bool,
    ) -> Result<Option<Auth>, String> {
        if basic.is_none() && token.is_none() {
            return Ok(None);
        }
        let basic = basic.map(parse_basic).transpose()?;
        let token = token.map(check_token).transpose()?;
        Ok(Some(Auth {
            basic,
            token,
            secure_cookie,
            verified: Mutex::new(HashSet::new()),
            hashing: tokio::sync::Semaphore::new(1),
            hash_memory: Arc::default(),
            recently_failed: Mutex::new(RecentlyFailed::new(RECENTLY_FAILED)),
            hash_wait: HASH_WAIT,
            hash_checks: AtomicU64::new(0),
            failures: Mutex::new(Failures::new(MAX_TRACKED)),
        }))
    }

    /// Lets `req` through, or the response that refuses it. (Not an `async fn`:
    /// the future must not hold the request, whose body is not `Sync`.)
    fn check<'a>(
        &'a self,
        req: &'a Request,
    ) -> impl std::future::Future<Output = Result<Via, Response>> + Send + 'a {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let (headers, uri) = (req.headers(), req.uri());
        async move {
            self.admits(headers, uri, peer, Instant::now())
                .await
                .map_err(|why| self.refused(why))
        }
    }

    /// Whether a request from `peer` at `now` with these headers and this address
    /// may pass, and how it proved itself. Credentials first, the lock-out after:
    /// it holds back only what is not proven.
    async fn admits(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<Via, Refusal> {
        let address = peer.map(lockout_key);
        let locked = address.and_then(|a| self.failures_table().wait(a, now));
        match self.proof(headers, uri, locked.is_none(), now).await {
            // A success forgets nothing: the key may be shared (a NAT, an IPv6
            // site), and the owner's every request would give a guesser behind the
            // same key a clean slate. Nor need it: proven requests pass anyway.
            Ok(Proof::Valid(via)) => Ok(via),
            // A browser's first request asks for the login prompt, locked or not:
            // the owner must be able to type the password.
            Ok(Proof::Missing) => Err(Refusal::Unauthorized),
            Ok(Proof::Wrong | Proof::Unchecked) if locked.is_some() => {
                Err(Refusal::LockedOut(locked.unwrap_or_default()))
            }
            Ok(Proof::Wrong | Proof::Unchecked) => {
                if let Some(a) = address {
                    if let Some(wait) = self.failures_table().failed(a, now) {
                        info!(address = %a, wait_s = wait.as_secs(), "repeated failed logins: the address waits");
                    }
                }
                Err(Refusal::Unauthorized)
            }
            Err(Busy) => Err(Refusal::Busy),
        }
    }

    fn failures_table(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the request's credentials prove. Only the first `Authorization` header
    /// counts: trying every one would let one request carry any number of guesses.
    /// Argon2 runs only when `may_hash`; otherwise a password it alone could check
    /// is [`Proof::Unchecked`].
    async fn proof(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        may_hash: bool,
        now: Instant,
    ) -> Result<Proof, Busy> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(expected) = &self.token {
            let bearer = authorization.and_then(|v| v.strip_prefix("Bearer "));
            if bearer.is_some_and(|t| same(&sha256(t.trim().as_bytes()), expected)) {
                return Ok(Proof::Valid(Via::Bearer));
            }
            if cookies(headers, TOKEN_COOKIE).any(|t| same(&sha256(t.as_bytes()), expected)) {
                return Ok(Proof::Valid(Via::Cookie));
            }
            if query_token(uri).is_some_and(|t| same(&sha256(t.as_bytes()), expected)) {
                return Ok(Proof::Valid(Via::Query));
            }
        }
        if let Some(basic) = &self.basic {
            if let Some(encoded) = authorization.and_then(|v| v.strip_prefix("Basic ")) {
                match self.basic_ok(basic, encoded.trim(), may_hash, now).await? {
                    Some(true) => return Ok(Proof::Valid(Via::Basic)),
                    Some(false) => {}
                    None => return Ok(Proof::Unchecked),
                }
            }
        }
        // Anything shown and not right is a guess; nothing shown is none.
        let shown = headers.contains_key(header::AUTHORIZATION)
            || (self.token.is_some()
                && (cookies(headers, TOKEN_COOKIE).next().is_some() || query_token(uri).is_some()));
        Ok(if shown { Proof::Wrong } else { Proof::Missing })
    }

    /// Whether the `Basic` credentials are right; None when only argon2 could
    /// tell and `may_hash` is false.
    async fn basic_ok(
        &self,
        basic: &Basic,
        encoded: &str,
        may_hash: bool,
        now: Instant,
    ) -> Result<Option<bool>, Busy> {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return Ok(Some(false));
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Ok(Some(false));
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = same(&sha256(user), &basic.user);
        match &basic.password {
            Password::Plain(expected) => Ok(Some(user_ok & same(&sha256(password), expected))),
            Password::Hash(hash) => {
                let key = sha256(&decoded);
                if let Some(known) = self.known(&key, now) {
                    return Ok(Some(known));
                }
                if !may_hash {
                    return Ok(None);
                }
                // The password is checked whatever the user name, and against the
                // real hash (same parameters, so the same cost; no dummy to keep in
                // step): a wrong name takes as long as a right one (it answered in
                // 0.06 ms instead of 22 ms, telling which names exist).
                let permit = tokio::time::timeout(self.hash_wait, self.hashing.acquire())
                    .await
                    .map_err(|_| Busy)?;
                // The same credentials may have been checked while this request
                // waited its turn (a flood of one guess sends them all at once).
                if let Some(known) = self.known(&key, now) {
                    return Ok(Some(known));
                }
                let ok = permit.is_ok() && self.verify(hash, password).await && user_ok;
                if ok {
                    let mut cache = self.verified_cache();
                    if cache.len() >= VERIFIED_CACHE {
                        cache.clear();
                    }
                    cache.insert(key);
                } else {
                    self.recently_failed().insert(key, now);
                }
                Ok(Some(ok))
            }
        }
    }

    /// What is known of credentials (by digest) without argon2: right, wrong, or
    /// nothing.
    fn known(&self, key: &Digest, now: Instant) -> Option<bool> {
        if self.verified_cache().contains(key) {
            return Some(true);
        }
        self.recently_failed().contains(key, now).then_some(false)
    }

    /// Runs argon2 (the caller holds the `hashing` permit) off the runtime.
    async fn verify(&self, hash: &Arc<Argon2Hash>, password: &[u8]) -> bool {
        self.hash_checks.fetch_add(1, Ordering::Relaxed);
        let (hash, password, memory) = (hash.clone(), password.to_vec(), self.hash_memory.clone());
        tokio::task::spawn_blocking(move || {
            let mut memory = memory.lock().unwrap_or_else(|p| p.into_inner());
            hash.verify(&password, &mut memory)
        })
        .await
        .unwrap_or(false)
    }

    fn recently_failed(&self) -> std::sync::MutexGuard<'_, RecentlyFailed> {
        self.recently_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn verified_cache(&self) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(&self, why: Refusal) -> Response {
        match why {
            Refusal::Unauthorized => {}
            Refusal::Busy => {
                AUTH_REFUSED.count_as("busy").increment(1);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, HASH_WAIT.as_secs().to_string())],
                    "too many logins being checked at once; try again in a moment\n",
                )
                    .into_response();
            }
            Refusal::LockedOut(wait) => {
                AUTH_REFUSED.count_as("locked_out").increment(1);
                // Whole seconds, rounded up: a client retrying then is let in.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs.to_string())],
                    format!("too many failed logins from your address; try again in {secs} s\n"),
                )
                    .into_response();
            }
        }
        AUTH_FAILURES.count().increment(1);
        if self.basic.is_some() {
            (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"nalcast\", charset=\"UTF-8\"",
                )],
                "this nalcast needs a user name and password\n",
            )
                .into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                "this nalcast needs a token: open the page as /?token=YOUR-TOKEN\n",
            )
                .into_response()
        }
    }

    fn token_cookie(&self, token: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
    }
}

/// Which addresses share a lock-out: one IPv4 address (also IPv4-mapped), or an
/// IPv6 /48, the most a single site is given: keyed per /64, a holder of a /48 had
/// 65,536 lock-outs to spend. Others behind the same key (a NAT, the rest of the
/// site) lose nothing they can prove: the lock-out holds back only unproven
/// requests.
fn lockout_key(ip: IpAddr) -> IpAddr {
    match client_key(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn parse_basic(spec: &str) -> Result<Basic, String> {
    let Some((user, password)) = spec.split_once(':') else {
        return Err(
            "--auth must be USER:PASSWORD (or USER:$argon2id$… from --hash-password)".into(),
        );
    };
    if user.is_empty() || password.is_empty() {
        return Err("--auth needs a user name and a password".into());
    }
    let password = if password.starts_with("$argon2") {
        let hash = Argon2Hash::parse(password)
            .map_err(|e| format!("--auth: the password hash is not a valid argon2 hash ({e})"))?;
        Password::Hash(Arc::new(hash))
    } else {
        Password::Plain(sha256(password.as_bytes()))
    };
    Ok(Basic {
        user: sha256(user.as_bytes()),
        password,
    })
}

fn check_token(token: &str) -> Result<Digest, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    if token.len() < MIN_TOKEN_LEN || !token.chars().all(allowed) {
        return Err(format!(
            "--token must be at least {MIN_TOKEN_LEN} characters of A-Z a-z 0-9 - . _ ~ (e.g. from `od -An -tx1 -N16 /dev/urandom | tr -d ' \\n'`)"
        ));
    }
    Ok(sha256(token.as_bytes()))
}

/// Hashes a password for the config file (`--hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    Query::<Vec<(String, String)>>::try_from_uri(uri).map_or_else(|_| Vec::new(), |q| q.0)
}

fn query_token(uri: &Uri) -> Option<String> {
    query_pairs(uri)
        .into_iter()
        .find_map(|(k, v)| (k == "token").then_some(v))
}

/// The middleware: lets proven requests through, refuses the rest with 401 (every
/// path it guards: the one open path, the main port's `/healthz`, is routed around
/// it). Opening the page with `?token=` stores the token in a cookie and redirects
/// to the same address without it, so it stays out of the address bar; a WebSocket
/// handshake with `?token=` (the original page on the legacy port) is let through.
pub async fn require(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    // A browser's CORS preflight never carries credentials (the Fetch standard):
    // refused here, a player on another page (a dashboard, Mainsail) could never
    // send the request that does. It goes on to the CORS layers, which answer it
    // for the --allow-origin list only; no route answers OPTIONS with anything
    // but its methods. The request that follows is checked as any other.
    if is_preflight(&req) {
        return next.run(req).await;
    }
    match auth.check(&req).await {
        Ok(Via::Query)
            if req.method() == Method::GET
                && is_page(req.uri())
                && !req.headers().contains_key(header::UPGRADE) =>
        {
            let (token, rest): (Vec<_>, Vec<_>) = query_pairs(req.uri())
                .into_iter()
                .partition(|(k, _)| k == "token");
            let token = token.into_iter().next().map(|(_, v)| v).unwrap_or_default();
            let query = serde_urlencoded::to_string(&rest).unwrap_or_default();
            let location = if query.is_empty() {
                req.uri().path().to_owned()
            } else {
                format!("{}?{query}", req.uri().path())
            };
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (header::SET_COOKIE, auth.token_cookie(&token)),
                ],
            )
                .into_response()
        }
        Ok(via) => {
            debug!(?via, path = req.uri().path(), "authorised");
            next.run(req).await
        }
        Err(refusal) => refusal,
    }
}

fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn is_page(uri: &Uri) -> bool {
    matches!(uri.path(), "/" | "/index.html")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic_header(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {value}").parse().expect("header"),
        );
        h
    }

    fn uri(s: &str) -> Uri {
        s.parse().expect("uri")
    }

    /// How a request with no known address passes, if it does.
    async fn admit(auth: &Auth, headers: &HeaderMap, uri: &Uri) -> Option<Via> {
        auth.admits(headers, uri, None, Instant::now()).await.ok()
    }

    fn hashed_auth() -> Auth {
        let hash = hash_password("s3cret pass").expect("hash");
        Auth::new(Some(&format!("ann:{hash}")), None, false)
            .expect("valid")
            .expect("some")
    }

    fn checks(auth: &Auth) -> u64 {
        auth.hash_checks.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_wrong_user_name_costs_an_argon2_run_like_a_right_one() {
        let auth = hashed_auth();
        let root = uri("/");
        // (user, password, admitted)
        let cases = [
            ("bob", "s3cret pass", false),
            ("bob", "guess", false),
            ("ann", "guess", false),
            ("", "", false),
            ("ann", "s3cret pass", true),
        ];
        for (user, password, admitted) in cases {
            let before = checks(&auth);
            let got = admit(&auth, &basic_header(user, password), &root).await;
            assert_eq!(got.is_some(), admitted, "{user}:{password}");
            assert_eq!(
                checks(&auth),
                before + 1,
                "{user}:{password}: one argon2 run"
            );
        }
        // Proven credentials come from the cache afterwards.
        let before = checks(&auth);
        assert!(admit(&auth, &basic_header("ann", "s3cret pass"), &root)
            .await
            .is_some());
        assert_eq!(checks(&auth), before);
    }

    #[tokio::test]
    async fn argon2_is_waited_for_at_most_the_deadline_then_503() {
        let mut auth = hashed_auth();
        auth.hash_wait = Duration::from_millis(50);
        let held = auth.hashing.acquire().await.expect("permit");
        let got = auth
            .admits(
                &basic_header("ann", "s3cret pass"),
                &uri("/"),
                None,
                Instant::now(),
            )
            .await;
        assert_eq!(got, Err(Refusal::Busy));
        drop(held);
        let response = auth.refused(Refusal::Busy);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        // Once free, the same request passes.
        assert_eq!(
            admit(&auth, &basic_header("ann", "s3cret pass"), &uri("/")).await,
            Some(Via::Basic)
        );
    }

    #[tokio::test]
    async fn only_the_first_authorization_header_is_tried() {
        let token = "0123456789abcdef-token";
        let plain = Auth::new(Some("ann:pw"), Some(token), false)
            .expect("valid")
            .expect("some");
        let good_basic = basic_header("ann", "pw")[header::AUTHORIZATION].clone();
        let bad_basic = basic_header("ann", "nope")[header::AUTHORIZATION].clone();
        let good_bearer: axum::http::HeaderValue = format!("Bearer {token}").parse().expect("h");
        let bad_bearer: axum::http::HeaderValue =
            "Bearer 0123456789abcdef-tokeN".parse().expect("h");
        let cases = [
            (
                vec![good_basic.clone(), bad_basic.clone()],
                Some(Via::Basic),
            ),
            (vec![bad_basic.clone(), good_basic.clone()], None),
            (
                vec![good_bearer.clone(), bad_bearer.clone()],
                Some(Via::Bearer),
            ),
            (vec![bad_bearer.clone(), good_bearer.clone()], None),
            (vec![bad_bearer, good_basic], None),
        ];
        for (values, expected) in cases {
            let mut headers = HeaderMap::new();
            for v in &values {
                headers.append(header::AUTHORIZATION, v.clone());
            }
            assert_eq!(
                admit(&plain, &headers, &uri("/")).await,
                expected,
                "{values:?}"
            );
        }
        // With a hash: a hundred guesses in one request cost one argon2 run.
        let hashed = hashed_auth();
        let mut headers = HeaderMap::new();
        for i in 0..100 {
            headers.append(
                header::AUTHORIZATION,
                basic_header("ann", &format!("guess{i}"))[header::AUTHORIZATION].clone(),
            );
        }
        assert_eq!(admit(&hashed, &headers, &uri("/")).await, None);
        assert_eq!(checks(&hashed), 1);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_same_wrong_credentials_again_count_too() {
        // Before, a repeated guess was no new guess: a flood of one wrong password
        // never locked anything out (0 lock-outs, argon2 every time).
        let t0 = Instant::now();
        let a = ip("192.0.2.7");
        let mut f = Failures::new(16);
        for _ in 0..FREE_FAILURES - 1 {
            assert_eq!(f.failed(a, t0), None);
        }
        assert_eq!(f.failed(a, t0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn recently_failed_digests_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut r = RecentlyFailed::new(4);
        for i in 0..10u8 {
            r.insert(sha256(&[i]), t0 + Duration::from_millis(u64::from(i)));
            assert!(r.by_digest.len() <= 4);
        }
        let late = t0 + Duration::from_millis(9);
        assert!(r.contains(&sha256(&[9]), late) && r.contains(&sha256(&[6]), late));
        assert!(!r.contains(&sha256(&[5]), late), "the oldest made room");
        assert!(!r.contains(&sha256(&[9]), late + FAILED_MEMORY));
    }

    #[test]
    fn failures_make_an_address_wait_longer_each_time_then_are_forgotten() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let a = ip("192.0.2.7");
        let mut f = Failures::new(16);
        for i in 0..FREE_FAILURES - 1 {
            assert_eq!(
                f.failed(a, t0 + s(u64::from(i))),
                None,
                "failure {i} is free"
            );
        }
        // The fifth failure within a minute starts a wait of one second...
        let t5 = t0 + s(4);
        assert_eq!(f.failed(a, t5), Some(s(1)));
        assert_eq!(f.wait(a, t5), Some(s(1)));
        assert_eq!(
            f.wait(a, t5 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            f.wait(ip("192.0.2.8"), t5),
            None,
            "other addresses are not held"
        );
        // ...which ends; every further failure doubles it, up to the longest.
        assert_eq!(f.wait(a, t5 + s(1)), None);
        let mut t = t5 + s(1);
        for expected in [2, 4, 8, 16, 32, 60, 60] {
            assert_eq!(f.failed(a, t), Some(s(expected)));
            t += s(expected);
            assert_eq!(f.wait(a, t), None);
        }
        // (A fresh table for what follows.)
        let mut f = Failures::new(16);
        // Failures spread wider than the memory never add up.
        let mut t = t0;
        for _ in 0..20 {
            assert_eq!(f.failed(a, t), None);
            t += FAILURE_MEMORY;
        }
        // After a wait, the memory runs from the wait's end.
        for _ in 0..FREE_FAILURES {
            f.failed(a, t);
        }
        assert_eq!(f.failed(a, t + s(1) + FAILURE_MEMORY - s(1)), Some(s(2)));
        let quiet = t + s(1) + FAILURE_MEMORY - s(1) + s(2) + FAILURE_MEMORY;
        assert_eq!(f.failed(a, quiet), None, "forgotten after a quiet minute");
    }

    #[test]
    fn the_failure_table_stays_bounded() {
        let t0 = Instant::now();
        let mut f = Failures::new(8);
        let locked = ip("192.0.2.1");
        for _ in 0..FREE_FAILURES {
            f.failed(locked, t0);
        }
        // Many other addresses, one failure each: the table never grows past its
        // cap, and the address quiet longest goes first.
        for i in 0..1000u32 {
            let other = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            f.failed(other, t0 + Duration::from_millis(u64::from(i) + 1));
            assert!(f.by_address.len() <= 8);
        }
        assert_eq!(f.wait(locked, t0), None, "pushed out by newer ones");
        // Entries past their memory go before the one quiet longest: here the
        // address that waited is remembered longer than one with a single failure.
        let mut f = Failures::new(2);
        let ms = Duration::from_millis;
        for _ in 0..FREE_FAILURES {
            f.failed(ip("192.0.2.1"), t0);
        }
        f.failed(ip("192.0.2.2"), t0 + ms(500));
        let later = t0 + ms(500) + FAILURE_MEMORY + ms(200);
        f.failed(ip("192.0.2.3"), later);
        assert_eq!(f.by_address.len(), 2);
        assert!(f.by_address.contains_key(&ip("192.0.2.1")));
        assert!(f.by_address.contains_key(&ip("192.0.2.3")));
    }

    async fn at(auth: &Auth, headers: &HeaderMap, peer: &str, t: Instant) -> Result<Via, Refusal> {
        auth.admits(headers, &uri("/"), Some(ip(peer)), t).await
    }

    #[tokio::test]
    async fn an_address_with_repeated_failures_waits_but_proven_requests_pass() {
        let auth = Auth::new(Some("ann:pw"), None, false)
            .expect("valid")
            .expect("some");
        let (good, bad, none) = (
            basic_header("ann", "pw"),
            basic_header("ann", "x"),
            HeaderMap::new(),
        );
        let t0 = Instant::now();
        // Requests without credentials are no guesses: they never count.
        for _ in 0..20 {
            assert_eq!(
                at(&auth, &none, "192.0.2.7", t0).await,
                Err(Refusal::Unauthorized)
            );
        }
        // Five wrong guesses from one IPv6 /48 (any of its addresses, the same
        // guess or not)...
        for i in 1..=FREE_FAILURES {
            let peer = format!("2001:db8:1:{i}::{i}");
            assert_eq!(at(&auth, &bad, &peer, t0).await, Err(Refusal::Unauthorized));
        }
        // ...and the whole /48's guesses wait; other addresses' do not.
        let held = Err(Refusal::LockedOut(Duration::from_secs(1)));
        assert_eq!(at(&auth, &bad, "2001:db8:1:ffff::99", t0).await, held);
        assert_eq!(
            at(&auth, &basic_header("ann", "new"), "2001:db8:1:2::2", t0).await,
            held
        );
        assert_eq!(
            at(&auth, &bad, "2001:db8:2::1", t0).await,
            Err(Refusal::Unauthorized)
        );
        // Proven credentials pass the lock-out: a neighbour cannot lock the owner
        // out (before, the owner's right password got 429)...
        assert_eq!(
            at(&auth, &good, "2001:db8:1:2::99", t0).await,
            Ok(Via::Basic)
        );
        // ...and the owner's success does not wipe the neighbour's slate (with
        // every request of the owner's page it would buy five more guesses).
        assert_eq!(at(&auth, &bad, "2001:db8:1:ffff::99", t0).await, held);
        // A browser's first request still gets the login prompt, never 429.
        for _ in 0..FREE_FAILURES {
            let _ = at(&auth, &bad, "192.0.2.9", t0).await;
        }
        assert!(matches!(
            at(&auth, &bad, "192.0.2.9", t0).await,
            Err(Refusal::LockedOut(_))
        ));
        assert_eq!(
            at(&auth, &none, "192.0.2.9", t0).await,
            Err(Refusal::Unauthorized)
        );
        // The answer to a held address: 429 with the wait, rounded up.
        let response = auth.refused(Refusal::LockedOut(Duration::from_millis(1500)));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }

    #[tokio::test]
    async fn tokens_and_cookies_pass_a_lock_out_and_guesses_there_cost_no_argon2() {
        let token = "0123456789abcdef-token";
        let hash = hash_password("s3cret pass").expect("hash");
        let auth = Auth::new(Some(&format!("ann:{hash}")), Some(token), false)
            .expect("valid")
            .expect("some");
        let t0 = Instant::now();
        let peer = "192.0.2.7";
        for i in 0..FREE_FAILURES {
            let wrong = basic_header("ann", &format!("guess {i}"));
            assert_eq!(
                at(&auth, &wrong, peer, t0).await,
                Err(Refusal::Unauthorized)
            );
        }
        let runs = checks(&auth);
        assert_eq!(runs, u64::from(FREE_FAILURES));
        // Locked out: a new guess gets no argon2 run...
        let fresh = basic_header("ann", "fresh guess");
        assert!(matches!(
            at(&auth, &fresh, peer, t0).await,
            Err(Refusal::LockedOut(_))
        ));
        assert_eq!(checks(&auth), runs);
        // ...but a token, the cookie, or a password known right passes.
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("h"),
        );
        assert_eq!(at(&auth, &bearer, peer, t0).await, Ok(Via::Bearer));
        for i in 0..FREE_FAILURES {
            let _ = at(&auth, &basic_header("ann", &format!("guess {i}")), peer, t0).await;
        }
        let mut cookie = HeaderMap::new();
        cookie.insert(
            header::COOKIE,
            format!("{TOKEN_COOKIE}={token}").parse().expect("h"),
        );
        assert_eq!(at(&auth, &cookie, peer, t0).await, Ok(Via::Cookie));
        // The right password from another address makes it known...
        let good = basic_header("ann", "s3cret pass");
        assert_eq!(at(&auth, &good, "192.0.2.8", t0).await, Ok(Via::Basic));
        for i in 0..FREE_FAILURES {
            let _ = at(&auth, &basic_header("ann", &format!("guess {i}")), peer, t0).await;
        }
        assert!(matches!(
            at(&auth, &fresh, peer, t0).await,
            Err(Refusal::LockedOut(_))
        ));
        // ...so the locked-out address proves it without argon2.
        let runs = checks(&auth);
        assert_eq!(at(&auth, &good, peer, t0).await, Ok(Via::Basic));
        assert_eq!(checks(&auth), runs);
    }

    #[tokio::test]
    async fn a_repeated_wrong_password_runs_argon2_once() {
        // Before, each of a flood of one wrong password ran argon2 (memory 13 ->
        // 251 MB) and none counted towards a lock-out.
        let auth = hashed_auth();
        let wrong = basic_header("ann", "the same guess");
        let t0 = Instant::now();
        for i in 0..50u32 {
            let peer = format!("10.0.{}.{}", i / 200, i % 200);
            assert_eq!(
                at(&auth, &wrong, &peer, t0).await,
                Err(Refusal::Unauthorized)
            );
        }
        assert_eq!(checks(&auth), 1);
        // Also when they all come at once and wait for their turn together.
        let auth = hashed_auth();
        let at_once = (0..20).map(|i| {
            let (auth, wrong) = (&auth, &wrong);
            async move { at(auth, wrong, &format!("10.1.0.{i}"), t0).await }
        });
        let answers = futures_util::future::join_all(at_once).await;
        assert!(answers.iter().all(|a| *a == Err(Refusal::Unauthorized)));
        assert_eq!(checks(&auth), 1);
        // It counts at its address like any guess.
        for _ in 0..FREE_FAILURES {
            let _ = at(&auth, &wrong, "192.0.2.1", t0).await;
        }
        assert!(matches!(
            at(&auth, &wrong, "192.0.2.1", t0).await,
            Err(Refusal::LockedOut(_))
        ));
        assert_eq!(checks(&auth), 1);
        // argon2's memory is one block, reused.
        let blocks = auth.hash_memory.lock().expect("memory").len();
        assert_eq!(blocks, argon2::Params::default().block_count());
    }

    #[test]
    fn lockouts_are_kept_per_ipv4_address_and_ipv6_48() {
        for (a, b, same) in [
            ("192.0.2.1", "192.0.2.2", false),
            ("192.0.2.1", "::ffff:192.0.2.1", true),
            ("2001:db8:1:2::1", "2001:db8:1:ffff::1", true),
            ("2001:db8:1::1", "2001:db8:2::1", false),
        ] {
            assert_eq!(lockout_key(ip(a)) == lockout_key(ip(b)), same, "{a} {b}");
        }
    }

    #[tokio::test]
    async fn plain_and_hashed_passwords_are_checked() {
        let hash = hash_password("s3cret pass").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        for spec in ["ann:s3cret pass".to_owned(), format!("ann:{hash}")] {
            let auth = Auth::new(Some(&spec), None, false)
                .expect("valid")
                .expect("some");
            let root = uri("/");
            assert_eq!(
                admit(&auth, &basic_header("ann", "s3cret pass"), &root).await,
                Some(Via::Basic),
                "{spec}"
            );
            // Twice: the second time from the cache for hashes.
            assert_eq!(
                admit(&auth, &basic_header("ann", "s3cret pass"), &root).await,
                Some(Via::Basic)
            );
            for (user, password) in [("ann", "s3cret"), ("bob", "s3cret pass"), ("", "")] {
                assert_eq!(
                    admit(&auth, &basic_header(user, password), &root).await,
                    None,
                    "{user}:{password}"
                );
            }
            assert_eq!(admit(&auth, &HeaderMap::new(), &root).await, None);
        }
    }

    #[tokio::test]
    async fn token_is_taken_from_header_cookie_or_query() {
        let token = "0123456789abcdef-token";
        let auth = Auth::new(None, Some(token), true)
            .expect("valid")
            .expect("some");
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("h"),
        );
        assert_eq!(admit(&auth, &bearer, &uri("/ws")).await, Some(Via::Bearer));
        let mut cookie = HeaderMap::new();
        cookie.insert(
            header::COOKIE,
            format!("a=b; {TOKEN_COOKIE}={token}").parse().expect("h"),
        );
        assert_eq!(admit(&auth, &cookie, &uri("/ws")).await, Some(Via::Cookie));
        assert_eq!(
            admit(
                &auth,
                &HeaderMap::new(),
                &uri(&format!("/ws?x=1&token={token}"))
            )
            .await,
            Some(Via::Query)
        );
        assert_eq!(
            admit(
                &auth,
                &HeaderMap::new(),
                &uri("/ws?token=0123456789abcdef-tokeN")
            )
            .await,
            None
        );
        assert!(auth.token_cookie(token).ends_with("; Secure"));
    }

    #[test]
    fn bad_credentials_config_is_a_clear_error() {
        for (basic, token, needle) in [
            (Some("nocolon"), None, "USER:PASSWORD"),
            (Some(":pw"), None, "user name"),
            (
                Some("ann:$argon2id$broken"),
                None,
                "not a valid argon2 hash",
            ),
            (None, Some("short"), "at least 16"),
            (None, Some("has spaces in it, sadly"), "at least 16"),
        ] {
            let err = Auth::new(basic, token, false).expect_err("refused");
            assert!(err.contains(needle), "{err}");
        }
        assert!(Auth::new(None, None, false).expect("ok").is_none());
    }
}
