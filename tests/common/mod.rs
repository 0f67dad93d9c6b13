//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod dfa;
pub mod fuzzcheck;
pub mod list;
pub mod oracle;
pub mod rulecheck;

use std::path::{Path, PathBuf};

use aa_virt::apparmor::{fake, Parser};

/// The library's recording fake kernel (`aa_virt::apparmor::fake`) in a
/// temp dir: a load compiles the profile with the REAL parser (compile
/// only, shipped features file) and, when that works, records the profile
/// as loaded in a fake securityfs `profiles` file. A test build of the
/// `aa-virt` binary finds it through `AA_VIRT_SYSROOT` (or the
/// configuration's `securityfs`) by its marker file. Loading itself is
/// proven in the integration VM; this lets the file handling around it be
/// tested here.
pub struct FakeKernel {
    /// Temp dir holding everything.
    pub dir: tempfile::TempDir,
    /// The fake securityfs directory.
    pub fs: PathBuf,
    /// The real parser the fake compiles with.
    pub parser: PathBuf,
    kernel: fake::FakeKernel,
}

impl FakeKernel {
    /// Make one: AppArmor available, nothing loaded, loads work.
    pub fn new() -> FakeKernel {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("securityfs");
        let kernel = fake::FakeKernel::create(&fs).unwrap();
        FakeKernel {
            dir,
            fs,
            parser: Parser::new().bin,
            kernel,
        }
    }

    /// The parser to hand aa-virt (the real one: the fake kernel compiles
    /// with it).
    pub fn parser(&self) -> Parser {
        Parser::new()
    }

    /// The kernel to hand aa-virt.
    pub fn kernel(&self) -> &fake::FakeKernel {
        &self.kernel
    }

    /// Render and install (write and load) the profile of a one-disk
    /// libvirt guest `name` with `uuid` under `layout`.
    pub fn install_guest(
        &self,
        name: &str,
        uuid: &str,
        layout: &aa_virt::libvirt::profile::Layout,
    ) {
        let templates = aa_virt::policy::Templates::load(None).unwrap();
        let xml = format!(
            "<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><devices>\
             <disk type='file' device='disk'><source file='/var/lib/libvirt/images/{name}.qcow2'/>\
             <target dev='vda'/></disk></devices></domain>"
        );
        let guest = aa_virt::libvirt::parse(
            &xml,
            &aa_virt::libvirt::ReadOptions {
                probe_chains: false,
                ..aa_virt::libvirt::ReadOptions::default()
            },
        )
        .unwrap();
        aa_virt::libvirt::profile::render(&guest, &templates, false)
            .unwrap()
            .install(&guest, layout, &templates, &self.parser(), self.kernel())
            .unwrap();
    }

    /// The kernel, boxed as the hook and helper hold it.
    pub fn boxed(&self) -> Box<dyn aa_virt::apparmor::Kernel + Send + Sync> {
        Box::new(self.kernel.clone())
    }

    /// Make loads fail (true) or work (false).
    pub fn fail_loads(&self, fail: bool) {
        self.kernel.fail_loads(fail).unwrap();
    }

    /// A fake system root for the binary (`AA_VIRT_SYSROOT`): AppArmor
    /// enabled, securityfs at this fake kernel's directory.
    pub fn sysroot(&self) -> PathBuf {
        let root = self.dir.path().join("sysroot");
        let params = root.join("sys/module/apparmor/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("enabled"), "Y\n").unwrap();
        let sec = root.join("sys/kernel/security");
        std::fs::create_dir_all(&sec).unwrap();
        let link = sec.join("apparmor");
        if !link.exists() {
            std::os::unix::fs::symlink(&self.fs, &link).unwrap();
        }
        root
    }

    /// The generated rules (`.files`) the kernel was last given for `name`.
    pub fn loaded_files(&self, name: &str) -> Option<String> {
        self.kernel.loaded_files(name)
    }

    /// Start `aa-virt helper MODE -u PROFILE` as libvirt would, against this
    /// kernel (`sys` from [`FakeKernel::sysroot`]) and the state root
    /// `root`, with `xml` written to its standard input, which is then
    /// closed.
    pub fn spawn_helper(
        &self,
        sys: &Path,
        root: &Path,
        mode: &str,
        profile: &str,
        xml: &str,
    ) -> std::process::Child {
        use std::io::Write;
        use std::process::Stdio;
        let mut c = aa_virt()
            .args(["helper", mode, "-u", profile])
            .env("AA_VIRT_ROOT", root)
            .env("AA_VIRT_SYSROOT", sys)
            .env_remove("AA_VIRT_TEMPLATES")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the aa-virt binary");
        let mut stdin = c.stdin.take().unwrap();
        stdin.write_all(xml.as_bytes()).unwrap();
        drop(stdin);
        c
    }

    /// How many loads the kernel was asked for.
    pub fn runs(&self) -> usize {
        self.kernel.loads()
    }

    /// The profile files the kernel was asked to load, in order.
    pub fn replaced(&self) -> Vec<PathBuf> {
        self.kernel
            .calls()
            .iter()
            .filter(|l| l.starts_with("replace "))
            .map(|l| PathBuf::from(l.rsplit(' ').next().unwrap()))
            .collect()
    }

    /// Every recorded call (`replace NAME [--cache-loc DIR] PATH`,
    /// `remove NAME`).
    pub fn calls(&self) -> Vec<String> {
        self.kernel.calls()
    }

    /// Forget the recorded calls.
    pub fn clear_calls(&self) {
        self.kernel.clear_calls();
    }
}

/// A kernel without AppArmor, for `reason`.
pub fn no_kernel(reason: &str) -> aa_virt::apparmor::SystemKernel {
    aa_virt::apparmor::SystemKernel::with_status(
        aa_virt::apparmor::KernelStatus::Unavailable(reason.into()),
        aa_virt::apparmor::Root::system(),
    )
}

/// The `aa-virt` binary under test (`BIN`).
pub const BIN: &str = env!("CARGO_BIN_EXE_aa-virt");

/// A command running the `aa-virt` binary under test: the one way tests
/// start it (add arguments and environment to taste).
pub fn aa_virt() -> std::process::Command {
    std::process::Command::new(BIN)
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `lxc-stop -k` container `name` of `lxcpath`, then wait (up to 5 s) for
/// its post-stop hook's line in the hook log `log` (post-stop runs in LXC's
/// monitor, which may outlive lxc-stop briefly); gives the log.
pub fn lxc_stop_waiting_for_post_stop(lxcpath: &str, name: &str, log: &Path) -> String {
    let stop = std::process::Command::new("timeout")
        .args(["60", "lxc-stop", "-P", lxcpath, "-n", name, "-k"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "lxc-stop {name}: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    for _ in 0..50 {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("post-stop")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::read_to_string(log).unwrap()
}

/// The hook types of an `AA_VIRT_HOOK_LOG`, in order.
pub fn hook_kinds(log: &str) -> Vec<&str> {
    log.lines().filter_map(|l| l.split(' ').next()).collect()
}
