//! Optional access control: HTTP Basic (a plain password or an argon2 hash of one)
//! and/or a token, taken from an `Authorization: Bearer` header, a cookie or a
//! `?token=` query parameter, so both the page and its WebSocket work. Everything
//! but the main port's `/healthz` needs it. Secrets are compared in constant time (as SHA-256
//! digests, so lengths leak nothing either).
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::PasswordHash;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use tracing::debug;

/// The cookie that carries the token after the page was opened with `?token=`.
pub const TOKEN_COOKIE: &str = "nalcast_token";
/// Fewest characters a token may have.
const MIN_TOKEN_LEN: usize = 16;
/// Credentials already checked against a password hash (digests), so a browser's
/// every request does not pay for argon2 again.
const VERIFIED_CACHE: usize = 64;

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
    /// A PHC string (`$argon2id$v=19$...`).
    Hash(String),
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
        }))
    }

    async fn admits(&self, headers: &HeaderMap, uri: &Uri) -> Option<Via> {
        if let Some(expected) = &self.token {
            let bearer = headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .filter_map(|v| v.to_str().ok()?.strip_prefix("Bearer "));
            if bearer
                .into_iter()
                .any(|t| same(&sha256(t.trim().as_bytes()), expected))
            {
                return Some(Via::Bearer);
            }
            if cookies(headers, TOKEN_COOKIE).any(|t| same(&sha256(t.as_bytes()), expected)) {
                return Some(Via::Cookie);
            }
            if query_token(uri).is_some_and(|t| same(&sha256(t.as_bytes()), expected)) {
                return Some(Via::Query);
            }
        }
        if let Some(basic) = &self.basic {
            for value in headers.get_all(header::AUTHORIZATION) {
                if let Some(encoded) = value.to_str().ok().and_then(|v| v.strip_prefix("Basic ")) {
                    if self.basic_ok(basic, encoded.trim()).await {
                        return Some(Via::Basic);
                    }
                }
            }
        }
        None
    }

    async fn basic_ok(&self, basic: &Basic, encoded: &str) -> bool {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = same(&sha256(user), &basic.user);
        match &basic.password {
            Password::Plain(expected) => user_ok & same(&sha256(password), expected),
            Password::Hash(phc) => {
                if !user_ok {
                    return false;
                }
                let key = sha256(&decoded);
                if self.verified_cache().contains(&key) {
                    return true;
                }
                let Ok(_permit) = self.hashing.acquire().await else {
                    return false;
                };
                let (phc, password) = (phc.clone(), password.to_vec());
                let ok = tokio::task::spawn_blocking(move || verify_hash(&phc, &password))
                    .await
                    .unwrap_or(false);
                if ok {
                    let mut cache = self.verified_cache();
                    if cache.len() >= VERIFIED_CACHE {
                        cache.clear();
                    }
                    cache.insert(key);
                }
                ok
            }
        }
    }

    fn verified_cache(&self) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refused(&self) -> Response {
        metrics::counter!("nalcast_auth_failures_total").increment(1);
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

fn verify_hash(phc: &str, password: &[u8]) -> bool {
    use argon2::password_hash::PasswordVerifier;
    PasswordHash::new(phc).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password, &hash)
            .is_ok()
    })
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
        let parsed = PasswordHash::new(password)
            .map_err(|e| format!("--auth: the password hash is not a valid argon2 hash ({e})"))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err("--auth: only argon2 password hashes are accepted".into());
        }
        Password::Hash(password.to_owned())
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
    match auth.admits(req.headers(), req.uri()).await {
        Some(Via::Query)
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
        Some(via) => {
            debug!(?via, path = req.uri().path(), "authorised");
            next.run(req).await
        }
        None => auth.refused(),
    }
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
                auth.admits(&basic_header("ann", "s3cret pass"), &root)
                    .await,
                Some(Via::Basic),
                "{spec}"
            );
            // Twice: the second time from the cache for hashes.
            assert_eq!(
                auth.admits(&basic_header("ann", "s3cret pass"), &root)
                    .await,
                Some(Via::Basic)
            );
            for (user, password) in [("ann", "s3cret"), ("bob", "s3cret pass"), ("", "")] {
                assert_eq!(
                    auth.admits(&basic_header(user, password), &root).await,
                    None,
                    "{user}:{password}"
                );
            }
            assert_eq!(auth.admits(&HeaderMap::new(), &root).await, None);
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
        assert_eq!(auth.admits(&bearer, &uri("/ws")).await, Some(Via::Bearer));
        let mut cookie = HeaderMap::new();
        cookie.insert(
            header::COOKIE,
            format!("a=b; {TOKEN_COOKIE}={token}").parse().expect("h"),
        );
        assert_eq!(auth.admits(&cookie, &uri("/ws")).await, Some(Via::Cookie));
        assert_eq!(
            auth.admits(&HeaderMap::new(), &uri(&format!("/ws?x=1&token={token}")))
                .await,
            Some(Via::Query)
        );
        assert_eq!(
            auth.admits(&HeaderMap::new(), &uri("/ws?token=0123456789abcdef-tokeN"))
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
