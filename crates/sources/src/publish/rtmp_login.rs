//! RTMP logins for `rtmp://user:password@host/app/key` (pure: the server's refusal
//! text in, the next `connect`'s query string out).
//!
//! RTMP has no login of its own; servers that want one (Wowza, Adobe Media Server,
//! Limelight's ingest) refuse the first `connect` and say in the refusal's
//! description which scheme they take (`authmod=adobe` or `authmod=llnw`). The
//! client then connects again, on a new connection, with `?authmod=…&user=…`
//! appended to the application (and the tcUrl); the server's second refusal
//! carries `?reason=needauth&…` with its salt, challenge and opaque (Adobe) or
//! nonce (Limelight); the third connect carries the response, an MD5 over them and
//! the password. The password itself never goes on the wire. A server that asks
//! for nothing accepts the first connect and the login is never used. Written
//! from the schemes as ffmpeg's and librtmp's clients speak them, which servers
//! accept; the test server in the e2e tests is checked against ffmpeg's client.
//! Ours because no crate does it and rml_rtmp leaves the connect's strings to us.
use base64::Engine;
use md5::{Digest, Md5};

/// Connections a login may take: the plain one, the one naming the user, and
/// the one with the response. A server refusing more is refusing the login.
const MAX_CONNECTS: u8 = 3;

/// A login scheme a server asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Adobe,
    Llnw,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Adobe => "adobe",
            Scheme::Llnw => "llnw",
        }
    }
}

/// The state of one publisher's login across its connects.
pub struct RtmpLogin {
    user: String,
    password: String,
    /// What the next connect appends to the application and tcUrl ("" at first).
    query: String,
    connects: u8,
    /// A response has been sent: a further refusal is final.
    responded: bool,
}

impl std::fmt::Debug for RtmpLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtmpLogin(connects {})", self.connects)
    }
}

impl RtmpLogin {
    /// A login as `user` with `password`, not tried yet.
    pub fn new(user: &str, password: &str) -> RtmpLogin {
        RtmpLogin {
            user: user.to_owned(),
            password: password.to_owned(),
            query: String::new(),
            connects: 0,
            responded: false,
        }
    }

    /// The query string the next connect appends to the application and tcUrl;
    /// counts the connect.
    pub fn next_connect(&mut self) -> &str {
        self.connects = self.connects.saturating_add(1);
        &self.query
    }

    /// The server refused a connect, saying `description`: prepares the next
    /// connect's query, or says why there is none (for the log and the API: never
    /// the password). `app` is the application without a query; `nonce` is fresh
    /// randomness for the client's challenge.
    pub fn refused(&mut self, description: &str, app: &str, nonce: u32) -> Result<(), String> {
        let scheme = if description.contains("authmod=adobe") {
            Scheme::Adobe
        } else if description.contains("authmod=llnw") {
            Scheme::Llnw
        } else {
            return Err(refused_without_login(description, app));
        };
        let name = scheme.name();
        if description.contains("?reason=authfailed") {
            return Err(format!(
                "the server refused the user and password (authmod={name})"
            ));
        }
        if description.contains("?reason=nosuchuser") {
            return Err(format!("the server knows no such user (authmod={name})"));
        }
        if self.responded || self.connects >= MAX_CONNECTS {
            return Err(format!(
                "the server refused the login (authmod={name}): {description}"
            ));
        }
        if let Some(at) = description.find("?reason=needauth") {
            let params = Params::parse(&description[at + 1..]);
            self.query = match scheme {
                Scheme::Adobe => self.adobe(&params, nonce),
                Scheme::Llnw => self.llnw(&params, app, nonce)?,
            };
            self.responded = true;
            Ok(())
        } else if description.contains("need auth") && self.query.is_empty() {
            // Red5's refusal reads "code=403 .need auth": any "need auth" will do.
            self.query = format!("?authmod={name}&user={}", self.user);
            Ok(())
        } else {
            Err(format!(
                "the server refused the login (authmod={name}): {description}"
            ))
        }
    }

    /// Adobe's response: base64(MD5(base64(MD5(user salt password)) opaque-or-challenge
    /// client-challenge)).
    fn adobe(&self, params: &Params, nonce: u32) -> String {
        let user = params.user.unwrap_or(&self.user);
        let salt = params.salt.unwrap_or_default();
        let challenge = format!("{nonce:08x}");
        let b64 = |parts: &[&str]| {
            let mut md5 = Md5::new();
            for part in parts {
                md5.update(part.as_bytes());
            }
            base64::engine::general_purpose::STANDARD.encode(md5.finalize())
        };
        let secret = b64(&[user, salt, &self.password]);
        let server = params.opaque.or(params.challenge).unwrap_or_default();
        let response = b64(&[&secret, server, &challenge]);
        let mut query =
            format!("?authmod=adobe&user={user}&challenge={challenge}&response={response}");
        if let Some(opaque) = params.opaque {
            query.push_str("&opaque=");
            query.push_str(opaque);
        }
        query
    }

