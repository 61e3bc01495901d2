//! TLS for the main listener: a certificate from PEM files (reloaded when the files
//! change or on SIGHUP), or a self-signed one made once with rcgen and kept in the
//! data directory, so its fingerprint stays the same across restarts.
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Where the certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// PEM files given by the user; reloaded when they change.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A certificate nalcast makes for itself, kept in `dir`.
    SelfSigned {
        /// Where the certificate and key are stored.
        dir: PathBuf,
    },
}

/// A loaded certificate and what to tell the user about it.
pub struct Loaded {
    key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate, as browsers show it (AB:CD:…).
    pub fingerprint: String,
    /// Base64 SHA-256 of the leaf's SubjectPublicKeyInfo (what Chromium's
    /// `--ignore-certificate-errors-spki-list` and HPKP-style pinning take).
    pub spki_sha256: Option<String>,
    /// The DNS names the leaf is valid for.
    pub dns_names: Vec<String>,
}

/// The certificate in force; swapped whole on reload, so a handshake sees either the
/// old or the new one.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl CertStore {
    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

/// TLS, ready to serve: the rustls config and the files behind it.
pub struct Tls {
    /// For the acceptor.
    pub config: Arc<rustls::ServerConfig>,
    /// The DNS names of the certificate loaded at start-up: served by the Host check.
    pub names: Vec<String>,
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    watch: bool,
    /// The files' time stamps when the certificate in force was read: a change
    /// after that (even before the reload task starts) is a change.
    loaded_at: Stamp,
}

/// Modification times of the certificate and key files.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

/// Sets up TLS for `mode`: loads (or first makes) the certificate and prints its
/// fingerprint. A self-signed certificate is made for this machine's names and
/// addresses, `listen` (the main listener's address) and `public_hosts`.
pub fn setup(mode: &TlsMode, listen: SocketAddr, public_hosts: &[String]) -> anyhow::Result<Tls> {
    let (cert, key, watch) = match mode {
        TlsMode::Files { cert, key } => (cert.clone(), key.clone(), true),
        TlsMode::SelfSigned { dir } => {
            let names =
                certificate_names(listen, &crate::banner::machine_addresses(), public_hosts);
            let (cert, key) = self_signed(dir, &names)?;
            (cert, key, false)
        }
    };
    let loaded_at = (modified(&cert), modified(&key));
    let loaded = load(&cert, &key)?;
    println!(
        "TLS certificate {} SHA-256 fingerprint {}",
        cert.display(),
        loaded.fingerprint
    );
    if let Some(spki) = &loaded.spki_sha256 {
        println!("TLS public key SHA-256 (SPKI, base64) {spki}");
    }
    let names = loaded.dns_names.clone();
    let store = Arc::new(CertStore {
        current: RwLock::new(loaded.key),
    });
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = cipher_order(&provider.cipher_suites, aes_in_hardware());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    // Every byte to every viewer is encrypted: the server picks the cipher that is
    // cheapest here, not the client's first choice (rustls' own client offers
    // AES-256 first, which costs more than AES-128 and buys a live picture nothing).
    config.ignore_client_order = true;
    // WebSocket upgrades are HTTP/1.1; nalcast serves nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        names,
        store,
        cert,
        key,
        watch,
        loaded_at,
    })
}

/// `suites` in nalcast's order of preference: AES-128-GCM first where the CPU has
/// AES instructions (x86, Raspberry Pi 5), ChaCha20-Poly1305 first where it has not
/// (Raspberry Pi 4 and earlier, Zero 2 W: there AES-GCM in software costs about four
/// times as much), AES-256-GCM last. The order within each cipher is kept.
fn cipher_order(
    suites: &[rustls::SupportedCipherSuite],
    aes_in_hardware: bool,
) -> Vec<rustls::SupportedCipherSuite> {
    let rank = |suite: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", suite.suite());
        match (name.contains("AES_128"), name.contains("CHACHA20")) {
            (true, _) if aes_in_hardware => 0,
            (_, true) => 1,
            (true, _) => 2,
            _ => 3,
        }
    };
    let mut ordered = suites.to_vec();
    ordered.sort_by_key(rank);
    ordered
}

/// Whether this CPU encrypts AES-GCM in hardware (AES and carry-less multiply).
fn aes_in_hardware() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    {
        cpuinfo_has_aes(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }
}

/// Whether /proc/cpuinfo's "Features" line (32-bit ARM) lists AES and PMULL.
#[cfg_attr(
    any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64"),
    allow(dead_code)
)]
fn cpuinfo_has_aes(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.trim() == "Features")
        .any(|(_, flags)| {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            flags.contains(&"aes") && flags.contains(&"pmull")
        })
}

