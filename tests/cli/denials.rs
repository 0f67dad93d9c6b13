//! From a denial to a fix, without a kernel: a guest's profile is made by
//! the real helper (against the stand-in kernel), recorded audit, kernel
//! and journal lines are attributed by `aa-virt denials`, `aa-virt allow`
//! stores an allowance that the next render loads, `aa-virt explain`
//! names the rule, and restricted paths are refused.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

const UUID: &str = "00000000-0000-0000-0000-00000000d0d0";
const PROFILE: &str = "libvirt-00000000-0000-0000-0000-00000000d0d0";

fn xml() -> String {
    format!(
        "<domain type='kvm'>
  <name>vm1</name>
  <uuid>{UUID}</uuid>
  <memory>524288</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/vm1.img'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/ro.img'/><target dev='vdb' bus='virtio'/><readonly/></disk>
  </devices>
</domain>"
    )
}

/// Recorded lines in the formats the VM's logs hold: auditd, the kernel's
/// printk (kern.log), `journalctl -k -o short`, complain mode, and a
/// hex-encoded name (a path with a space).
fn log() -> String {
    let p = PROFILE;
    [
        format!(r#"type=AVC msg=audit(1733300000.101:210): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/srv/extra.img" pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#),
        format!(r#"Dec  4 08:14:20 host kernel: [ 5821.120034] audit: type=1400 audit(1733300060.500:211): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/srv/extra.img" pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#),
        format!(r#"Dec 04 08:14:30 host kernel: audit: type=1400 audit(1733300070.000:212): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/srv/ro.img" pid=4242 comm="qemu-system-x86" requested_mask="wr" denied_mask="w" fsuid=64055 ouid=64055"#),
        format!(r#"type=AVC msg=audit(1733300080.000:213): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/etc/shadow" pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=0"#),
        format!(r#"type=AVC msg=audit(1733300090.000:214): apparmor="ALLOWED" operation="open" class="file" profile="{p}" name=2F7372762F6D7920646174612E696D67 pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#),
        r#"type=AVC msg=audit(1733300120.000:217): apparmor="DENIED" operation="open" class="file" profile="/usr/sbin/ntpd" name="/etc/x" pid=7 comm="ntpd" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#.to_string(),
    ]
    .join("\n")
        + "\n"
}

fn aa_virt(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aa-virt"))
        .args(args)
        .arg("--root")
        .arg(root)
        .env_remove("AA_VIRT_TEMPLATES")
        .output()
        .expect("run aa-virt")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn helper(k: &common::FakeKernel, sys: &Path, root: &Path, mode: &str) {
    let out = k
        .spawn_helper(sys, root, mode, PROFILE, &xml())
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "helper {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn denials(root: &Path, logf: &Path) -> serde_json::Value {
    let o = aa_virt(
        root,
        &["denials", "--json", "--log", logf.to_str().unwrap()],
    );
    serde_json::from_str(&ok(&o)).unwrap()
}

/// A stand-in kernel and its sysroot, a root where the helper made vm1's
/// profile, and the recorded log in it.
fn guest_with_log() -> (
    common::FakeKernel,
    std::path::PathBuf,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let k = common::FakeKernel::new();
    let sys = k.sysroot();
    let dir = tempfile::tempdir().unwrap();
    helper(&k, &sys, dir.path(), "-c");
    let logf = dir.path().join("audit.log");
    std::fs::write(&logf, log()).unwrap();
    (k, sys, dir, logf)
}

#[test]
fn from_a_denial_to_a_fix() {
    let (k, sys, dir, logf) = guest_with_log();
    let root = dir.path();

    // Attribution.
    let d = denials(root, &logf);
    let d = d.as_array().unwrap();
    assert_eq!(d.len(), 4, "ntpd is not ours: {d:#?}");
    let extra = &d[0];
    assert_eq!(extra["guest"], "vm1");
    assert_eq!(extra["profile"], PROFILE);
    assert_eq!(extra["path"], "/srv/extra.img");
    assert_eq!(extra["count"], 2);
    assert!(extra["device"].is_null());
    assert_eq!(extra["restricted"], false);
    let fix = extra["suggestion"].as_str().unwrap();
    assert!(
        fix.starts_with("aa-virt allow vm1 /srv/extra.img --perms r"),
        "{fix}"
    );
    assert_eq!(d[1]["device"], "disk vdb");
    assert_eq!(d[1]["message"], "disk vdb is read-only in the domain XML");
    assert_eq!(d[2]["restricted"], true);
    assert!(d[2]["suggestion"].is_null(), "{:#?}", d[2]);
    assert!(d[2]["message"]
        .as_str()
        .unwrap()
        .starts_with("restricted: aa-virt will not grant this"));
    assert_eq!(d[3]["kind"], "ALLOWED");
    assert_eq!(d[3]["path"], "/srv/my data.img");
    let all = aa_virt(root, &["denials", "--all", "--log", logf.to_str().unwrap()]);
    assert_eq!(ok(&all).lines().count(), 5);
    let one = aa_virt(
        root,
        &[
            "denials",
            "vm1",
            "--since",
            "@1733300070",
            "--log",
            logf.to_str().unwrap(),
        ],
    );
    assert_eq!(ok(&one).lines().count(), 3);

    // Explain before.
    let e = ok(&aa_virt(
        root,
        &["explain", "vm1", "/srv/ro.img", "--perms", "w"],
    ));
    assert!(e.starts_with("DENIED: vm1"), "{e}");
    assert!(e.contains("disk vdb"), "{e}");
    let e = ok(&aa_virt(root, &["explain", "vm1", "/srv/extra.img"]));
    assert!(
        e.starts_with("DENIED") && e.contains("no rule matches"),
        "{e}"
    );
    let e = ok(&aa_virt(
        root,
        &["explain", "vm1", "/usr/share/qemu/bios.bin"],
    ));
    assert!(
        e.starts_with("ALLOWED") && e.contains("abstraction abstractions/"),
        "{e}"
    );

    // The suggested fix, stored, then rendered and loaded by the helper.
    let o = aa_virt(
        root,
        &[
            "allow",
            "vm1",
            "/srv/extra.img",
            "--perms",
            "r",
            "--reason",
            "extra data disk",
        ],
    );
    assert!(ok(&o).contains("allowed r on /srv/extra.img"));
    let list = ok(&aa_virt(root, &["allow", "vm1", "--list"]));
    assert!(
        list.starts_with("/srv/extra.img  r  allow: extra data disk"),
        "{list}"
    );
    helper(&k, &sys, root, "-r");
    let loaded = k.loaded_files(PROFILE).unwrap();
    assert!(
        loaded.contains("\"/srv/extra.img\" r,  # allow: extra data disk"),
        "{loaded}"
    );
    let e = ok(&aa_virt(root, &["explain", "vm1", "/srv/extra.img"]));
    assert!(
        e.starts_with("ALLOWED") && e.contains("allow: extra data disk"),
        "{e}"
    );
    let d = denials(root, &logf);
    assert!(d[0]["suggestion"].is_null());
    assert!(d[0]["message"].as_str().unwrap().starts_with("allowed now"));

    // Restricted paths are refused with the reason, and never stored.
    let o = aa_virt(root, &["allow", "vm1", "/etc/shadow", "--perms", "r"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/etc/shadow") && err.contains("vm1"), "{err}");
    let o = aa_virt(root, &["allow", "vm1", "/srv/x", "--perms", "rx"]);
    assert!(!o.status.success());

    // Disallow: gone at the next render.
    ok(&aa_virt(root, &["disallow", "vm1", "/srv/extra.img"]));
    assert!(!aa_virt(root, &["disallow", "vm1", "/srv/extra.img"])
        .status
        .success());
    helper(&k, &sys, root, "-r");
    assert!(!k.loaded_files(PROFILE).unwrap().contains("/srv/extra.img"));

    // Mode: stored, set on the installed profile, kept by the next start.
    let prof = root.join("etc/apparmor.d/libvirt").join(PROFILE);
    let flags = || {
        std::fs::read_to_string(&prof)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("profile "))
            .unwrap()
            .to_string()
    };
    assert!(!flags().contains("complain"));
    let o = ok(&aa_virt(root, &["mode", "vm1", "complain"]));
    assert!(o.contains("complain mode stored"), "{o}");
    assert!(
        flags().contains("flags=(attach_disconnected,complain)"),
        "{}",
        flags()
    );
    // An admin (or an old aa-virt) resets the file; the next render sets
    // it again. A stop and a start with a new profile file keep the mode.
    let text = std::fs::read_to_string(&prof)
        .unwrap()
        .replace(",complain", "");
    std::fs::write(&prof, text).unwrap();
    helper(&k, &sys, root, "-r");
    assert!(flags().contains(",complain)"), "{}", flags());
    std::fs::write(k.fs.join(".remove"), "").unwrap();
    helper(&k, &sys, root, "-D");
    std::fs::remove_file(&prof).unwrap();
    helper(&k, &sys, root, "-c");
    assert!(flags().contains(",complain)"), "{}", flags());
    ok(&aa_virt(root, &["mode", "vm1", "enforce"]));
    assert!(!flags().contains("complain"));
    helper(&k, &sys, root, "-D");
    std::fs::remove_file(&prof).unwrap();
    helper(&k, &sys, root, "-c");
    assert!(!flags().contains("complain"));
}

/// `--follow` prints each record appended to the log after it started,
/// attributed like the others.
#[test]
fn follow_prints_new_records() {
    use std::io::{BufRead, Write};
    let (_kernel, _sys, dir, logf) = guest_with_log();
    let root = dir.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aa-virt"))
        .args([
            "denials",
            "vm1",
            "--follow",
            "--since",
            "@1733300200",
            "--log",
        ])
        .arg(&logf)
        .arg("--root")
        .arg(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    // Append only once it says it follows the end of the file (a fixed
    // sleep loses the record on a slow machine).
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.starts_with("aa-virt: following ") {
        said.clear();
        assert!(err.read_line(&mut said).unwrap() > 0, "no 'following' line");
    }
    assert!(said.contains(&logf.display().to_string()), "{said}");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&logf)
        .unwrap();
    // The first record arrives in two writes, the follower's poll between
    // them: it must wait for the rest of the line, not show half of it.
    write!(f, r#"type=AVC msg=audit(1733300300.000:300): apparmor="DENIED" operation="open" class="file" profile="{PROFILE}" "#).unwrap();
    f.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    writeln!(f, r#"name="/srv/late.img" pid=1 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#).unwrap();
    writeln!(f, r#"type=AVC msg=audit(1733300301.000:301): apparmor="DENIED" operation="open" class="file" profile="/usr/sbin/ntpd" name="/x" pid=2 comm="ntpd" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#).unwrap();
    drop(f);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.starts_with("vm1  DENIED open /srv/late.img r  x1"),
        "{line}"
    );
    assert!(
        line.contains("aa-virt allow vm1 /srv/late.img --perms r"),
        "{line}"
    );
}
