//! `ADD <url>`: files fetched over HTTP from a server the test runs on 127.0.0.1, with
//! Docker's naming, mode and mtime rules, `--checksum`, the cache keyed by content, and clear
//! errors for what kiln refuses.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::build_cmd::{cached_steps, write};
use crate::util::{stderr, TestStore};

/// `Last-Modified` the server sends: 1994-11-06T08:49:37Z.
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_SECS: i64 = 784_111_777;

/// A tiny HTTP/1.1 file server on 127.0.0.1, serving `files` by path; stopped on drop.
pub(crate) struct Server {
    port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Default::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (files.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                r.fetch_add(1, Ordering::SeqCst);
                let _ = serve(conn, &f);
            }
        });
        Server {
            port,
            files,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn put(&self, path: &str, data: &[u8]) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), data.to_vec());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, files: &Mutex<HashMap<String, Vec<u8>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let mut conn = conn;
    match files.lock().unwrap().get(&path) {
        Some(body) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(body)?;
        }
        None => write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    conn.flush()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tar holding one file, which ADD of a URL must not unpack.
fn small_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "inner.txt", &b"abc"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn add_url_names_modes_checksums_and_cache() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let srv = Server::start();
    srv.put("/files/hello.txt", b"hello over http\n");
    srv.put("/files/data%20file.bin", b"\x00\x01binary");
    srv.put("/files/archive.tar", &small_tar());
    let ctx = s.dir.path().join("ctx");
    let hello_sum = sha256_hex(b"hello over http\n");
    let base = format!(
        "FROM busybox:local\n\
         ADD {hello} /dl/\n\
         ADD {hello} /named.txt\n\
         ADD --chmod=644 {data} /dl/\n\
         ADD {tar} /dl/\n",
        hello = srv.url("/files/hello.txt"),
        data = srv.url("/files/data%20file.bin"),
        tar = srv.url("/files/archive.tar"),
    );
    let pinned = format!(
        "ADD --checksum=sha256:{hello_sum} {} /checked\n",
        srv.url("/files/hello.txt")
    );
    write(&ctx, "Dockerfile", &format!("{base}{pinned}"));
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "urls:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let root = s.unpack("urls:1");
    let hello = root.join("dl/hello.txt");
    assert_eq!(fs::read(&hello).unwrap(), b"hello over http\n");
    let m = fs::metadata(&hello).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o600,
        "Docker's mode for a URL"
    );
    assert_eq!(m.mtime(), LAST_MODIFIED_SECS, "the server's Last-Modified");
    assert_eq!((m.uid(), m.gid()), (0, 0));
    assert_eq!(
        fs::read(root.join("named.txt")).unwrap(),
        b"hello over http\n"
    );
    let data = root.join("dl/data file.bin");
    assert_eq!(fs::read(&data).unwrap(), b"\x00\x01binary");
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    // A remote archive is added as the file it is, never unpacked.
    assert_eq!(fs::read(root.join("dl/archive.tar")).unwrap(), small_tar());
    assert!(!root.join("dl/inner.txt").exists());
    assert_eq!(
        fs::read(root.join("checked")).unwrap(),
        b"hello over http\n"
    );

    // Unchanged content: fetched again, every step cached.
    let before = srv.requests.load(Ordering::SeqCst);
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "urls:1", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cached_steps(&o), 5, "{}", stderr(&o));
    assert!(
        srv.requests.load(Ordering::SeqCst) > before,
        "URLs are fetched on every build"
    );

    // Changed content: the steps that fetch it miss and the image has the new bytes; the
    // pinned checksum no longer matches, which fails the build with the line named.
    srv.put("/files/hello.txt", b"hello again\n");
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "urls:2", "."],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&format!("sha256:{hello_sum}")), "{err}");
    assert!(err.contains("Dockerfile:6"), "{err}");
    // The first step fetching the changed file misses, naming why (and so do the steps
    // after it, whose parent changed).
    assert!(
        err.contains("cache miss: url:") && err.contains("changed"),
        "{err}"
    );
    assert_eq!(cached_steps(&o), 0, "{err}");
    write(&ctx, "Dockerfile", &base);
    let o = s.kiln(
        &ctx,
        &["build", "--progress=plain", "-t", "urls:2", "."],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(s.unpack("urls:2").join("dl/hello.txt")).unwrap(),
        b"hello again\n"
    );
    // Everything the failed build committed is reused.
    assert_eq!(cached_steps(&o), 4, "{}", stderr(&o));
}

#[test]
fn add_url_errors_are_clear() {
    let s = TestStore::new();
    if s.busybox("busybox:local").is_none() {
        return;
    }
    let srv = Server::start();
    srv.put("/f", b"x");
    let ctx = s.dir.path().join("ctx");
    let cases = [
        (
            format!("FROM busybox:local\nADD {} /x\n", srv.url("/missing.txt")),
            vec!["HTTP 404", "/missing.txt", "Dockerfile:2"],
        ),
        (
            format!("FROM busybox:local\nCOPY {} /x\n", srv.url("/f")),
            vec!["COPY does not take URLs", "Dockerfile:2"],
        ),
        (
            format!(
                "FROM busybox:local\nADD --checksum=sha256:abc {} /x\n",
                srv.url("/f")
            ),
            vec!["invalid --checksum", "Dockerfile:2"],
        ),
        (
            format!("FROM busybox:local\nADD {} /\n", srv.url("/")),
            vec!["cannot determine a file name", "Dockerfile:2"],
        ),
        (
            // A repository nobody serves: git's error, naming the source and the line.
            "FROM busybox:local\nADD git://127.0.0.1:1/repo.git /src\n".to_string(),
            vec!["ADD git://127.0.0.1:1/repo.git", "Dockerfile:2"],
        ),
        (
            // Nothing listens on port 1 of loopback.
            "FROM busybox:local\nADD http://127.0.0.1:1/f /x\n".to_string(),
            vec!["ADD http://127.0.0.1:1/f", "Dockerfile:2"],
        ),
    ];
    srv.put("/", b"index");
    for (dockerfile, wants) in cases {
        write(&ctx, "Dockerfile", &dockerfile);
        let o = s.kiln(&ctx, &["build", "--progress=plain", "."], None);
        assert_eq!(o.status.code(), Some(1), "{dockerfile}\n{}", stderr(&o));
        let err = stderr(&o);
        for w in wants {
            assert!(err.contains(w), "{dockerfile}: wanted {w:?} in\n{err}");
        }
    }
    // Nothing failed left anything in the store's temporary directory.
    let tmp: Vec<_> = fs::read_dir(s.root().join("tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{tmp:?}");
}
