//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod dfa;
pub mod fuzzcheck;
pub mod rulecheck;

use std::path::{Path, PathBuf};

use aa_virt::apparmor::{KernelStatus, Parser};

/// A stand-in for the kernel side of `apparmor_parser --replace`: a script
/// that compiles the profile with the REAL parser (compile only, shipped
/// features file) and, when that works, records the profile as loaded in a
/// fake securityfs `profiles` file. Loading itself is proven in the
/// integration VM; this lets the file handling around it be tested here.
pub struct FakeKernel {
    /// Temp dir holding everything.
    pub dir: tempfile::TempDir,
    /// The fake securityfs directory.
    pub fs: PathBuf,
    /// The wrapper script.
    pub parser: PathBuf,
    /// Log of invocations, one line each.
    pub log: PathBuf,
}

impl FakeKernel {
    /// Make one. `fail_marker`: while this file exists, the wrapper fails loads.
    pub fn new() -> FakeKernel {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("securityfs");
        std::fs::create_dir_all(&fs).unwrap();
        std::fs::write(fs.join("profiles"), "").unwrap();
        let log = dir.path().join("parser.log");
        let parser = dir.path().join("apparmor_parser");
        let real = Parser::new().bin;
        std::fs::write(
            &parser,
            format!(
                r#"#!/bin/sh
# args: [--base B] [-I DIR]... --replace|--remove ... FILE
# aa-virt preprocesses a profile to decide whether the cache may be read:
# the real parser answers that (it is not a load).
case " $* " in *" --preprocess "*) exec '{real}' "$@" ;; esac
echo "$*" >> '{log}'
[ -e '{fail}' ] && {{ echo "AppArmor parser error: injected failure" >&2; exit 1; }}
last=""; for a in "$@"; do last="$a"; done
inc=""; prev=""
for a in "$@"; do
  if [ "$prev" = "-I" ]; then inc="$inc -I $a"; fi
  prev="$a"
done
'{real}' --skip-kernel-load --skip-cache --quiet --features-file /usr/share/apparmor-features/features $inc -o /dev/null "$last" || exit 1
name=$(sed -n 's/^profile \([^ ]*\) .*/\1/p' "$last" | head -n1)
case " $* " in
  *" --replace "*) grep -q "^$name (" '{fs}/profiles' || echo "$name (enforce)" >> '{fs}/profiles'
    # What the kernel now enforces: the generated rules it was given.
    if [ -e "$last.files" ]; then cp "$last.files" '{fs}/.loaded.tmp.'$$ && mv '{fs}/.loaded.tmp.'$$ '{fs}/loaded.'"$name"'.files'; fi ;;
esac
exit 0
"#,
                log = log.display(),
                fail = dir.path().join("fail").display(),
                real = real.display(),
                fs = fs.display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&parser, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeKernel {
            dir,
            fs,
            parser,
            log,
        }
    }

    /// A parser that runs the wrapper.
    pub fn parser(&self) -> Parser {
        let mut p = Parser::new();
        p.bin = self.parser.clone();
        p
    }

    /// The kernel status pointing at the fake securityfs.
    pub fn status(&self) -> KernelStatus {
        KernelStatus::Available {
            fs: self.fs.clone(),
        }
    }

    /// Make loads fail (true) or work (false).
    pub fn fail_loads(&self, fail: bool) {
        let m = self.dir.path().join("fail");
        if fail {
            std::fs::write(m, "").unwrap();
        } else {
            let _ = std::fs::remove_file(m);
        }
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
        std::fs::read_to_string(self.fs.join(format!("loaded.{name}.files"))).ok()
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
        use std::process::{Command, Stdio};
        let mut c = Command::new(env!("CARGO_BIN_EXE_aa-virt"))
            .args(["helper", mode, "-u", profile])
            .env("AA_VIRT_ROOT", root)
            .env("AA_VIRT_SYSROOT", sys)
            .env("AA_VIRT_PARSER", &self.parser)
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

    /// How many times the parser ran.
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
