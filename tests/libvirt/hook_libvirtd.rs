//! aa-virt's qemu hook under a REAL libvirtd: `scripts/libvirtd-test.sh`
//! (run here in a private mount namespace) installs the hook with
//! `aa-virt install`, starts its own libvirtd and drives a tiny TCG guest
//! through start, destroy, save/restore and a refused start. See the script
//! for exactly what is and is not proven; kernel loading is proven in
//! integration-vms.

use crate::common;

use std::process::Command;

#[test]
fn the_hook_under_a_real_libvirtd() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test starts libvirtd and must run as root (make test does, in CI)"
    );
    let k = common::FakeKernel::new();
    let script = common::repo().join("scripts/libvirtd-test.sh");
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&script)
        .arg(common::BIN)
        .arg(&k.parser)
        .arg(&k.fs)
        .output()
        .expect("cannot run unshare (util-linux)");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{out}");
    eprintln!("{err}");
    assert!(o.status.success(), "libvirtd-test.sh failed:\n{out}\n{err}");
    assert!(out.contains("libvirtd-test: 8 passed"), "{out}");
    // The stand-in kernel really loaded (compile + record) for the guest.
    assert!(k.runs() >= 2, "parser ran {} times", k.runs());
}
