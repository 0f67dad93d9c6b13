//! Many installs at once, through the real binary: 64 `aa-virt helper -c`
//! processes for 64 guests, started together, plus two `helper -r`
//! processes racing on one more guest with different disks. Afterwards
//! every profile file is complete and equals a fresh render, the raced
//! guest holds exactly one of the two renders (never a mix), the kernel
//! (fake securityfs, real parser compile) lists each profile once, and no
//! temp file is left anywhere.

use crate::common;

use std::path::Path;
use std::process::Child;

use aa_virt::libvirt::profile::{self, Layout};
use aa_virt::libvirt::{parse, ReadOptions};
use aa_virt::policy::Templates;

const GUESTS: usize = 64;

fn uuid(i: usize) -> String {
    format!("5eed0000-0000-4000-8000-{i:012x}")
}

fn xml(i: usize, disks: &[String]) -> String {
    let mut d = String::new();
    for (k, p) in disks.iter().enumerate() {
        d.push_str(&format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{p}'/><target dev='vd{}{}'/></disk>",
            (b'a' + (k / 26) as u8) as char,
            (b'a' + (k % 26) as u8) as char
        ));
    }
    format!(
        "<domain type='kvm' id='{}'><name>guest {i} [x]*</name><uuid>{}</uuid><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{d}</devices></domain>",
        i + 1,
        uuid(i)
    )
}

fn disks(i: usize, variant: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| format!("/srv/conc/{variant}/g{i}/disk{k}{{a,b}}.img"))
        .collect()
}

fn spawn(
    k: &common::FakeKernel,
    sys: &Path,
    root: &Path,
    mode: &str,
    i: usize,
    xml: &str,
) -> Child {
    k.spawn_helper(sys, root, mode, &format!("libvirt-{}", uuid(i)), xml)
}

fn render(xml: &str) -> profile::Rendered {
    let t = Templates::load(None).unwrap();
    let g = parse(xml, &ReadOptions::default()).unwrap();
    profile::render(&g, &t, false).unwrap()
}

/// Every file under `dir`, recursively, that looks like one of our temp files.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if e
                .file_name()
                .to_string_lossy()
                .starts_with(aa_virt::store::TMP_PREFIX)
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn sixty_four_guests_and_one_raced_guest_at_once() {
    let k = common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let sys = k.sysroot();
    let raced = GUESTS;
    let xml_a = xml(raced, &disks(raced, "A", 40));
    let xml_b = xml(raced, &disks(raced, "B", 55));
    let mut children = Vec::new();
    for i in 0..GUESTS {
        let x = xml(i, &disks(i, "main", 1 + i % 7));
        children.push((i, x.clone(), spawn(&k, &sys, root.path(), "-c", i, &x)));
        if i == GUESTS / 2 {
            children.push((
                raced,
                xml_a.clone(),
                spawn(&k, &sys, root.path(), "-r", raced, &xml_a),
            ));
            children.push((
                raced,
                xml_b.clone(),
                spawn(&k, &sys, root.path(), "-r", raced, &xml_b),
            ));
        }
    }
    let mut ok = 0;
    for (i, _, c) in children {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "guest {i}: exit {:?}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        ok += 1;
    }
    assert_eq!(ok, GUESTS + 2);

    // Every guest: profile and .files complete and equal to a fresh render.
    for i in 0..GUESTS {
        let r = render(&xml(i, &disks(i, "main", 1 + i % 7)));
        let prof = std::fs::read_to_string(layout.profile_path(&r.name)).unwrap();
        let files = std::fs::read_to_string(layout.files_path(&r.name)).unwrap();
        assert_eq!(prof, r.profile, "guest {i}: profile file");
        assert_eq!(files, r.files, "guest {i}: .files");
        common::rulecheck::check_files_text(&files).unwrap();
    }
    // The raced guest: exactly one of the two renders, whole.
    let ra = render(&xml_a);
    let rb = render(&xml_b);
    let files = std::fs::read_to_string(layout.files_path(&ra.name)).unwrap();
    assert!(
        files == ra.files || files == rb.files,
        "raced guest's .files is neither render (a mix?):\n{files}"
    );
    assert_eq!(
        std::fs::read_to_string(layout.profile_path(&ra.name)).unwrap(),
        ra.profile
    );
    // The kernel saw each profile, once.
    let loaded = std::fs::read_to_string(k.fs.join("profiles")).unwrap();
    for i in 0..=GUESTS {
        let n = loaded
            .lines()
            .filter(|l| l.starts_with(&format!("libvirt-{} ", uuid(i))))
            .count();
        assert_eq!(n, 1, "guest {i} loaded {n} times:\n{loaded}");
    }
    // Nothing half-written left anywhere.
    assert_eq!(temp_files(root.path()), Vec::<String>::new());
    let entries = std::fs::read_dir(layout.libvirt_dir()).unwrap().count();
    assert_eq!(entries, 2 * (GUESTS + 1), "profile + .files per guest");
    eprintln!(
        "concurrency: {} processes, {} guests, all files complete, 0 temp files",
        GUESTS + 2,
        GUESTS + 1
    );
}
