//! aa-virt as libvirt's virt-aa-helper, run as a process under that name:
//! the command line and its exit codes, dry-run output in the reference's
//! format, real mode against a temporary root with a stand-in kernel (every
//! load compiles with the real apparmor_parser), the hotplug sequence libvirt
//! drives, and each place where the reference goes wrong.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aa_virt::apparmor::Parser;
use aa_virt::libvirt::profile::Layout;

const UUID: &str = "00000000-0000-0000-0000-0123456789ab";
const NAME: &str = "libvirt-00000000-0000-0000-0000-0123456789ab";

/// A host: a root for /etc/apparmor.d, a /sys tree whose securityfs is the
/// stand-in kernel's, and aa-virt reachable as `virt-aa-helper`.
struct Host {
    k: common::FakeKernel,
    root: tempfile::TempDir,
    sys: tempfile::TempDir,
    bin: tempfile::TempDir,
    work: PathBuf,
    _work: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Host {
    fn new() -> Host {
        Host::with_kernel(true)
    }

    fn with_kernel(apparmor: bool) -> Host {
        let k = common::FakeKernel::new();
        let sys = tempfile::tempdir().unwrap();
        if apparmor {
            let p = sys.path().join("sys/module/apparmor/parameters");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("enabled"), "Y\n").unwrap();
            std::fs::create_dir_all(sys.path().join("sys/kernel/security")).unwrap();
            std::os::unix::fs::symlink(&k.fs, sys.path().join("sys/kernel/security/apparmor"))
                .unwrap();
        } else {
            std::fs::create_dir_all(sys.path().join("sys/kernel/security")).unwrap();
            std::fs::write(
                sys.path().join("sys/kernel/security/lsm"),
                "lockdown,capability,landlock",
            )
            .unwrap();
        }
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(common::BIN, bin.path().join("virt-aa-helper")).unwrap();
        let work = tempfile::tempdir().unwrap();
        Host {
            k,
            root: tempfile::tempdir().unwrap(),
            sys,
            bin,
            work: work.path().canonicalize().unwrap(),
            _work: work,
        }
    }

    fn layout(&self) -> Layout {
        Layout::under(self.root.path())
    }