/// Reads a certificate chain and its key from PEM files.
pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Loaded> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
    let Some(leaf) = certs.first().cloned() else {
        bail!("{} holds no certificate", cert_path.display());
    };
    let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
        format!(
            "cannot read a PEM private key from {} (PKCS#8, RSA or EC)",
            key_path.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "the key {} does not fit the certificate {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    let end_entity = webpki::EndEntityCert::try_from(&leaf).ok();
    let spki_sha256 = end_entity
        .as_ref()
        .map(|ee| base64_sha256(&ee.subject_public_key_info()));
    let dns_names = end_entity
        .as_ref()
        .map(|ee| ee.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint: colon_hex(ring::digest::digest(&ring::digest::SHA256, &leaf).as_ref()),
        spki_sha256,
        dns_names,
    })
}

fn base64_sha256(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Names a self-signed certificate is made for: the host name (and its mDNS
/// `.local` form, as a Raspberry Pi announces itself), localhost, every
/// `--public-host` name (a `*.domain` pattern as a wildcard name), loopback, the
/// listen address, this machine's interface addresses and the address it reaches
/// the network with: every name and address the banner tells users to open.
fn certificate_names(
    listen: SocketAddr,
    addresses: &[IpAddr],
    public_hosts: &[String],
) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_owned());
            if !host.contains('.') {
                names.push(format!("{host}.local"));
            }
        }
    }
    for name in public_hosts {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if name != "*" && !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
    if !listen.ip().is_unspecified() {
        ips.push(listen.ip());
    }
    ips.extend(addresses.iter().copied().filter(|ip| match ip {
        // Link-local addresses change with the interface and are no way in.
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
        IpAddr::V4(v4) => !v4.is_link_local(),
    }));
    // Connecting a UDP socket sends nothing; it only picks the outgoing address.
    for (bind, probe) in [("0.0.0.0:0", "192.0.2.1:9"), ("[::]:0", "[2001:db8::1]:9")] {
        if let Some(ip) = UdpSocket::bind(bind)
            .and_then(|s| s.connect(probe).map(|()| s))
            .and_then(|s| s.local_addr())
            .ok()
            .map(|a| a.ip())
        {
            ips.push(ip);
        }
    }
    for ip in ips {
        let text = ip.to_string();
        if !names.contains(&text) {
            names.push(text);
        }
    }
    names
}

/// The self-signed certificate and key in `dir`, made on first use and again
/// when it lacks a name or address it should have (a new --public-host, a new
/// address): the names it was made for are kept beside it.
fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    let names_path = dir.join("self-signed.names");
    if cert_path.exists() && key_path.exists() {
        let made_for = std::fs::read_to_string(&names_path).unwrap_or_default();
        let made_for: Vec<&str> = made_for.lines().collect();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !made_for.contains(&n.as_str()))
            .collect();
        if missing.is_empty() {
            info!(cert = %cert_path.display(), "reusing the self-signed certificate (delete it to make a new one)");
            return Ok((cert_path, key_path));
        }
        let missing: Vec<&str> = missing.iter().map(|n| n.as_str()).collect();
        warn!(
            "the self-signed certificate lacks {}: making a new one (browsers ask once more)",
            missing.join(", ")
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let key_pair = rcgen::KeyPair::generate().context("cannot make a key pair")?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("cannot use the host's names in a certificate")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("nalcast on {}", names.get(1).map_or("localhost", |n| n)),
    );
    let cert = params
        .self_signed(&key_pair)
        .context("cannot sign the certificate")?;
    write_private(&key_path, key_pair.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    write_private(&names_path, names.join("\n").as_bytes())?;
    println!(
        "made a self-signed TLS certificate for {} in {}",
        names.join(", "),
        cert_path.display()
    );
    Ok((cert_path, key_path))
}

