//! Writing and loading a libvirt guest's profile: create-once, rewrite only
//! on change, no reload when nothing changed, rollback on a failed load,
//! nothing written without a kernel, and clean removal.

use crate::common;

use aa_virt::libvirt::profile::{self, Layout};
use aa_virt::libvirt::{parse, ReadOptions};
use aa_virt::policy::Templates;

const XML: &str = r#"<domain type='kvm'>
  <name>inst{1}</name>
  <uuid>3f1d0b9e-1111-2222-3333-444455556666</uuid>
  <devices>
    <disk type='file' device='disk'>
      <source file='/srv/images/DISK'/>
      <target dev='vda'/>
    </disk>
  </devices>
</domain>"#;

fn render(disk: &str) -> (aa_virt::guest::Guest, profile::Rendered, Templates) {
    let t = Templates::load(None).unwrap();
    let g = parse(&XML.replace("DISK", disk), &ReadOptions::default()).unwrap();
    let r = profile::render(&g, &t, false).unwrap();
    (g, r, t)
}

#[test]
fn install_is_idempotent_and_rolls_back_failed_loads() {
    let k = common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let (g, r, t) = render("a.img");

    let first = r.install(&g, &layout, &t, &k.parser(), k.kernel()).unwrap();
    assert!(first.created_profile && first.files_changed && first.loaded);
    let files = std::fs::read_to_string(layout.files_path(&r.name)).unwrap();
    assert!(
        files.contains("\"/srv/images/a.img\" rwk,  # disk vda"),
        "{files}"
    );
    assert!(layout
        .apparmor_dir
        .join("abstractions/aa-virt-qemu")
        .exists());
    assert_eq!(k.runs(), 1);

    // Same guest again: nothing written, nothing recompiled.
    let again = r.install(&g, &layout, &t, &k.parser(), k.kernel()).unwrap();
    assert_eq!(
        (again.created_profile, again.files_changed, again.loaded),
        (false, false, false)
    );
    assert_eq!(k.runs(), 1);

    // The admin edits the profile file: aa-virt never overwrites it.
    let pp = layout.profile_path(&r.name);
    let edited = std::fs::read_to_string(&pp).unwrap() + "# admin was here\n";
    std::fs::write(&pp, &edited).unwrap();

    // A changed guest whose load fails: previous .files restored.
    let (g2, r2, _) = render("b.img");
    k.fail_loads(true);
    let e = r2
        .install(&g2, &layout, &t, &k.parser(), k.kernel())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("inst{1}") && e.contains("injected failure"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(layout.files_path(&r.name)).unwrap(),
        files
    );
    assert_eq!(std::fs::read_to_string(&pp).unwrap(), edited);

    k.fail_loads(false);
    let ok = r2
        .install(&g2, &layout, &t, &k.parser(), k.kernel())
        .unwrap();
    assert!(ok.files_changed && ok.loaded && !ok.created_profile);
    assert_eq!(std::fs::read_to_string(&pp).unwrap(), edited);

    // No temp files anywhere.
    for e in std::fs::read_dir(layout.libvirt_dir()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".aa-virt-tmp"), "left {n}");
    }
}

#[test]
fn a_failed_first_load_leaves_nothing_behind() {
    let k = common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let (g, r, t) = render("c.img");
    k.fail_loads(true);
    assert!(r.install(&g, &layout, &t, &k.parser(), k.kernel()).is_err());
    assert!(!layout.profile_path(&r.name).exists());
    assert!(!layout.files_path(&r.name).exists());
}

#[test]
fn without_a_kernel_nothing_is_written() {
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let (g, r, t) = render("d.img");
    let k = common::no_kernel("no AppArmor here");
    let e = r
        .install(&g, &layout, &t, &aa_virt::apparmor::Parser::new(), &k)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no AppArmor here") && e.contains(&r.name), "{e}");
    assert!(!layout.libvirt_dir().exists());
}

#[test]
fn uninstall_unloads_and_removes_generated_files() {
    let k = common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let (g, r, t) = render("e.img");
    r.install(&g, &layout, &t, &k.parser(), k.kernel()).unwrap();
    // The fake securityfs has no real .remove; make one that records writes.
    std::fs::write(k.fs.join(".remove"), "").unwrap();
    let gone = profile::uninstall(&layout, &r.name, k.kernel(), false).unwrap();
    assert!(gone.unloaded && gone.files_removed && !gone.profile_removed);
    assert_eq!(
        std::fs::read_to_string(k.fs.join(".remove")).unwrap(),
        r.name
    );
    assert!(layout.profile_path(&r.name).exists());
    // Twice is fine.
    let again = profile::uninstall(&layout, &r.name, &common::no_kernel("x"), true).unwrap();
    assert!(!again.files_removed && again.profile_removed);
}

#[test]
fn gl_guests_include_the_gl_abstraction_and_it_is_compiled() {
    let gl_xml = XML.replace(
        "</devices>",
        "<graphics type='egl-headless'><gl rendernode='/dev/dri/renderD128'/></graphics></devices>",
    );
    let plain = parse(&XML.replace("DISK", "a.img"), &ReadOptions::default()).unwrap();
    let gl = parse(&gl_xml.replace("DISK", "a.img"), &ReadOptions::default()).unwrap();
    assert!(gl.gl && !plain.gl);
    let t = Templates::load(None).unwrap();
    let rg = profile::render(&gl, &t, false).unwrap();
    let rp = profile::render(&plain, &t, false).unwrap();
    let inc = "  #include <abstractions/aa-virt-qemu-gl>\n";
    assert!(rg.files.contains(inc), "{}", rg.files);
    assert!(!rp.files.contains("aa-virt-qemu-gl"), "{}", rp.files);
    assert_eq!(
        rg.abstractions(),
        vec!["abstractions/aa-virt-qemu", "abstractions/aa-virt-qemu-gl"]
    );
    // The real parser compiles the GL guest's profile with the abstraction.
    let parser = aa_virt::apparmor::Parser::new();
    rg.check(&gl, &t, &parser).unwrap();

    // The include is really followed: a broken GL abstraction (an override
    // in the templates directory) breaks the GL guest's compile only.
    let over = tempfile::tempdir().unwrap();
    let abs = over.path().join("apparmor.d/abstractions");
    std::fs::create_dir_all(&abs).unwrap();
    std::fs::write(abs.join("aa-virt-qemu-gl"), "  not a rule at all,\n").unwrap();
    let broken = Templates::load(Some(over.path())).unwrap();
    let e = rg.check(&gl, &broken, &parser).unwrap_err().to_string();
    assert!(e.contains("inst{1}"), "{e}");
    rp.check(&plain, &broken, &parser).unwrap();

    // Installing the guest puts the abstraction in place.
    let k = common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    rg.install(&gl, &layout, &t, &k.parser(), k.kernel())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(layout.apparmor_dir.join("abstractions/aa-virt-qemu-gl")).unwrap(),
        t.abstraction("abstractions/aa-virt-qemu-gl").unwrap()
    );
}

#[test]
fn a_guest_gets_only_the_abstractions_it_includes_written() {
    let k = common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let (g, r, t) = render("a.img");
    assert_eq!(r.abstractions(), vec!["abstractions/aa-virt-qemu"]);
    r.install(&g, &layout, &t, &k.parser(), k.kernel()).unwrap();
    let abs = layout.apparmor_dir.join("abstractions");
    assert!(abs.join("aa-virt-qemu").exists());
    assert!(!abs.join("aa-virt-qemu-gl").exists());
}