    fn cmd(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.env("AA_VIRT_ROOT", self.root.path())
            .env("AA_VIRT_SYSROOT", self.sys.path())
            .env("AA_VIRT_CONFIG", self.root.path().join("aa-virt.toml"))
            .env_remove("AA_VIRT_HELPER_STRICT_NAMES")
            .env_remove("AA_VIRT_TEMPLATES")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run_with(&self, mut c: Command, args: &[&str], xml: Option<&str>) -> Out {
        c.args(args).stdin(if xml.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("run aa-virt");
        if let Some(x) = xml {
            use std::io::Write;
            // The helper may exit before reading (bad options): not an error.
            let _ = child.stdin.take().unwrap().write_all(x.as_bytes());
        }
        let o = child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Run as `virt-aa-helper ARGS < xml`.
    fn run(&self, args: &[&str], xml: Option<&str>) -> Out {
        self.run_with(self.cmd(&self.bin.path().join("virt-aa-helper")), args, xml)
    }

    /// Run, expect success.
    fn ok(&self, args: &[&str], xml: Option<&str>) -> Out {
        let o = self.run(args, xml);
        assert_eq!(o.code, 0, "{args:?}: {}{}", o.stdout, o.stderr);
        o
    }

    /// Run, expect exit 1 with `msg` in the error.
    fn fails(&self, args: &[&str], xml: Option<&str>, msg: &str) {
        let o = self.run(args, xml);
        assert_eq!(o.code, 1, "{args:?} should fail: {}{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains(msg),
            "{args:?}: want {msg:?} in {}",
            o.stderr
        );
    }

    fn files(&self) -> String {
        std::fs::read_to_string(self.layout().files_path(NAME)).unwrap()
    }

    fn img(&self, name: &str) -> String {
        let p = self.work.join(name);
        std::fs::write(&p, b"").unwrap();
        p.display().to_string()
    }

    /// The installed profile and its .files compile with the real parser.
    fn compiles(&self) {
        let l = self.layout();
        l.parser(&Parser::new())
            .check(&l.profile_path(NAME))
            .unwrap_or_else(|e| {
                panic!("installed profile does not compile: {e}\n{}", self.files())
            });
    }
}

fn xml_named(name: &str, os: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>
  <name>{name}</name>
  <uuid>{UUID}</uuid>
  <memory>524288</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type>{os}</os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {devices}
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>"
    )
}

fn xml(devices: &str) -> String {
    xml_named("vm1", "", devices)
}

fn disk(path: &str, dev: &str) -> String {
    format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{path}'/><target dev='{dev}' bus='virtio'/></disk>"
    )
}

fn runtime(name: &str) -> String {
    [
        format!("  \"/var/log/libvirt/**/{name}.log\" w,"),
        format!("  \"/var/lib/libvirt/qemu/domain-{name}/monitor.sock\" rw,"),
        format!(
            "  \"/var/lib/libvirt/qemu/domain-{}-{name}/*\" rw,",
            common::rulecheck::ANY_ID
        ),
        format!("  \"/run/libvirt/**/{name}.pid\" rwk,"),
        format!("  \"/run/libvirt/**/*.tunnelmigrate.dest.{name}\" rw,"),
    ]
    .iter()
    .map(|l| format!("{l}  # libvirt runtime files\n"))
    .collect()
}

/// The .files aa-virt writes for guest `vm1` with these rule lines.
fn files(rules: &[String]) -> String {
    let mut s = format!(
        "# DO NOT EDIT THIS FILE DIRECTLY. IT IS MANAGED BY aa-virt.\n\
         # Device rules for libvirt guest \"vm1\" ({UUID}), regenerated whenever\n\
         # the guest's configuration changes. Each rule names the device that needs it.\n{}",
        runtime("vm1")
    );
    for r in rules {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// The dry-run rule lines (stderr, one per line, as the reference prints them).
fn dry_rules(o: &Out) -> Vec<String> {
    o.stderr
        .lines()
        .filter(|l| l.starts_with("  \""))
        .map(str::to_string)
        .collect()
}

#[test]
fn command_line_and_exit_codes() {
    let h = Host::new();
    let x = xml(&disk(&h.img("1.img"), "vda"));
    let u = ["-u", NAME];
    // Help: exit 0, on stdout, under both names.
    let o = h.ok(&["-h"], None);
    assert!(o.stdout.contains("-F, --append-file FILE"), "{}", o.stdout);
    let o = h.run_with(h.cmd(Path::new(common::BIN)), &["helper", "--help"], None);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("Usage: aa-virt helper MODE"),
        "{}",
        o.stdout
    );
    // `aa-virt helper ARGS` gives ARGS to the helper as they are: aa-virt's
    // own global flags mean nothing there, as in the reference.
    for flag in ["-v", "-q", "--verbose"] {
        let o = h.run_with(
            h.cmd(Path::new(common::BIN)),
            &["helper", flag, "-d", "-c", "-u", NAME],
            Some(&x),
        );
        assert_eq!(o.code, 1, "aa-virt helper {flag}: {}", o.stderr);
        assert!(
            o.stderr.contains(&format!("unknown option {flag}")),
            "{}",
            o.stderr
        );
    }
    // Unknown, removed and malformed options: exit 1.
    h.fails(&["-z"], None, "unknown option -z");
    h.fails(&["-A"], None, "unknown option -A");
    h.fails(&["--frobnicate"], None, "unknown option --frobnicate");
    h.fails(&["-p"], None, "option -p requires an argument");
    h.fails(
        &["-p", "0", "-r", "-u", NAME],
        Some(&x),
        "-p is no longer supported",
    );
    h.fails(&["-H", "x"], None, "-H is no longer supported");
    h.fails(&["-b", "x"], None, "-b is no longer supported");
    h.fails(
        &["-c", "-n", "foo", "-u", NAME],
        Some(&x),
        "unknown option -n",
    );
    h.fails(&["-c", "-u"], Some(&x), "option -u requires an argument");
    h.fails(
        &["-r", "-u", NAME, "extra"],
        Some(&x),
        "unexpected argument",
    );
    h.fails(&["-d"], None, "no mode given");
    // -u: required, libvirt-<uuid>, and the XML's.
    h.fails(&["-c"], Some(&x), "-u libvirt-<uuid> is required");
    h.fails(&["-R"], None, "-u libvirt-<uuid> is required");
    for bad in [
        "libvirt-00000000-0000-0000-0000-00000000000g",
        "libvirt-00000000-0000-0000-0000-0123456789ababcdef",
        "libvirt-00000000-0000-0000-0000-0123456789a",
        "00000000-0000-0000-0000-0123456789ab",
        "libvirt-000000000000000000000123456789ab",
        "libvirt-00000000-0000-0000-0000-0123456789AB",
    ] {
        h.fails(&["-d", "-c", "-u", bad], Some(&x), "invalid profile name");
    }
    h.fails(
        &[
            "-d",
            "-c",
            "-u",
            "libvirt-00000000-0000-0000-0000-00000000000a",
        ],
        Some(&x),
        "does not match the domain's uuid 00000000-0000-0000-0000-0123456789ab",
    );
    // -R, -D, -a need the profile, even in a dry run.
    for m in ["-R", "-D", "-a"] {
        h.fails(&["-d", m, "-u", NAME], None, "does not exist");
    }
    h.fails(
        &["-d", "-c", "-F", "/tmp/x", "-u", NAME],
        Some(&x),
        "-f and -F go with -r",
    );
    // getopt forms: clusters, attached values, long options with =.
    let a = h.ok(&["-dcu", NAME], Some(&x));
    let b = h.ok(
        &["--dryrun", "--create", &format!("--uuid={NAME}")],
        Some(&x),
    );
    let c = h.ok(&["-d", "-c", &format!("-u{NAME}")], Some(&x));
    assert_eq!(a.stderr, b.stderr);
    assert_eq!(a.stderr, c.stderr);
    // The last mode wins, as with the reference.
    let o = h.ok(&["-d", "-c", "-r", "-u", NAME], Some(&x));
    assert!(!o.stderr.contains("would create"), "{}", o.stderr);
    // Nothing was written by any of this.
    assert!(!h.layout().libvirt_dir().exists());
    let _ = u;
}

#[test]
fn dry_run_prints_rules_in_the_reference_format() {
    let h = Host::new();
    let d1 = h.img("1.img");
    let d2 = h.img("2.img");
    let ro = h.img("ro.iso");
    let rel = format!(
        "{}/./../{}//./1.img",
        h.work.display(),
        h.work.file_name().unwrap().to_str().unwrap()
    );
    let missing = h.work.join("nonexistent.img").display().to_string();
    let x = xml(&format!(
        "{}{}<disk type='file' device='cdrom'><source file='{ro}'/><target dev='sda'/><readonly/></disk>\
         <disk type='block' device='cdrom'><target dev='sdb'/><readonly/></disk>{}",
        disk(&rel, "vda"),
        disk(&missing, "vdb"),
        disk(&d2, "vdc"),
    ));
    let o = h.ok(&["-d", "-c", "-u", NAME], Some(&x));
    assert_eq!(o.stdout, "");
    let mut want: Vec<String> = runtime("vm1")
        .lines()
        .map(|l| l.split("  #").next().unwrap().to_string())
        .collect();
    want.extend([
        format!("  \"{d1}\" rwk,"),
        format!("  \"{missing}\" rwk,"),
        format!("  \"{ro}\" rk,"),
        format!("  \"{d2}\" rwk,"),
    ]);
    assert_eq!(dry_rules(&o), want);
    assert!(
        o.stderr.contains(&format!("would create profile {NAME} (")),
        "{}",
        o.stderr
    );
    // No deny rules anywhere: a later -F must be able to widen any rule.
    assert!(!o.stderr.contains("deny"), "{}", o.stderr);

    // -f: regenerate plus the file; -F: only the file.
    let x1 = xml(&disk(&d1, "vda"));
    let o = h.ok(&["-d", "-r", "-u", NAME, "-f", &d2], Some(&x1));
    assert_eq!(dry_rules(&o).last().unwrap(), &format!("  \"{d2}\" rwk,"));
    assert_eq!(dry_rules(&o).len(), 7);
    let o = h.ok(&["-d", "-r", "-u", NAME, "-F", &missing], Some(&x1));
    assert_eq!(dry_rules(&o), vec![format!("  \"{missing}\" rwk,")]);
    // libvirt's subtree form for hugepage directories grants the tree.
    let o = h.ok(
        &[
            "-d",
            "-r",
            "-u",
            NAME,
            "-F",
            "/dev/hugepages/libvirt/qemu/1-vm1/{,**}",
        ],
        Some(&x1),
    );
    assert_eq!(
        dry_rules(&o),
        vec![
            "  \"/dev/hugepages/libvirt/qemu/1-vm1/\" r,".to_string(),
            "  \"/dev/hugepages/libvirt/qemu/1-vm1/**\" rwk,".to_string(),
        ]
    );
    // Any other glob character is a literal part of the name.
    let o = h.ok(
        &["-d", "-r", "-u", NAME, "-F", "/srv/vm*/[a].img"],
        Some(&x1),
    );
    assert_eq!(
        dry_rules(&o),
        vec![r#"  "/srv/vm\*/\[a\].img" rwk,"#.to_string()]
    );
    assert!(!h.layout().libvirt_dir().exists());
}

#[test]
fn refusals() {
    let h = Host::new();
    let d1 = h.img("1.img");
    let u = ["-d", "-c", "-u", NAME];
    h.fails(
        &u,
        Some(&xml(&disk("/etc/passwd", "vda"))),
        "disk vda: refusing /etc/passwd",
    );
    h.fails(
        &u,
        Some(&xml(&format!(
            "{}{}",
            disk(&d1, "vda"),
            disk("/etc/passwd", "vdb")
        ))),
        "disk vdb: refusing /etc/passwd",
    );
    h.fails(
        &u,
        Some(&xml(&disk(&d1, "vda")).replace("</devices>", "<devices>")),
        "does not parse",
    );
    h.fails(
        &u,
        Some(&xml(&disk(&d1, "vda")).replace("<type arch='x86_64' machine='pc'>hvm</type>", "")),
        "no <os><type>",
    );
    h.fails(
        &u,
        Some(&xml(&disk(&d1, "vda")).replace("hvm<", "hvm_invalid<")),
        "unknown <os><type> \"hvm_invalid\"",
    );
    h.fails(&u, Some(&xml_named("a/b", "", "")), "contains '/'");
    h.fails(&u, Some(""), "does not parse");
    // Restricted paths through -F and -f too, and write access in firmware dirs.
    let x = xml(&disk(&d1, "vda"));
    h.fails(
        &["-d", "-r", "-u", NAME, "-F", "/etc/shadow"],
        Some(&x),
        "refusing /etc/shadow",
    );
    h.fails(
        &["-d", "-r", "-u", NAME, "-f", "/boot/vmlinuz"],
        Some(&x),
        "may only read",
    );
    h.fails(
        &["-d", "-r", "-u", NAME, "-F", "relative.img"],
        Some(&x),
        "not absolute",
    );
    // A symlink is judged by where it leads.
    std::os::unix::fs::symlink("/etc/shadow", h.work.join("evil.img")).unwrap();
    let evil = h.work.join("evil.img").display().to_string();
    h.fails(
        &["-d", "-r", "-u", NAME, "-F", &evil],
        Some(&x),
        "resolves to /etc/shadow",
    );
}

#[test]
fn names_with_special_characters_are_escaped_unless_strict() {
    let h = Host::new();
    let d1 = h.img("1.img");
    let name = r#"vm[1]*{a,b}?^"q""#;
    let x = xml_named(&name.replace('"', "&quot;"), "", &disk(&d1, "vda"));
    let o = h.ok(&["-d", "-c", "-u", NAME], Some(&x));
    assert_eq!(
        dry_rules(&o)[0],
        r#"  "/var/log/libvirt/**/vm\[1\]\*\{a\,b\}\?\^\042q\042.log" w,"#
    );
    // Real mode: written, loaded, and the result compiles.
    h.ok(&["-c", "-u", NAME], Some(&x));
    h.compiles();
    assert!(h
        .files()
        .contains(r#"  "/run/libvirt/**/vm\[1\]\*\{a\,b\}\?\^\042q\042.pid" rwk,"#));
    // The reference's refusal, on request.
    let mut c = h.cmd(&h.bin.path().join("virt-aa-helper"));
    c.env("AA_VIRT_HELPER_STRICT_NAMES", "1");
    let o = h.run_with(c, &["-d", "-r", "-u", NAME], Some(&x));
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("contains '['"), "{}", o.stderr);
}

#[test]
fn without_apparmor_in_the_kernel_nothing_is_written() {
    let h = Host::with_kernel(false);
    let x = xml(&disk(&h.img("1.img"), "vda"));
    h.fails(
        &["-c", "-u", NAME],
        Some(&x),
        "AppArmor is not among this kernel's security modules",
    );
    assert!(!h.layout().libvirt_dir().exists());
    h.fails(
        &["-r", "-u", NAME, "-F", "/srv/x.img"],
        Some(&x),
        "cannot load",
    );
    assert!(!h.layout().libvirt_dir().exists());
    assert_eq!(h.k.runs(), 0);
    // A dry run still works.
    h.ok(&["-d", "-c", "-u", NAME], Some(&x));
}

/// A qcow2 chain of `n` layers made with qemu-img; returns them top first.
fn chain(dir: &Path, n: usize) -> Vec<String> {
    let qemu_img = ["/usr/bin/qemu-img", "/usr/local/bin/qemu-img"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("qemu-img is required for this test (apt-get install qemu-utils)");
    let mut layers: Vec<String> = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("layer{i:02}.qcow2"));
        let mut c = Command::new(qemu_img);
        c.args(["create", "-q", "-f", "qcow2"]);
        if let Some(prev) = layers.last() {
            c.args(["-b", prev.as_str(), "-F", "qcow2"]);
        }
        c.arg(&p).arg("1M");
        assert!(
            c.status().unwrap().success(),
            "qemu-img create {}",
            p.display()
        );
        layers.push(p.display().to_string());
    }
    layers.reverse();
    layers
}

/// The live XML libvirt hands over for a chained disk: every layer in
/// `<backingStore>`.
fn chained_disk(layers: &[String], dev: &str) -> String {
    let mut s = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/>",
        layers[0]
    );
    for l in &layers[1..] {
        s.push_str(&format!(
            "<backingStore type='file'><format type='qcow2'/><source file='{l}'/>"
        ));
    }
    s.push_str("<backingStore/>");
    for _ in &layers[1..] {
        s.push_str("</backingStore>");
    }
    s.push_str(&format!("<target dev='{dev}' bus='virtio'/></disk>"));
    s
}

#[test]
fn hotplug_sequence() {
    let h = Host::new();
    let d1 = h.img("disk1.img");
    let d2 = h.img("disk2.img");
    let layers = chain(&h.work, 50);
    let boot = xml(&disk(&d1, "vda"));
    let line = |p: &str, perms: &str, origin: &str| format!("  \"{p}\" {perms},  # {origin}");

    // Start: -c creates the profile and its rules, one load.
    h.ok(&["-c", "-u", NAME], Some(&boot));
    let mut rules = vec![line(&d1, "rwk", "disk vda")];
    let start = files(&rules);
    assert_eq!(h.files(), start);
    assert_eq!(h.k.runs(), 1);
    h.compiles();
    let profile = std::fs::read_to_string(h.layout().profile_path(NAME)).unwrap();
    assert!(profile.contains(&format!("profile {NAME} flags=(attach_disconnected)")));
    assert!(profile.contains(&format!("#include if exists <libvirt/{NAME}.files>")));
    // -c again is refused: the profile exists.
    h.fails(&["-c", "-u", NAME], Some(&boot), "already exists");

    // Hotplug disk2: appended, one reload.
    h.ok(&["-r", "-u", NAME, "-F", &d2], Some(&boot));
    rules.push(line(&d2, "rwk", "added by libvirt"));
    assert_eq!(h.files(), files(&rules));
    assert_eq!(h.k.runs(), 2);
    h.compiles();

    // Hotplug a disk with a 50-layer chain: libvirt labels each layer.
    for l in &layers {
        h.ok(&["-r", "-u", NAME, "-F", l], Some(&boot));
    }
    for l in &layers {
        rules.push(line(l, "rwk", "added by libvirt"));
    }
    assert_eq!(h.files(), files(&rules));
    assert_eq!(h.k.runs(), 52);
    h.compiles();

    // A block job re-sends every layer (and disk2): all already granted, so
    // no write, no compile, no load.
    let fp = h.layout().files_path(NAME);
    let mtime = std::fs::metadata(&fp).unwrap().modified().unwrap();
    for l in layers.iter().chain([&d2]) {
        h.ok(&["-r", "-u", NAME, "-F", l], Some(&boot));
    }
    assert_eq!(h.k.runs(), 52, "already-granted files must not recompile");
    assert_eq!(std::fs::metadata(&fp).unwrap().modified().unwrap(), mtime);
    assert_eq!(h.files(), files(&rules));

    // The next start (or -r) from the live XML, which now lists both disks
    // and the chain: top rwk, backing layers rk and NO deny rule.
    let live = xml(&format!(
        "{}{}{}",
        disk(&d1, "vda"),
        disk(&d2, "vdb"),
        chained_disk(&layers, "vdc")
    ));
    h.ok(&["-r", "-u", NAME], Some(&live));
    let mut live_rules = vec![
        line(&d1, "rwk", "disk vda"),
        line(&d2, "rwk", "disk vdb"),
        line(&layers[0], "rwk", "disk vdc"),
    ];
    for (i, l) in layers[1..].iter().enumerate() {
        live_rules.push(line(l, "rk", &format!("disk vdc, backing layer {}", i + 1)));
    }
    assert_eq!(h.files(), files(&live_rules));
    assert!(!h.files().contains("deny"));
    assert_eq!(h.k.runs(), 53);
    h.compiles();

    // blockcommit into layer 10: libvirt asks for rwk on it. The rule is
    // widened in place (the reference's `deny w` made this fail).
    h.ok(&["-r", "-u", NAME, "-F", &layers[10]], Some(&live));
    live_rules[12] = line(
        &layers[10],
        "rwk",
        "disk vdc, backing layer 10; added by libvirt",
    );
    assert_eq!(h.files(), files(&live_rules));
    assert_eq!(h.k.runs(), 54);
    h.compiles();
    // ...and asking again changes nothing.
    h.ok(&["-r", "-u", NAME, "-F", &layers[10]], Some(&live));
    assert_eq!(h.k.runs(), 54);

    // Unplug both: -r from the XML drops everything that was added.
    h.ok(&["-r", "-u", NAME], Some(&boot));
    assert_eq!(h.files(), start);
    assert_eq!(h.k.runs(), 55);
    h.compiles();

    // The admin's profile file was never rewritten.
    assert_eq!(
        std::fs::read_to_string(h.layout().profile_path(NAME)).unwrap(),
        profile
    );
}

#[test]
fn hugepage_directories_are_granted_as_trees_once() {
    let h = Host::new();
    let boot = xml(&disk(&h.img("1.img"), "vda"));
    h.ok(&["-c", "-u", NAME], Some(&boot));
    let dir = "/dev/hugepages/libvirt/qemu/1-vm1/{,**}";
    h.ok(&["-r", "-u", NAME, "-F", dir], Some(&boot));
    assert!(
        h.files().ends_with(
            "  \"/dev/hugepages/libvirt/qemu/1-vm1/\" r,  # added by libvirt\n  \
         \"/dev/hugepages/libvirt/qemu/1-vm1/**\" rwk,  # added by libvirt\n"
        ),
        "{}",
        h.files()
    );
    assert_eq!(h.k.runs(), 2);
    h.compiles();
    h.ok(&["-r", "-u", NAME, "-F", dir], Some(&boot));
    assert_eq!(h.k.runs(), 2);
}

#[test]
fn reference_written_rules_are_regenerated_not_extended() {
    let h = Host::new();
    let d1 = h.img("1.img");
    let base = h.img("base.img");
    let boot = xml(&disk(&d1, "vda"));
    h.ok(&["-c", "-u", NAME], Some(&boot));
    // What libvirt's own helper left behind: its header and a deny rule.
    std::fs::write(
        h.layout().files_path(NAME),
        format!(
            "# DO NOT EDIT THIS FILE DIRECTLY. IT IS MANAGED BY LIBVIRT.\n  \"{d1}\" rwk,\n  \"{base}\" rk,\n  # don't audit writes to readonly files\n  deny \"{base}\" w,\n"
        ),
    )
    .unwrap();
    h.ok(&["-r", "-u", NAME, "-F", &base], Some(&boot));
    assert_eq!(
        h.files(),
        files(&[
            format!("  \"{d1}\" rwk,  # disk vda"),
            format!("  \"{base}\" rwk,  # added by libvirt"),
        ])
    );
    h.compiles();
}

#[test]
fn remove_delete_and_add() {
    let h = Host::new();
    let boot = xml(&disk(&h.img("1.img"), "vda"));
    h.ok(&["-c", "-u", NAME], Some(&boot));
    std::fs::write(h.k.fs.join(".remove"), "").unwrap();
    // -a reloads the profile as it is.
    h.ok(&["-a", "-u", NAME], None);
    assert_eq!(h.k.runs(), 2);
    // -R unloads and keeps both files.
    h.ok(&["-R", "-u", NAME], None);
    assert_eq!(
        std::fs::read_to_string(h.k.fs.join(".remove")).unwrap(),
        NAME
    );
    assert!(h.layout().files_path(NAME).exists());
    // -D unloads and removes the generated rules, keeping the profile
    // (libvirt's behaviour).
    h.ok(&["-D", "-u", NAME], None);
    assert!(!h.layout().files_path(NAME).exists());
    assert!(h.layout().profile_path(NAME).exists());
    // The next start is -r (the profile exists) and regenerates the rules.
    h.ok(&["-r", "-u", NAME], Some(&boot));
    assert!(h.layout().files_path(NAME).exists());
    h.compiles();
}

#[test]
fn fixes_to_the_reference_end_to_end() {
    let h = Host::new();
    let d1 = h.img("1.img");
    let run = |devices: &str, os: &str| {
        let o = h.run(
            &["-d", "-r", "-u", NAME],
            Some(&xml_named(
                "vm1",
                os,
                &format!("{}{devices}", disk(&d1, "vda")),
            )),
        );
        (o.code, dry_rules(&o), o.stderr)
    };

    // A virtio console on a pipe gets PATH.in and PATH.out.
    let vc = h.work.join("vc").display().to_string();
    let (code, rules, err) = run(
        &format!(
            "<console type='pipe'><source path='{vc}'/><target type='virtio' port='0'/></console>"
        ),
        "",
    );
    assert_eq!(code, 0, "{err}");
    for want in [format!("  \"{vc}.in\" rw,"), format!("  \"{vc}.out\" rw,")] {
        assert!(rules.contains(&want), "{want} not in {rules:#?}");
    }

    // An absent USB host device is reported, not silently dropped...
    let usb = "<hostdev mode='subsystem' type='usb'><source><address bus='2' device='4'/></source></hostdev>";
    let (code, _, err) = run(usb, "");
    assert_eq!(code, 1);
    assert!(
        err.contains("hostdev0: USB device on bus 2 address 4 is not attached"),
        "{err}"
    );
    // ...unless libvirt is told it is optional.
    let (code, rules, err) = run(
        &usb.replace("<source>", "<source startupPolicy='optional'>"),
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!rules.iter().any(|r| r.contains("/dev/bus/usb")));

    // A writable loader outside the firmware directories is granted rwk;
    // a firmware image in them is read-only unless asked otherwise, and a
    // writable one there is refused with the reason.
    let fw = h.img("CODE.fd");
    let (code, rules, err) = run("", &format!("<loader type='pflash'>{fw}</loader>"));
    assert_eq!(code, 0, "{err}");
    assert!(rules.contains(&format!("  \"{fw}\" rwk,")), "{rules:#?}");
    let ovmf = "/usr/share/OVMF/OVMF_CODE.fd";
    let (code, rules, err) = run("", &format!("<loader type='pflash'>{ovmf}</loader>"));
    assert_eq!(code, 0, "{err}");
    assert!(rules.contains(&format!("  \"{ovmf}\" rk,")), "{rules:#?}");
    let (code, _, err) = run(
        "",
        &format!("<loader readonly='no' type='pflash'>{ovmf}</loader>"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("which guests may only read"), "{err}");

    // Backing layers: rk with no deny rule (so a later -F rwk works; the
    // widening itself is in hotplug_sequence).
    let layers = chain(&h.work, 3);
    let (code, rules, err) = run(&chained_disk(&layers, "vdb"), "");
    assert_eq!(code, 0, "{err}");
    assert!(
        rules.contains(&format!("  \"{}\" rk,", layers[2])),
        "{rules:#?}"
    );
    assert!(!err.contains("deny"));
}

#[test]
fn the_configuration_applies_as_for_the_hook() {
    let h = Host::new();
    let boot = xml(&disk(&h.img("1.img"), "vda"));
    std::fs::write(
        h.root.path().join("aa-virt.toml"),
        format!("complain = [\"{UUID}\"]\n"),
    )
    .unwrap();
    h.ok(&["-c", "-u", NAME], Some(&boot));
    let p = std::fs::read_to_string(h.layout().profile_path(NAME)).unwrap();
    assert!(p.contains("flags=(attach_disconnected,complain)"), "{p}");
    h.compiles();
    std::fs::write(h.root.path().join("aa-virt.toml"), "no_such_key = 1\n").unwrap();
    h.fails(&["-r", "-u", NAME], Some(&boot), "aa-virt.toml");
}