/// Writes a file readable by its owner only, atomically (temporary file + rename).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads user-given certificate files on SIGHUP and when they change (checked every
/// `poll`), e.g. after a certbot renewal; a broken new pair is reported (once per
/// change) and the old certificate stays in force, and it is tried again at every
/// check until it loads: the files are taken as seen only once they loaded (a pair
/// caught half-written, whose last write kept the time stamps already seen, was
/// never tried again).
pub async fn reload_on_change(tls: &Tls, poll: Duration, mut shutdown: watch::Receiver<bool>) {
    if !tls.watch {
        return;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let stamp = || (modified(&tls.cert), modified(&tls.key));
    let mut loaded_at = tls.loaded_at;
    let mut reported = None;
    loop {
        let forced = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tokio::time::sleep(poll) => false,
            _ = nalcast_core::clock::shutdown_requested(&mut shutdown) => return,
        };
        let now = stamp();
        if !forced && now == loaded_at {
            continue;
        }
        match load(&tls.cert, &tls.key) {
            Ok(loaded) => {
                loaded_at = now;
                reported = None;
                tls.store.replace(loaded.key);
                info!(fingerprint = %loaded.fingerprint, "reloaded the TLS certificate");
                println!(
                    "TLS certificate reloaded, SHA-256 fingerprint {}",
                    loaded.fingerprint
                );
            }
            Err(e) if forced || reported != Some(now) => {
                reported = Some(now);
                warn!("TLS certificate not reloaded, the old one stays in force (tried again every {} s): {e:#}", poll.as_secs());
            }
            Err(e) => debug!("TLS certificate still not loadable: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new --public-host (or address) needs a new certificate; the same set
    /// keeps the one there is.
    #[test]
    fn the_self_signed_certificate_is_made_again_for_a_new_name_only() {
        let dir = std::env::temp_dir().join(format!("nalcast-tls-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listen: SocketAddr = "0.0.0.0:8443".parse().expect("addr");
        let mode = TlsMode::SelfSigned { dir: dir.clone() };
        let fingerprint = |public: &[String]| {
            let tls = setup(&mode, listen, public).expect("made");
            let loaded = load(&tls.cert, &tls.key).expect("loads");
            (loaded.fingerprint, loaded.dns_names)
        };
        let (first, _) = fingerprint(&[]);
        let public = ["cam.example.com".to_owned(), "*.home.arpa".to_owned()];
        let (second, names) = fingerprint(&public);
        assert_ne!(first, second, "a new name: a new certificate");
        assert!(names.iter().any(|n| n == "cam.example.com"), "{names:?}");
        assert!(names.iter().any(|n| n == "*.home.arpa"), "{names:?}");
        let (third, _) = fingerprint(&public[..1]);
        assert_eq!(second, third, "a name it has already: the same certificate");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn self_signed_certificate_is_made_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("nalcast-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listen: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let first = setup(&TlsMode::SelfSigned { dir: dir.clone() }, listen, &[]).expect("made");
        let a = load(&first.cert, &first.key).expect("loads");
        let second = setup(&TlsMode::SelfSigned { dir: dir.clone() }, listen, &[]).expect("reused");
        let b = load(&second.cert, &second.key).expect("loads");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        assert!(a.spki_sha256.is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused() {
        let dir = std::env::temp_dir().join(format!("nalcast-tls-mismatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, _) = self_signed(&dir.join("a"), &["localhost".into()]).expect("a");
        let (_, key) = self_signed(&dir.join("b"), &["localhost".into()]).expect("b");
        let err = load(&cert, &key).err().expect("mismatch refused");
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
        let err = load(&dir.join("none.crt"), &key).err().expect("missing");
        assert!(
            format!("{err:#}").contains("cannot read TLS certificate"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_server_picks_the_cheapest_cipher_not_the_clients_first() {
        use rustls::CipherSuite::{
            TLS13_AES_128_GCM_SHA256 as AES128, TLS13_AES_256_GCM_SHA384 as AES256,
            TLS13_CHACHA20_POLY1305_SHA256 as CHACHA,
        };
        let tls13 = |suites: Vec<rustls::SupportedCipherSuite>| -> Vec<rustls::CipherSuite> {
            suites
                .iter()
                .map(|s| s.suite())
                .filter(|s| [AES128, AES256, CHACHA].contains(s))
                .collect()
        };
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        assert_eq!(
            tls13(all.clone()),
            [AES256, AES128, CHACHA],
            "ring's own order"
        );
        assert_eq!(tls13(cipher_order(&all, true)), [AES128, CHACHA, AES256]);
        assert_eq!(tls13(cipher_order(&all, false)), [CHACHA, AES128, AES256]);
        assert_eq!(cipher_order(&all, true).len(), all.len(), "none left out");

        // A real handshake with a client that asks for AES-256 first (rustls' default).
        let dir = std::env::temp_dir().join(format!("nalcast-tls-cipher-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let listen: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let tls = setup(&TlsMode::SelfSigned { dir: dir.clone() }, listen, &[]).expect("made");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&tls.cert).expect("pem") {
            roots.add(cert.expect("cert")).expect("trusted");
        }
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
        let mut server = rustls::ServerConnection::new(tls.config.clone()).expect("server");
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("client writes");
            server.read_tls(&mut &wire[..]).expect("server reads");
            server.process_new_packets().expect("server handshake");
            wire.clear();
            server.write_tls(&mut wire).expect("server writes");
            client.read_tls(&mut &wire[..]).expect("client reads");
            client.process_new_packets().expect("client handshake");
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let chosen = server.negotiated_cipher_suite().expect("a suite").suite();
        assert_eq!(chosen, if aes_in_hardware() { AES128 } else { CHACHA });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn aes_instructions_are_read_from_a_32_bit_arm_cpuinfo() {
        let pi4 = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n";
        let pi5 = "processor\t: 0\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm aes pmull sha1 sha2 crc32\n";
        assert!(!cpuinfo_has_aes(pi4));
        assert!(cpuinfo_has_aes(pi5));
        assert!(!cpuinfo_has_aes(""));
    }
}
