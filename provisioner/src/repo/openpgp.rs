//! OpenPGP for the repository: the vendor keys the operator trusts, checking a vendor's
//! `InRelease` or `Release` + `Release.gpg` against them, and the appliance's own archive key
//! that signs every suite it publishes.
//!
//! Done in process with `pgp` (rpgp, pure Rust): no gpg home directory, agent or subprocess on
//! the appliance, and the same code checks on every architecture. What nodes see is checked by
//! stock apt (gpgv or sqv), an implementation that is not ours, in the tests.
//!
//! What counts as a good signature is what apt accepts: made by a trusted key (primary or
//! signing subkey, bound with a back-signature) that is neither revoked nor expired, over a
//! SHA-2 or SHA-3 hash (MD5, SHA-1 and RIPEMD-160 are refused here: rpgp verifies them). Signatures by keys nobody trusts are
//! ignored, as apt ignores them, but one by a trusted key that does not verify is an error:
//! it means the file changed after signing.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, KeyType,
    PublicOrSecret, SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Password, Timestamp};

/// The appliance's archive key (secret), in `DATA_DIR/keys/`.
const SECRET_FILE: &str = "archive.pgp";
/// Its public half, armored: what nodes get as `signed-by`.
pub const PUBLIC_FILE: &str = "archive.asc";

#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no OpenPGP public key: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("the archive key {path} cannot be used: {why}")]
    Archive { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PgpError + '_ {
    move |source| PgpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(path: &Path, why: impl Into<String>) -> PgpError {
    PgpError::Refused {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// A trusted vendor key: the certificate as the operator gave it, checked on load.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    pub cert: SignedPublicKey,
    /// Where it came from (the file in `DATA_DIR/repo/trusted/`).
    pub file: PathBuf,
}

impl TrustedKey {
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.cert.fingerprint().as_bytes())
    }

    /// The first user id, for people.
    pub fn user(&self) -> String {
        self.cert
            .details
            .users
            .iter()
            .find(|u| u.is_primary())
            .or(self.cert.details.users.first())
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default()
    }
}

/// Reads every public key in `bytes` (armored or binary; one key or a keyring such as
/// `debian-archive-keyring.gpg` or `cuda-archive-keyring.gpg`), each checked for valid
/// self-signatures.
pub fn read_keys(path: &Path, bytes: &[u8]) -> Result<Vec<SignedPublicKey>, PgpError> {
    let bad = |why: String| PgpError::BadKey {
        path: path.to_path_buf(),
        why,
    };
    let (keys, _) = PublicOrSecret::from_reader_many(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for k in keys {
        let k = k.map_err(|e| bad(e.to_string()))?;
        let public = match k {
            PublicOrSecret::Public(p) => p,
            PublicOrSecret::Secret(_) => {
                return Err(bad(
                    "it is a secret key; give the vendor's public key".into()
                ));
            }
        };
        if !self_certified(&public) {
            return Err(bad(format!(
                "key {} has no user id its own signature binds to it",
                hex::encode_upper(public.fingerprint().as_bytes())
            )));
        }
        out.push(public);
    }
    if out.is_empty() {
        return Err(bad("no key found".into()));
    }
    Ok(out)
}

/// Whether the key itself certifies at least one of its user ids. Only self-signatures are
/// checked: keyrings such as Debian's carry certifications by other keys too, which say
/// nothing about whether this key is whole.
fn self_certified(cert: &SignedPublicKey) -> bool {
    cert.details.users.iter().any(|u| {
        u.signatures.iter().any(|s| {
            issued_by(s, cert)
                && s.verify_certification(&cert.primary_key, pgp::types::Tag::UserId, &u.id)
                    .is_ok()
        })
    })
}

fn issued_by(s: &Signature, cert: &SignedPublicKey) -> bool {
    s.issuer_fingerprint()
        .iter()
        .any(|f| **f == cert.fingerprint())
        || s.issuer_key_id()
            .iter()
            .any(|id| **id == cert.legacy_key_id())
}

/// Seconds since the epoch, now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a certificate cannot sign now: revoked, or past its expiry (from its newest
/// self-signature), or None.
pub fn unusable(cert: &SignedPublicKey, now: u64) -> Option<String> {
    if cert
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(&cert.primary_key).is_ok())
    {
        return Some("the key is revoked".into());
    }
    // Only self-signatures that verify say when the key expires: a stray packet in a keyring
    // does not.
    let newest = cert
        .details
        .users
        .iter()
        .flat_map(|u| {
            u.signatures.iter().filter(move |s| {
                s.verify_certification(&cert.primary_key, pgp::types::Tag::UserId, &u.id)
                    .is_ok()
            })
        })
        .chain(
            cert.details
                .direct_signatures
                .iter()
                .filter(|s| s.verify_key(&cert.primary_key).is_ok()),
        )
        .filter(|s| issued_by(s, cert))
        .max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0));
    let expiry = newest.and_then(Signature::key_expiration_time)?;
    if expiry.as_secs() == 0 {
        return None;
    }
    let ends = u64::from(cert.created_at().as_secs()) + u64::from(expiry.as_secs());
    (now >= ends).then(|| format!("the key expired at {}", rfc3339(ends)))
}

