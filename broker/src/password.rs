//! LAN passwords are never stored in clear: the config holds an Argon2id hash in PHC form
//! (`$argon2id$v=19$m=...`), made by `pvbus broker hash-password`, and the relay checks a
//! CONNECT's password against it.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("not an Argon2 password hash in PHC form ($argon2id$...): {0}")]
    BadHash(String),
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

/// Parameters light enough for a Pi Zero yet far from a fast hash: 8 MiB of memory, 2 passes
/// (one check: 18 ms on an x86 development machine, release build).
fn hasher() -> Argon2<'static> {
    let params = Params::new(8 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt; the result goes in the config file.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| PasswordError::Hashing(error.to_string()))
}

/// Checks that `hash` is a usable PHC string (at config validation time).
pub fn check_hash(hash: &str) -> Result<(), PasswordError> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|error| PasswordError::BadHash(error.to_string()))
}

/// True when `password` matches `hash`. The parameters stored in the hash are used, so older
/// hashes keep working if the defaults change.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_right_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        check_hash(&hash).unwrap();
        assert!(verify_password(b"correct horse", &hash));
        assert!(!verify_password(b"correct horsf", &hash));
        assert_ne!(
            hash,
            hash_password("correct horse").unwrap(),
            "salt must differ"
        );
    }

    #[test]
    fn clear_text_in_place_of_a_hash_is_refused() {
        assert!(check_hash("hunter2").is_err());
        assert!(!verify_password(b"hunter2", "hunter2"));
    }
}
