//! Input limits: oversized, deeply nested and entity-laden domain XML gives
//! a clear one-line error quickly and with bounded memory, through the real
//! binary (`aa-virt profile -`) and the library.
//!
//! Its own test binary, apart from the policy tests: the memory bound is
//! the child's peak RSS, and Linux counts in it the peak of the process
//! that spawned it (exec keeps the larger), so a test process that has run
//! memory-hungry tests would fail it.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aa_virt::libvirt::{parse, ReadOptions};

/// Run the binary with `input` streamed on stdin (written from a thread so
/// that a binary that stops reading early is not blocked on), and return
/// (exit code, stderr, max RSS in KiB, wall time).
// Reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn profile_stdin(
    input: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> (i32, String, i64, Duration) {
    let t0 = Instant::now();
    let mut c = common::aa_virt()
        .args(["profile", "--no-probe", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in input {
            if stdin.write_all(&chunk).is_err() {
                break; // the binary stopped reading: fine
            }
        }
    });
    let mut stderr = c.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let mut status = 0;
    // SAFETY: wait4 on our own child, with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = c.id() as i32;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let elapsed = t0.elapsed();
    writer.join().unwrap();
    let err = reader.join().unwrap();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    (code, err, ru.ru_maxrss, elapsed)
}

#[test]
fn a_100_mb_document_on_stdin_fails_fast_with_bounded_memory() {
    let mut first = true;
    let chunks = (0..100).map(move |_| {
        let mut v = Vec::with_capacity(1 << 20);
        if first {
            v.extend_from_slice(b"<domain><name>big</name><description>");
            first = false;
        }
        v.resize(1 << 20, b'x');
        v
    });
    let (code, err, rss_kib, took) = profile_stdin(chunks);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("over the limit"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        rss_kib < 80 * 1024,
        "max RSS {rss_kib} KiB for a capped input"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    eprintln!(
        "100 MB on stdin: exit 1 after {took:.2?}, max RSS {} MiB: {}",
        rss_kib / 1024,
        err.trim()
    );
}

#[test]
fn deep_nesting_is_a_clear_error_or_harmless() {
    // Nested far below the size limit: no stack overflow (the whole test
    // binary would die), a bounded time, and a one-line error when refused.
    for depth in [1_000usize, 100_000, 1_000_000] {
        let xml = format!(
            "<domain><name>deep</name><uuid>00000000-0000-4000-8000-000000000001</uuid><devices>{}{}</devices></domain>",
            "<disk>".repeat(depth),
            "</disk>".repeat(depth)
        );
        let t0 = Instant::now();
        let r = parse(&xml, &ReadOptions::default());
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(20), "depth {depth}: {took:?}");
        if let Err(e) = &r {
            let m = e.to_string();
            assert_eq!(m.lines().count(), 1, "{m}");
        }
        eprintln!(
            "nesting {depth}: {} in {took:.2?}",
            match &r {
                Ok(_) => "parsed".to_string(),
                Err(e) => e.to_string(),
            }
        );
    }
    // A backing chain nested deeper than the chain limit.
    let depth = 5_000;
    let xml = format!(
        "<domain><name>chain</name><uuid>00000000-0000-4000-8000-000000000002</uuid><devices><disk type='file'><source file='/srv/top.qcow2'/><target dev='vda'/>{}{}</disk></devices></domain>",
        "<backingStore type='file'><format type='qcow2'/><source file='/srv/layer.qcow2'/>".repeat(depth),
        "</backingStore>".repeat(depth)
    );
    let e = parse(&xml, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("deeper than") && e.contains("chain"), "{e}");
}

#[test]
fn entities_and_dtds_are_refused() {
    let uuid = "<uuid>00000000-0000-4000-8000-000000000003</uuid>";
    let laughs = format!(
        "<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'><!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'><!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'><!ENTITY g '&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;'><!ENTITY h '&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;'>]><domain><name>&h;</name>{uuid}</domain>"
    );
    let external = format!(
        "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/shadow'>]><domain><name>&x;</name>{uuid}</domain>"
    );
    let param = format!(
        "<!DOCTYPE domain [<!ENTITY % p SYSTEM 'file:///etc/shadow'> %p;]><domain><name>n</name>{uuid}</domain>"
    );
    let undeclared = format!("<domain><name>&x;</name>{uuid}</domain>");
    for (what, xml) in [
        ("billion laughs", laughs),
        ("external entity", external),
        ("parameter entity", param),
        ("undeclared entity", undeclared),
    ] {
        let t0 = Instant::now();
        let e = parse(&xml, &ReadOptions::default())
            .expect_err(what)
            .to_string();
        assert!(t0.elapsed() < Duration::from_secs(2), "{what}");
        assert!(e.contains("does not parse"), "{what}: {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        assert!(!e.contains("root:"), "{what}: leaked file content: {e}");
    }
}

#[test]
fn errors_are_one_line_whatever_the_input_holds() {
    // Names, device names and parser messages with newlines must not split
    // an error into several log lines (found by the domain_xml fuzzer).
    let cases = [
        "<domain><name>a&#10;b</name><uuid>nope</uuid></domain>",
        "<domain><name>a&#10;b</name></domain>",
        "<domain\n\n>",
        "<domain><name>x</name><uuid>00000000-0000-4000-8000-000000000004</uuid><os><type>hvm</type></os><devices><disk type='file'><source file='/etc/shadow'/><target dev='v&#10;da'/></disk></devices></domain>",
    ];
    for xml in cases {
        let e = match parse(xml, &ReadOptions::default()) {
            Err(e) => e.to_string(),
            Ok(g) => {
                let t = aa_virt::policy::Templates::load(None).unwrap();
                aa_virt::libvirt::profile::render(&g, &t, false)
                    .expect_err(xml)
                    .to_string()
            }
        };
        assert_eq!(e.lines().count(), 1, "{xml:?}: {e:?}");
    }
}