/// Whether `sub` may sign for `cert` now: its newest binding signature verifies, flags it for
/// signing with a valid back-signature, has not expired, and no revocation of it verifies (as
/// gpgv and sqv judge a subkey).
fn signing_subkey(
    cert: &SignedPublicKey,
    sub: &pgp::composed::SignedPublicSubKey,
    now: u64,
) -> bool {
    let primary = &cert.primary_key;
    let revoked = sub.signatures.iter().any(|s| {
        s.typ() == Some(SignatureType::SubkeyRevocation)
            && s.verify_subkey_binding(primary, &sub.key).is_ok()
    });
    if revoked {
        return false;
    }
    let Some(binding) = sub
        .signatures
        .iter()
        .filter(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        })
        .max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0))
    else {
        return false;
    };
    if !binding.key_flags().sign() {
        return false;
    }
    let back = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
    if !back {
        return false;
    }
    match binding.key_expiration_time() {
        Some(e) if e.as_secs() > 0 => {
            now < u64::from(sub.key.created_at().as_secs()) + u64::from(e.as_secs())
        }
        _ => true,
    }
}

/// Hashes a signature may be made with: the SHA-2 and SHA-3 families (apt refuses MD5, SHA-1
/// and RIPEMD-160).
fn strong_hash(sig: &Signature) -> bool {
    matches!(
        sig.hash_alg(),
        Some(
            HashAlgorithm::Sha224
                | HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512
        )
    )
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// Which trusted key made a good signature, and with which hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoodSignature {
    /// The trusted certificate's fingerprint (the primary key's).
    pub key: String,
    pub user: String,
    pub hash: String,
}

