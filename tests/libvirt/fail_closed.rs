//! Fail closed, helper mode (`virt-aa-helper` drop-in, the real binary):
//! a render that must be refused and a load the kernel rejects both make
//! the helper exit non-zero (libvirt then refuses to start the guest) with
//! one clear line naming the guest, and leave the previous files as they
//! were. The libvirt hook and the LXC hooks have the same property proven
//! in `tests/libvirt/hook.rs` (a_restricted_disk_stops_the_start_even_when_failing_open,
//! a_failed_load_leaves_nothing_half_written) and `tests/lxc/containers.rs`
//! (pre_start_fails_closed_and_leaves_nothing_behind,
//! start_host_checks_inits_label, lxc_start_fails_closed_without_apparmor_*).

use crate::common;

use std::path::Path;

use aa_virt::libvirt::profile::Layout;

const UUID: &str = "fa11c105-ed00-4000-8000-000000000001";

fn xml(disk: &str) -> String {
    format!(
        "<domain type='kvm'><name>closed vm</name><uuid>{UUID}</uuid><os><type>hvm</type></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{disk}'/><target dev='vdq'/></disk></devices></domain>"
    )
}

/// Run `aa-virt helper MODE -u libvirt-UUID < xml`: (exit code, stderr).
fn helper(k: &common::FakeKernel, sys: &Path, root: &Path, mode: &str, xml: &str) -> (i32, String) {
    let c = k.spawn_helper(sys, root, mode, &format!("libvirt-{UUID}"), xml);
    let o = c.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn snapshot(l: &Layout) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(l.libvirt_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn helper_mode_stops_the_start_on_a_refused_render_or_a_failed_load() {
    let k = common::FakeKernel::new();
    let sys = k.sysroot();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());

    // Nothing there yet: a refused render writes nothing.
    for (disk, want) in [
        ("/etc/shadow", "/etc/shadow"),
        ("/srv/x/../../proc/self/mem", "/proc"),
        ("relative.img", "not absolute"),
    ] {
        let (code, err) = helper(&k, &sys, root.path(), "-c", &xml(disk));
        assert_eq!(code, 1, "{disk}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{disk}: one line: {err}");
        assert!(
            err.contains("closed vm") && err.contains("vdq") && err.contains(want),
            "{disk}: {err}"
        );
        assert!(
            snapshot(&layout).is_empty(),
            "{disk}: {:?}",
            snapshot(&layout)
        );
    }
    assert_eq!(k.runs(), 0, "a refused render never reaches the parser");

    // A load the kernel rejects: exit 1, nothing left.
    k.fail_loads(true);
    let (code, err) = helper(&k, &sys, root.path(), "-c", &xml("/srv/ok.img"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("closed vm") && err.contains("injected failure"),
        "{err}"
    );
    assert!(snapshot(&layout).is_empty(), "{:?}", snapshot(&layout));

    // A good start, then a change whose load fails: the previous files stay.
    k.fail_loads(false);
    let (code, err) = helper(&k, &sys, root.path(), "-c", &xml("/srv/ok.img"));
    assert_eq!(code, 0, "{err}");
    let before = snapshot(&layout);
    assert_eq!(before.len(), 2, "profile and .files");
    k.fail_loads(true);
    let (code, err) = helper(&k, &sys, root.path(), "-r", &xml("/srv/other.img"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("injected failure"), "{err}");
    assert_eq!(snapshot(&layout), before, "previous files intact");
    // And a refused render on replace leaves them too.
    k.fail_loads(false);
    let (code, err) = helper(&k, &sys, root.path(), "-r", &xml("/boot/../etc/passwd"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/etc/passwd"), "{err}");
    assert_eq!(snapshot(&layout), before, "previous files intact");
}
