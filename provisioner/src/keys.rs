//! The appliance's signing key and the keys it trusts. Manifests are signed in minisign's
//! format (ed25519 over the BLAKE2b-512 of the file, with a signed trusted comment), so an
//! operator checks one with Debian's `minisign -V` and nothing of ours; the key is made on
//! first start in `DATA_DIR/keys/`, its public half printed by `provisioner key show`, and
//! keys of other appliances or staging sites are trusted with `provisioner key trust FILE`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// The public key's algorithm tag, and the prehashed signature's.
const ALG_KEY: &[u8; 2] = b"Ed";
const ALG_PREHASHED: &[u8; 2] = b"ED";
const SECRET_FILE: &str = "appliance.ed25519";
const PUBLIC_FILE: &str = "appliance.pub";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a key this appliance made: {why}")]
    BadSecret { path: PathBuf, why: String },
    #[error("{path} is not a minisign public key: {why}")]
    BadPublic { path: PathBuf, why: String },
    #[error("{path} is not a minisign signature: {why}")]
    BadSignature { path: PathBuf, why: String },
    #[error(
        "{path} is signed by key {key_id}, which this appliance does not trust (trust it with `provisioner key trust FILE`)"
    )]
    Untrusted { path: PathBuf, key_id: String },
    #[error(
        "{path}: the signature does not match the file (changed after signing, or signed by another key with id {key_id})"
    )]
    Mismatch { path: PathBuf, key_id: String },
    #[error("{path}: the trusted comment's signature does not match")]
    CommentMismatch { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

fn trusted_dir(data_dir: &Path) -> PathBuf {
    keys_dir(data_dir).join("trusted")
}

/// A public key: its 8-byte id and 32 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub id: [u8; 8],
    pub key: [u8; 32],
}

impl PublicKey {
    /// The id as minisign prints it: the 8 bytes read as a little-endian number, in hex.
    pub fn id_hex(&self) -> String {
        format!("{:016X}", u64::from_le_bytes(self.id))
    }

    /// The `.pub` file minisign reads.
    pub fn to_minisign(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(ALG_KEY);
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&self.key);
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.id_hex(),
            B64.encode(raw)
        )
    }

    pub fn parse(path: &Path, text: &str) -> Result<PublicKey, KeyError> {
        let bad = |why: &str| KeyError::BadPublic {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| bad("no key line"))?;
        let raw = B64
            .decode(line)
            .map_err(|_| bad("the key line is not base64"))?;
        if raw.len() != 42 || &raw[..2] != ALG_KEY {
            return Err(bad("not an Ed25519 key of 42 bytes"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[10..]);
        Ok(PublicKey { id, key })
    }
}

/// The appliance's own key pair.
pub struct ApplianceKey {
    pair: Ed25519KeyPair,
    pub public: PublicKey,
}

impl ApplianceKey {
    /// The key in `DATA_DIR/keys/`, made (readable by root only) if there is none yet.
    pub fn load_or_create(data_dir: &Path) -> Result<ApplianceKey, KeyError> {
        let dir = keys_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let secret = dir.join(SECRET_FILE);
        let seed: [u8; 32] = match std::fs::read(&secret) {
            Ok(bytes) => bytes.try_into().map_err(|b: Vec<u8>| KeyError::BadSecret {
                path: secret.clone(),
                why: format!("{} bytes, not a 32-byte seed", b.len()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| KeyError::Io {
                    path: secret.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                // Written whole under a temporary name, so a crash leaves no half key.
                let tmp = dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io(&tmp))?;
                f.write_all(&seed)
                    .and_then(|()| f.sync_all())
                    .map_err(io(&tmp))?;
                std::fs::hard_link(&tmp, &secret)
                    .or_else(|e| if secret.exists() { Ok(()) } else { Err(e) })
                    .map_err(io(&secret))?;
                let _ = std::fs::remove_file(&tmp);
                // Another process may have won the race: use what is on disk.
                return ApplianceKey::load_or_create(data_dir);
            }
            Err(e) => return Err(io(&secret)(e)),
        };
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| KeyError::BadSecret {
            path: secret.clone(),
            why: e.to_string(),
        })?;
        let key: [u8; 32] =
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| KeyError::BadSecret {
                    path: secret.clone(),
                    why: "public key is not 32 bytes".into(),
                })?;
        let digest = sha2::Sha256::digest(key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let public = PublicKey { id, key };
        let pub_path = dir.join(PUBLIC_FILE);
        let text = public.to_minisign();
        if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&pub_path, &text).map_err(io(&pub_path))?;
        }
        Ok(ApplianceKey { pair, public })
    }

    pub fn public_path(data_dir: &Path) -> PathBuf {
        keys_dir(data_dir).join(PUBLIC_FILE)
    }

    /// A minisign signature of `data` with `trusted_comment` (one line).
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> String {
        let prehash = blake2::Blake2b512::digest(data);
        let sig = self.pair.sign(&prehash);
        let mut first = Vec::with_capacity(74);
        first.extend_from_slice(ALG_PREHASHED);
        first.extend_from_slice(&self.public.id);
        first.extend_from_slice(sig.as_ref());
        let comment: String = trusted_comment
            .chars()
            .filter(|c| *c != '\n' && *c != '\r')
            .collect();
        let mut global_input = sig.as_ref().to_vec();
        global_input.extend_from_slice(comment.as_bytes());
        let global = self.pair.sign(&global_input);
        format!(
            "untrusted comment: signature from provisioner appliance key {}\n{}\ntrusted comment: {comment}\n{}\n",
            self.public.id_hex(),
            B64.encode(first),
            B64.encode(global.as_ref())
        )
    }
}