    /// Limelight's response: HTTP Digest's (RFC 2617, qop "auth", realm "live",
    /// method "publish", the application's path as the URI).
    fn llnw(&self, params: &Params, app: &str, nonce: u32) -> Result<String, String> {
        let user = params.user.unwrap_or(&self.user);
        let Some(server_nonce) = params.nonce else {
            return Err("the server asked for a Limelight login without a nonce".into());
        };
        let cnonce = format!("{nonce:08x}");
        let hex = |text: &str| {
            Md5::digest(text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let instance = if app.contains('/') { "" } else { "/_definst_" };
        let ha1 = hex(&format!("{user}:live:{}", self.password));
        let ha2 = hex(&format!("publish:/{app}{instance}"));
        let response = hex(&format!(
            "{ha1}:{server_nonce}:00000001:{cnonce}:auth:{ha2}"
        ));
        Ok(format!(
            "?authmod=llnw&user={user}&nonce={server_nonce}&cnonce={cnonce}&nc=00000001&response={response}"
        ))
    }
}

/// Why a connect the server refused with `description` ends the attempt when there
/// is no login to give (no user in the URL, or a refusal that asks for none).
pub fn refused_without_login(description: &str, app: &str) -> String {
    if description.contains("authmod=") {
        format!(
            "the server asks for a login: give the URL a user and password (rtmp://user:password@host/…): {description}"
        )
    } else {
        format!("the server refused application '{app}': {description}")
    }
}

/// What a `?reason=needauth&…` refusal carries (as sent: not percent-decoded).
#[derive(Debug, Default)]
struct Params<'a> {
    user: Option<&'a str>,
    salt: Option<&'a str>,
    challenge: Option<&'a str>,
    opaque: Option<&'a str>,
    nonce: Option<&'a str>,
}

impl<'a> Params<'a> {
    fn parse(query: &'a str) -> Params<'a> {
        let mut params = Params::default();
        // The parameters end where the description's text does.
        let query = query.split_whitespace().next().unwrap_or_default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "user" => &mut params.user,
                "salt" => &mut params.salt,
                "challenge" => &mut params.challenge,
                "opaque" => &mut params.opaque,
                "nonce" => &mut params.nonce,
                _ => continue,
            };
            *slot = Some(value);
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEED_ADOBE: &str = "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : ";

    /// The three connects of an Adobe login, with a vector worked out by hand
    /// (MD5 and base64 of the strings below).
    #[test]
    fn an_adobe_login_names_the_user_then_answers_the_challenge() {
        let mut login = RtmpLogin::new("user", "secret");
        assert_eq!(login.next_connect(), "", "the first connect is plain");
        login.refused(NEED_ADOBE, "live", 0).expect("asks the user");
        assert_eq!(login.next_connect(), "?authmod=adobe&user=user");
        let challenge = "[ AccessManager.Reject ] : [ authmod=adobe ] : \
            ?reason=needauth&user=user&salt=c2FsdA==&challenge=Y2hhbA==&opaque=b3BhcXVl";
        login
            .refused(challenge, "live", 0x0a1b_2c3d)
            .expect("answers");
        assert_eq!(
            login.next_connect(),
            "?authmod=adobe&user=user&challenge=0a1b2c3d&response=uojfDOGCjHxxBc/yQa7/5Q==&opaque=b3BhcXVl"
        );
        // Refused again: wrong password, said as such, or any other refusal.
        let failed = "[ AccessManager.Reject ] : [ authmod=adobe ] : ?reason=authfailed&opaque=x";
        let err = login.refused(failed, "live", 0).unwrap_err();
        assert!(err.contains("refused the user and password"), "{err}");
        assert!(!err.contains("secret"));
        let err = login.refused(challenge, "live", 0).unwrap_err();
        assert!(err.contains("refused the login"), "{err}");
    }

    #[test]
    fn without_opaque_the_servers_challenge_is_hashed() {
        let mut login = RtmpLogin::new("user", "secret");
        login.next_connect();
        let challenge = "[ AccessManager.Reject ] : [ authmod=adobe ] : \
            ?reason=needauth&user=user&salt=c2FsdA==&challenge=b3BhcXVl";
        login
            .refused(challenge, "live", 0x0a1b_2c3d)
            .expect("answers");
        // Same hash as with opaque b3BhcXVl, and no opaque sent back.
        assert_eq!(
            login.next_connect(),
            "?authmod=adobe&user=user&challenge=0a1b2c3d&response=uojfDOGCjHxxBc/yQa7/5Q=="
        );
    }

    #[test]
    fn a_limelight_login_answers_as_http_digest() {
        let mut login = RtmpLogin::new("user", "secret");
        login.next_connect();
        login
            .refused("[ code=403 need auth; authmod=llnw ]", "live", 0)
            .expect("asks the user");
        assert_eq!(login.next_connect(), "?authmod=llnw&user=user");
        login
            .refused(
                "[ AccessManager.Reject ] : [ authmod=llnw ] : ?reason=needauth&user=user&nonce=NONCE123",
                "live",
                0x0a1b_2c3d,
            )
            .expect("answers");
        assert_eq!(
            login.next_connect(),
            "?authmod=llnw&user=user&nonce=NONCE123&cnonce=0a1b2c3d&nc=00000001&response=2a4a6668676bf411ef2b4d6200819669"
        );
    }

    #[test]
    fn refusals_that_are_no_login_request_end_the_attempt() {
        let mut login = RtmpLogin::new("u", "p");
        login.next_connect();
        let err = login
            .refused("NetConnection.Connect.Rejected: go away", "live", 0)
            .unwrap_err();
        assert!(err.contains("refused application 'live'"), "{err}");
        let err = login
            .refused("[ authmod=adobe ] : ?reason=nosuchuser", "live", 0)
            .unwrap_err();
        assert!(err.contains("no such user"), "{err}");
        // A server asking for the user again and again is not followed forever.
        let mut login = RtmpLogin::new("u", "hunter2");
        login.next_connect();
        login.refused(NEED_ADOBE, "live", 0).expect("once");
        login.next_connect();
        assert!(login.refused(NEED_ADOBE, "live", 0).is_err());
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