/// Checks `signatures` over `data` (as signed: for a cleartext message, its normalized text)
/// against `trusted`; `path` names the file in errors.
fn check(
    path: &Path,
    signatures: &[Signature],
    data: &[u8],
    trusted: &[TrustedKey],
) -> Result<GoodSignature, PgpError> {
    if signatures.is_empty() {
        return Err(refused(path, "it carries no signature"));
    }
    let now = now_secs();
    let mut problems = Vec::new();
    for sig in signatures {
        let issuers: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| hex::encode_upper(f.as_bytes()))
            .chain(
                sig.issuer_key_id()
                    .iter()
                    .map(|k| hex::encode_upper(k.as_ref())),
            )
            .collect();
        for t in trusted {
            // The primary key, then each subkey whose binding to it verifies.
            let mut candidates: Vec<(Option<&pgp::packet::PublicSubkey>, String)> = vec![(
                None,
                hex::encode_upper(t.cert.primary_key.fingerprint().as_bytes()),
            )];
            for sub in &t.cert.public_subkeys {
                if signing_subkey(&t.cert, sub, now) {
                    candidates.push((
                        Some(&sub.key),
                        hex::encode_upper(sub.key.fingerprint().as_bytes()),
                    ));
                }
            }
            for (key, fpr) in candidates {
                let named = issuers.iter().any(|i| fpr.ends_with(i.as_str()));
                if !named {
                    continue;
                }
                let verified = match key {
                    None => sig.verify(&t.cert.primary_key, data),
                    Some(sub) => sig.verify(sub, data),
                };
                if !strong_hash(sig) {
                    problems.push(format!(
                        "signed by {} with {:?}, a hash apt refuses",
                        t.fingerprint(),
                        sig.hash_alg()
                    ));
                    continue;
                }
                match verified {
                    Ok(()) => {
                        if let Some(why) = unusable(&t.cert, now) {
                            problems.push(format!("signed by {} but {why}", t.fingerprint()));
                            continue;
                        }
                        return Ok(GoodSignature {
                            key: t.fingerprint(),
                            user: t.user(),
                            hash: sig.hash_alg().map(|h| format!("{h:?}")).unwrap_or_default(),
                        });
                    }
                    Err(e) => {
                        return Err(refused(
                            path,
                            format!(
                                "the signature by trusted key {} does not verify ({e}): the file changed after signing",
                                t.fingerprint()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(refused(path, problems.join("; ")));
    }
    let issuers: Vec<String> = signatures
        .iter()
        .flat_map(|s| {
            s.issuer_fingerprint()
                .iter()
                .map(|f| hex::encode_upper(f.as_bytes()))
                .chain(
                    s.issuer_key_id()
                        .iter()
                        .map(|k| hex::encode_upper(k.as_ref())),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    Err(refused(
        path,
        format!(
            "signed only by keys this appliance does not trust ({}); trust the vendor's key with `provisioner repo trust KEYFILE`",
            issuers.join(", ")
        ),
    ))
}

/// Checks a clear-signed `InRelease` and returns its signed text (LF line ends) and who
/// signed it. Only the signed text is ever used: anything outside the signature is refused
/// by the parser.
pub fn verify_inrelease(
    path: &Path,
    text: &str,
    trusted: &[TrustedKey],
) -> Result<(String, GoodSignature), PgpError> {
    let (msg, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| refused(path, format!("not a clear-signed OpenPGP message: {e}")))?;
    let signed = msg.signed_text();
    let good = check(path, msg.signatures(), signed.as_bytes(), trusted)?;
    Ok((signed.replace("\r\n", "\n"), good))
}

/// Checks a detached `Release.gpg` (armored or binary) over `release`.
pub fn verify_detached(
    path: &Path,
    signature: &[u8],
    release: &[u8],
    trusted: &[TrustedKey],
) -> Result<GoodSignature, PgpError> {
    let sigs: Vec<Signature> = if signature.starts_with(b"-----BEGIN PGP SIGNATURE") {
        let text = std::str::from_utf8(signature)
            .map_err(|_| refused(path, "an armored signature that is not text"))?;
        // A file may hold several armored signatures, one after the other.
        let mut out = Vec::new();
        for block in text.split_inclusive("-----END PGP SIGNATURE-----") {
            if !block.contains("-----BEGIN PGP SIGNATURE") {
                continue;
            }
            let start = block.find("-----BEGIN").unwrap_or(0);
            let (sig, _) = DetachedSignature::from_string(&block[start..])
                .map_err(|e| refused(path, format!("not an OpenPGP signature: {e}")))?;
            out.push(sig.signature);
        }
        out
    } else {
        let packets = pgp::packet::PacketParser::new(signature);
        let mut out = Vec::new();
        for p in packets {
            match p {
                Ok(pgp::packet::Packet::Signature(s)) => out.push(s),
                Ok(_) => return Err(refused(path, "holds something other than signatures")),
                Err(e) => return Err(refused(path, format!("not an OpenPGP signature: {e}"))),
            }
        }
        out
    };
    check(path, &sigs, release, trusted)
}

/// The appliance's archive key: signs the suites it publishes.
pub struct ArchiveKey {
    secret: SignedSecretKey,
}

impl ArchiveKey {
    pub fn secret_path(data_dir: &Path) -> PathBuf {
        crate::keys::keys_dir(data_dir).join(SECRET_FILE)
    }

    pub fn public_path(data_dir: &Path) -> PathBuf {
        crate::keys::keys_dir(data_dir).join(PUBLIC_FILE)
    }

    /// Loads the key, or makes it (ed25519, OpenPGP v4, as Debian 12's gpgv and sqv read) on
    /// first use, written owner-only, with its public half beside it.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, PgpError> {
        let path = Self::secret_path(data_dir);
        let archive = |why: String| PgpError::Archive {
            path: path.clone(),
            why,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let secret = SignedSecretKey::from_bytes(bytes.as_slice())
                    .map_err(|e| archive(e.to_string()))?;
                let key = Self { secret };
                key.write_public(data_dir)?;
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let uid = if host.is_empty() {
            "Provisioner archive key".to_string()
        } else {
            format!("Provisioner archive key ({host})")
        };
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id(uid)
            .passphrase(None)
            .build()
            .map_err(|e| archive(e.to_string()))?;
        let secret = params
            .generate(rand::rngs::OsRng)
            .map_err(|e| archive(e.to_string()))?;
        let dir = crate::keys::keys_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut bytes = Vec::new();
        pgp::ser::Serialize::to_writer(&secret, &mut bytes).map_err(|e| archive(e.to_string()))?;
        // Written beside, then linked into place only if no key is there: two first uses at
        // once (an import and an image build) end with one key, the one both then load.
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
        tmp.write_all(&bytes).map_err(io(&path))?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
            .map_err(io(&path))?;
        if let Err(e) = tmp.persist_noclobber(&path) {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                return Self::load_or_create(data_dir);
            }
            return Err(io(&path)(e.error));
        }
        let key = Self { secret };
        key.write_public(data_dir)?;
        Ok(key)
    }

    fn write_public(&self, data_dir: &Path) -> Result<(), PgpError> {
        let path = Self::public_path(data_dir);
        let armored = self.public_armored()?;
        if std::fs::read_to_string(&path).ok().as_deref() == Some(armored.as_str()) {
            return Ok(());
        }
        let tmp = path.with_extension("asc.tmp");
        std::fs::write(&tmp, &armored).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.secret.fingerprint().as_bytes())
    }

    /// The public key, armored (`signed-by` takes a `.asc` file since apt 2.4).
    pub fn public_armored(&self) -> Result<String, PgpError> {
        SignedPublicKey::from(self.secret.clone())
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| PgpError::Archive {
                path: PathBuf::from(SECRET_FILE),
                why: e.to_string(),
            })
    }

    /// `InRelease`: `release` clear-signed (SHA-512).
    pub fn clearsign(&self, release: &str) -> Result<String, PgpError> {
        let err = |e: pgp::errors::Error| PgpError::Archive {
            path: PathBuf::from(SECRET_FILE),
            why: e.to_string(),
        };
        let mut config = pgp::packet::SignatureConfig::from_key(
            rand::rngs::OsRng,
            &self.secret.primary_key,
            SignatureType::Text,
        )
        .map_err(err)?;
        config.hash_alg = HashAlgorithm::Sha512;
        config.hashed_subpackets = vec![
            pgp::packet::Subpacket::regular(pgp::packet::SubpacketData::SignatureCreationTime(
                Timestamp::now(),
            ))
            .map_err(err)?,
            pgp::packet::Subpacket::regular(pgp::packet::SubpacketData::IssuerFingerprint(
                self.secret.fingerprint(),
            ))
            .map_err(err)?,
        ];
        config.unhashed_subpackets = vec![
            pgp::packet::Subpacket::regular(pgp::packet::SubpacketData::IssuerKeyId(
                self.secret.legacy_key_id(),
            ))
            .map_err(err)?,
        ];
        let msg = CleartextSignedMessage::new(
            release,
            config,
            &self.secret.primary_key,
            &Password::empty(),
        )
        .map_err(err)?;
        msg.to_armored_string(ArmorOptions::default()).map_err(err)
    }

    /// `Release.gpg`: a detached, armored binary signature over `release` (SHA-512).
    pub fn detach_sign(&self, release: &[u8]) -> Result<String, PgpError> {
        let err = |e: pgp::errors::Error| PgpError::Archive {
            path: PathBuf::from(SECRET_FILE),
            why: e.to_string(),
        };
        let sig = DetachedSignature::sign_binary_data(
            rand::rngs::OsRng,
            &self.secret.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha512,
            release,
        )
        .map_err(err)?;
        sig.to_armored_string(ArmorOptions::default()).map_err(err)
    }

    /// The key as a trusted key, for checking what this appliance signed.
    pub fn as_trusted(&self) -> TrustedKey {
        TrustedKey {
            cert: SignedPublicKey::from(self.secret.clone()),
            file: PathBuf::from(PUBLIC_FILE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_key_signs_what_it_verifies_and_a_changed_byte_fails() {
        let dir = tempfile::tempdir().unwrap();
        let key = ArchiveKey::load_or_create(dir.path()).unwrap();
        let again = ArchiveKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            key.fingerprint(),
            again.fingerprint(),
            "made once, then loaded"
        );
        let trusted = [key.as_trusted()];
        let release = "Origin: Provisioner\nSuite: test-1\nSHA256:\n abc 1 main/x\n";
        let signed = key.clearsign(release).unwrap();
        let (text, good) = verify_inrelease(Path::new("InRelease"), &signed, &trusted).unwrap();
        assert_eq!(text.trim_end(), release.trim_end());
        assert_eq!(good.key, key.fingerprint());
        let changed = signed.replace("test-1", "test-2");
        let err = verify_inrelease(Path::new("InRelease"), &changed, &trusted).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        let detached = key.detach_sign(release.as_bytes()).unwrap();
        verify_detached(
            Path::new("Release.gpg"),
            detached.as_bytes(),
            release.as_bytes(),
            &trusted,
        )
        .unwrap();
        let err = verify_detached(
            Path::new("Release.gpg"),
            detached.as_bytes(),
            b"Origin: Other\n",
            &trusted,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn a_signature_by_an_untrusted_key_is_refused_naming_the_signer() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let signer = ArchiveKey::load_or_create(a.path()).unwrap();
        let other = ArchiveKey::load_or_create(b.path()).unwrap();
        let signed = signer.clearsign("Suite: x\n").unwrap();
        let err =
            verify_inrelease(Path::new("InRelease"), &signed, &[other.as_trusted()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("does not trust"), "{msg}");
        assert!(msg.contains(&signer.fingerprint()), "{msg}");
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap();
        let key = ArchiveKey::load_or_create(dir.path()).unwrap();
        let trusted = [key.as_trusted()];
        for bad in [
            "",
            "Suite: x\n",
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nx\n",
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nx\n-----BEGIN PGP SIGNATURE-----\n\n!!!\n-----END PGP SIGNATURE-----\n",
        ] {
            assert!(verify_inrelease(Path::new("InRelease"), bad, &trusted).is_err());
        }
        for bad in [
            &b""[..],
            b"\x00\x01\x02",
            b"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n",
        ] {
            assert!(verify_detached(Path::new("Release.gpg"), bad, b"x", &trusted).is_err());
        }
        assert!(read_keys(Path::new("k"), b"not a key").is_err());
    }

    #[test]
    fn debian_keyring_verifies_this_machines_bookworm_inrelease() {
        // Real vendor material when this machine has it: Debian's archive keyring and the
        // InRelease apt fetched, signed by several keys.
        let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        let inrelease =
            Path::new("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease");
        let (Ok(k), Ok(text)) = (std::fs::read(keyring), std::fs::read_to_string(inrelease)) else {
            eprintln!("skipped: no Debian keyring or bookworm InRelease here");
            return;
        };
        let trusted: Vec<TrustedKey> = read_keys(keyring, &k)
            .unwrap()
            .into_iter()
            .map(|cert| TrustedKey {
                cert,
                file: keyring.to_path_buf(),
            })
            .collect();
        let (signed, good) = verify_inrelease(inrelease, &text, &trusted).unwrap();
        assert!(signed.contains("Codename: bookworm"));
        assert!(!good.key.is_empty());
    }
}