/// Checks a minisign signature of `data` against `keys`; the trusted comment when it holds.
pub fn verify(
    data: &[u8],
    sig_path: &Path,
    sig_text: &str,
    keys: &[PublicKey],
) -> Result<String, KeyError> {
    let bad = |why: &str| KeyError::BadSignature {
        path: sig_path.to_path_buf(),
        why: why.to_string(),
    };
    let lines: Vec<&str> = sig_text.lines().collect();
    let [_untrusted, sig_line, comment_line, global_line, ..] = lines.as_slice() else {
        return Err(bad("fewer than four lines"));
    };
    let raw = B64
        .decode(sig_line.trim())
        .map_err(|_| bad("the signature line is not base64"))?;
    if raw.len() != 74 {
        return Err(bad("the signature is not 74 bytes"));
    }
    let (alg, rest) = raw.split_at(2);
    let (id, sig) = rest.split_at(8);
    let key_id = PublicKey {
        id: id.try_into().map_err(|_| bad("key id"))?,
        key: [0; 32],
    }
    .id_hex();
    let key = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| KeyError::Untrusted {
            path: sig_path.to_path_buf(),
            key_id: key_id.clone(),
        })?;
    let message: Vec<u8> = match alg {
        a if a == ALG_PREHASHED => blake2::Blake2b512::digest(data).to_vec(),
        a if a == ALG_KEY => data.to_vec(),
        _ => return Err(bad("unknown signature algorithm")),
    };
    let public = signature::UnparsedPublicKey::new(&signature::ED25519, &key.key);
    public
        .verify(&message, sig)
        .map_err(|_| KeyError::Mismatch {
            path: sig_path.to_path_buf(),
            key_id: key_id.clone(),
        })?;
    let comment = comment_line
        .strip_prefix("trusted comment: ")
        .ok_or_else(|| bad("no trusted comment line"))?;
    let global = B64
        .decode(global_line.trim())
        .map_err(|_| bad("the comment signature is not base64"))?;
    let mut global_input = sig.to_vec();
    global_input.extend_from_slice(comment.as_bytes());
    public
        .verify(&global_input, &global)
        .map_err(|_| KeyError::CommentMismatch {
            path: sig_path.to_path_buf(),
        })?;
    Ok(comment.to_string())
}

/// The appliance's own key and every key it was told to trust.
pub fn trusted(data_dir: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let mut keys = vec![ApplianceKey::load_or_create(data_dir)?.public];
    let dir = trusted_dir(data_dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        {
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            keys.push(PublicKey::parse(&p, &text)?);
        }
    }
    Ok(keys)
}

/// Trusts the minisign public key in `file`; its id names it in `DATA_DIR/keys/trusted/`.
pub fn trust(data_dir: &Path, file: &Path) -> Result<PublicKey, KeyError> {
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    let key = PublicKey::parse(file, &text)?;
    let dir = trusted_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let dest = dir.join(format!("{}.pub", key.id_hex()));
    std::fs::write(&dest, key.to_minisign()).map_err(io(&dest))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_and_signs_what_verify_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let k = ApplianceKey::load_or_create(dir.path()).unwrap();
        let again = ApplianceKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k.public, again.public);
        let secret = keys_dir(dir.path()).join(SECRET_FILE);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sig = k.sign(b"manifest", "file:image.json");
        let p = Path::new("image.json.minisig");
        assert_eq!(
            verify(b"manifest", p, &sig, std::slice::from_ref(&k.public)).unwrap(),
            "file:image.json"
        );
        assert!(matches!(
            verify(b"manifesT", p, &sig, std::slice::from_ref(&k.public)),
            Err(KeyError::Mismatch { .. })
        ));
        assert!(matches!(
            verify(b"manifest", p, &sig, &[]),
            Err(KeyError::Untrusted { .. })
        ));
        let forged = sig.replace("file:image.json", "file:other.json");
        assert!(matches!(
            verify(b"manifest", p, &forged, std::slice::from_ref(&k.public)),
            Err(KeyError::CommentMismatch { .. })
        ));
        assert!(matches!(
            verify(b"m", p, "x\ny\n", &[]),
            Err(KeyError::BadSignature { .. })
        ));
    }

    #[test]
    fn public_keys_round_trip_and_trust_adds_them() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ka = ApplianceKey::load_or_create(a.path()).unwrap();
        let text = ka.public.to_minisign();
        assert!(text.starts_with(&format!(
            "untrusted comment: minisign public key {}\n",
            ka.public.id_hex()
        )));
        assert_eq!(PublicKey::parse(Path::new("k"), &text).unwrap(), ka.public);
        assert!(PublicKey::parse(Path::new("k"), "untrusted comment: x\nAAAA\n").is_err());
        assert_eq!(trusted(b.path()).unwrap().len(), 1);
        let file = a.path().join("a.pub");
        std::fs::write(&file, &text).unwrap();
        trust(b.path(), &file).unwrap();
        let keys = trusted(b.path()).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&ka.public));
    }
}
