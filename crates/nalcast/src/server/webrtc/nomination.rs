//! The viewer's first connectivity check counts as its nomination.
//!
//! nalcast is ICE-lite: it sends no checks of its own and sends on the path the
//! viewer (the controlling agent) nominates with USE-CANDIDATE. Browsers nominate
//! in a second check, after the first one succeeded: Chromium sends it 50 ms
//! later. Its DTLS ClientHello comes right after the first check's answer, and
//! str0m holds nalcast's reply until a path is nominated, so every WebRTC viewer's
//! first picture waited those 50 ms (a capture on loopback: check at 0 ms,
//! ClientHello at 3 ms, nominating check and ServerHello at 52 ms).
//!
//! So the first check that proves the viewer knows the session's password (its
//! MESSAGE-INTEGRITY checks with nalcast's ICE password) is handed to str0m as
//! if it nominated its path, as ICE's aggressive nomination does (RFC 5245 section
//! 8.1.1.2: USE-CANDIDATE on every check): the same request with USE-CANDIDATE,
//! signed again with the same password. Only the first one: the viewer's own
//! nominations follow, and str0m sends on the best nominated path. Ours because
//! str0m has no setting for it; its STUN message type and HMAC do the parsing and
//! signing.
use str0m::ice::StunMessage;

/// A session's early nomination: done once.
pub(super) struct EarlyNomination {
    /// nalcast's ICE password for the session (the checks' integrity key).
    password: String,
    /// A check has nominated (the viewer's own, or one made so here).
    done: bool,
}

impl EarlyNomination {
    pub(super) fn new(password: String) -> EarlyNomination {
        EarlyNomination {
            password,
            done: false,
        }
    }

    /// `datagram` as str0m is to see it: until a path is nominated, a check that
    /// does not nominate yet is made to.
    pub(super) fn pass(&mut self, datagram: Vec<u8>) -> Vec<u8> {
        if self.done || !super::may_be_stun(&datagram) {
            return datagram;
        }
        match nominating(&datagram, &self.password) {
            Check::Nominates => {
                self.done = true;
                datagram
            }
            Check::MadeToNominate(check) => {
                self.done = true;
                check
            }
            Check::Other => datagram,
        }
    }
}

/// What a datagram is, for the early nomination.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// A binding request with USE-CANDIDATE already.
    Nominates,
    /// A binding request from the controlling viewer, signed with `password`,
    /// without USE-CANDIDATE: the same request with it, signed again.
    MadeToNominate(Vec<u8>),
    /// Anything else (not STUN, not a request, not ours, not signed right).
    Other,
}

fn nominating(datagram: &[u8], password: &str) -> Check {
    let Ok(message) = StunMessage::parse(datagram) else {
        return Check::Other;
    };
    if !message.is_binding_request() {
        return Check::Other;
    }
    if message.use_candidate() {
        return Check::Nominates;
    }
    let (Some(username), Some(prio), Some(tie_breaker)) = (
        message.username(),
        message.prio(),
        message.ice_controlling(),
    ) else {
        return Check::Other;
    };
    if !message.verify(password.as_bytes(), sha1_hmac) {
        return Check::Other;
    }
    let check =
        StunMessage::binding_request(username, message.trans_id(), true, tie_breaker, prio, true);
    let mut buf = vec![0u8; datagram.len() + 64];
    match check.to_bytes(Some(password.as_bytes()), &mut buf, sha1_hmac) {
        Ok(n) => {
            buf.truncate(n);
            Check::MadeToNominate(buf)
        }
        Err(_) => Check::Other,
    }
}

/// HMAC-SHA1 (STUN's MESSAGE-INTEGRITY) over `parts`: str0m's own, the one its
/// ICE agent checks the same messages with.
fn sha1_hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    str0m::crypto::from_feature_flags()
        .sha1_hmac_provider
        .sha1_hmac(key, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::TransId;

    const PASSWORD: &str = "nalcasts-ice-password-22";

    /// A browser's check: signed with `password`, nominating or not.
    fn check(password: &str, use_candidate: bool, controlling: bool) -> Vec<u8> {
        let message = StunMessage::binding_request(
            "nalc:view",
            TransId::new(),
            controlling,
            0x0102_0304_0506_0708,
            1_845_501_695,
            use_candidate,
        );
        let mut buf = vec![0u8; 512];
        let n = message
            .to_bytes(Some(password.as_bytes()), &mut buf, sha1_hmac)
            .expect("serialised");
        buf.truncate(n);
        buf
    }

    #[test]
    fn the_first_signed_check_is_handed_on_as_a_nomination_once() {
        let mut early = EarlyNomination::new(PASSWORD.into());
        let first = check(PASSWORD, false, true);
        let passed = early.pass(first.clone());
        let message = StunMessage::parse(&passed).expect("STUN");
        assert!(message.use_candidate(), "nominates");
        assert!(
            message.verify(PASSWORD.as_bytes(), sha1_hmac),
            "signed again"
        );
        let original = StunMessage::parse(&first).expect("STUN");
        assert_eq!(message.trans_id(), original.trans_id(), "the same request");
        assert_eq!(message.prio(), original.prio());
        assert_eq!(message.username(), Some("nalc:view"));
        assert_eq!(message.ice_controlling(), original.ice_controlling());
        // Once: the next check goes on as it came.
        let second = check(PASSWORD, false, true);
        assert_eq!(early.pass(second.clone()), second);
    }

    #[test]
    fn only_a_check_that_proves_the_password_from_the_controlling_side_nominates() {
        let mut early = EarlyNomination::new(PASSWORD.into());
        for other in [
            check("someone-elses-password-1", false, true),
            check(PASSWORD, false, false),
            b"\x16\xfe\xfd not STUN: DTLS".to_vec(),
            vec![0u8; 3],
        ] {
            assert_eq!(early.pass(other.clone()), other);
        }
        // The viewer nominating by itself ends it too.
        let nominating = check(PASSWORD, true, true);
        assert_eq!(early.pass(nominating.clone()), nominating);
        let later = check(PASSWORD, false, true);
        assert_eq!(early.pass(later.clone()), later);
    }
}
