//! SRTP encryption by ring: str0m's crypto provider with its AEAD-AES-GCM
//! encrypting ciphers taken from ring, the rest (DTLS, decryption, key derivation,
//! AES-CM) from str0m's RustCrypto backend.
//!
//! Why: every packet to every viewer is encrypted on its own, and RustCrypto's
//! AES-GCM (its GHASH a block at a time, and a new buffer per packet) was a
//! quarter of what 100 WebRTC viewers cost nalcast. ring — already nalcast's TLS
//! crypto — seals in place with its assembler AES-GCM (AES-NI and CLMUL on x86-64,
//! the ARMv8 crypto extensions where the CPU has them, a constant-time fallback
//! where not, as on the Raspberry Pi 4). Decryption is only of the viewer's RTCP, a
//! few packets a second: left to RustCrypto.
//!
//! Being the provider also hands nalcast the sending key of a session's RTP, from
//! which sender.rs seals every packet after the first access unit itself.
use std::sync::OnceLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use str0m::crypto::{
    AeadAes128GcmCipher, AeadAes256GcmCipher, CryptoError, CryptoProvider, SrtpProvider,
    SupportedAeadAes128Gcm, SupportedAeadAes256Gcm, SupportedAes128CmSha1_80,
};

/// str0m's crypto with ring's AES-GCM for sending.
pub fn provider() -> CryptoProvider {
    let base = str0m::crypto::from_feature_flags();
    let _ = BASE.set(base.srtp_provider);
    CryptoProvider {
        srtp_provider: &RingSrtp,
        ..base
    }
}

/// The RustCrypto SRTP provider, for what ring does not take over.
static BASE: OnceLock<&'static dyn SrtpProvider> = OnceLock::new();

fn base() -> &'static dyn SrtpProvider {
    *BASE.get().expect("the SRTP provider is made by provider()")
}

#[derive(Debug)]
struct RingSrtp;

impl SrtpProvider for RingSrtp {
    fn aes_128_cm_sha1_80(&self) -> &'static dyn SupportedAes128CmSha1_80 {
        base().aes_128_cm_sha1_80()
    }

    fn aead_aes_128_gcm(&self) -> &'static dyn SupportedAeadAes128Gcm {
        &RingGcm
    }

    fn aead_aes_256_gcm(&self) -> &'static dyn SupportedAeadAes256Gcm {
        &RingGcm
    }

    fn srtp_aes_128_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        base().srtp_aes_128_ecb_round(key, input, output)
    }

    fn srtp_aes_256_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        base().srtp_aes_256_ecb_round(key, input, output)
    }
}

#[derive(Debug)]
struct RingGcm;

impl SupportedAeadAes128Gcm for RingGcm {
    fn create_cipher(&self, key: [u8; 16], encrypt: bool) -> Box<dyn AeadAes128GcmCipher> {
        if !encrypt {
            return base().aead_aes_128_gcm().create_cipher(key, false);
        }
        Box::new(Sealer::new(&AES_128_GCM, &key))
    }
}

impl SupportedAeadAes256Gcm for RingGcm {
    fn create_cipher(&self, key: [u8; 32], encrypt: bool) -> Box<dyn AeadAes256GcmCipher> {
        if !encrypt {
            return base().aead_aes_256_gcm().create_cipher(key, false);
        }
        Box::new(Sealer::new(&AES_256_GCM, &key))
    }
}

/// An encrypting AES-GCM cipher (RFC 7714): the ciphertext and its 16-byte tag
/// written into `output`, which str0m sizes for both.
struct Sealer(LessSafeKey);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    fn new(algorithm: &'static ring::aead::Algorithm, key: &[u8]) -> Sealer {
        let key = UnboundKey::new(algorithm, key).expect("a key of the algorithm's length");
        Sealer(LessSafeKey::new(key))
    }

    fn seal(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        super::sender::offer(&self.0, iv, aad);
        let n = input.len();
        let tag_len = self.0.algorithm().tag_len();
        if output.len() < n + tag_len {
            return Err(CryptoError::Other(
                "SRTP: output too short for the tag".into(),
            ));
        }
        output[..n].copy_from_slice(input);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*iv),
                Aad::from(aad),
                &mut output[..n],
            )
            .map_err(|_| CryptoError::Other("SRTP: AES-GCM seal failed".into()))?;
        output[n..n + tag_len].copy_from_slice(tag.as_ref());
        Ok(())
    }
}

/// str0m has a trait per key size with the same methods: one body for both.
macro_rules! sealer_for {
    ($($cipher:ident),+) => {$(
        impl $cipher for Sealer {
            fn encrypt(
                &mut self,
                iv: &[u8; 12],
                aad: &[u8],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<(), CryptoError> {
                self.seal(iv, aad, input, output)
            }

            fn decrypt(
                &mut self,
                _: &[u8; 12],
                _: &[&[u8]],
                _: &[u8],
                _: &mut [u8],
            ) -> Result<usize, CryptoError> {
                Err(CryptoError::Other(
                    "SRTP: an encrypting cipher asked to decrypt".into(),
                ))
            }
        }
    )+};
}

sealer_for!(AeadAes128GcmCipher, AeadAes256GcmCipher);

#[cfg(test)]
mod tests {
    use super::*;

    /// ring's sealing and RustCrypto's opening agree (RFC 7714's layout: the
    /// ciphertext, then the tag), for both key sizes.
    #[test]
    fn what_ring_seals_rustcrypto_opens() {
        let _ = provider();
        let iv = [7u8; 12];
        let aad = [0x80u8, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        let plain: Vec<u8> = (0..1100u32).map(|i| (i * 31) as u8).collect();
        let mut sealed = vec![0u8; plain.len() + 16];
        let mut opened = vec![0u8; plain.len()];

        let key16 = [3u8; 16];
        let mut enc = SupportedAeadAes128Gcm::create_cipher(&RingGcm, key16, true);
        enc.encrypt(&iv, &aad, &plain, &mut sealed).unwrap();
        assert_ne!(&sealed[..plain.len()], &plain[..]);
        let mut dec = SupportedAeadAes128Gcm::create_cipher(&RingGcm, key16, false);
        let n = dec.decrypt(&iv, &[&aad], &sealed, &mut opened).unwrap();
        assert_eq!(&opened[..n], &plain[..]);

        let key32 = [5u8; 32];
        let mut enc = SupportedAeadAes256Gcm::create_cipher(&RingGcm, key32, true);
        enc.encrypt(&iv, &aad, &plain, &mut sealed).unwrap();
        let mut dec = SupportedAeadAes256Gcm::create_cipher(&RingGcm, key32, false);
        let n = dec.decrypt(&iv, &[&aad], &sealed, &mut opened).unwrap();
        assert_eq!(&opened[..n], &plain[..]);

        // A changed byte is refused, as it must be.
        sealed[20] ^= 1;
        assert!(dec.decrypt(&iv, &[&aad], &sealed, &mut opened).is_err());
    }
}
