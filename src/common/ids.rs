//! kiln's one source of ids and unique names: random ids from the kernel's generator
//! (`getrandom(2)`) for containers, execs, volumes and RUN steps, random numbers for picks
//! such as generated container names, and temp names no other thread or process picks.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`, blocking only until the
/// generator is first seeded at boot).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: valid buffer of rest.len() bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// A new random id as Docker makes them: 64 lower-case hex digits (256 random bits).
pub fn new_id() -> io::Result<String> {
    let mut buf = [0u8; 32];
    fill_random(&mut buf)?;
    Ok(super::hex::encode(&buf))
}

/// A random number for a pick that needs no secrecy (a generated name): from the kernel,
/// or the clock and the process id if that fails.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if fill_random(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}

/// A name no other thread or process on this machine will pick:
/// `<prefix>-<pid>-<counter>-<nanoseconds>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn unique_names_differ_within_a_process() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert!(a.starts_with(&format!("t-{}-", std::process::id())), "{a}");
        assert_ne!(a, b);
    }
}
