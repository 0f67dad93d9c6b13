//! Backing chains read from real image headers (made with `qemu-img`) and
//! from hostile headers written by the test.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aa_virt::libvirt::image::{
    chain, parse_header, read_chain, ExtraKind, ImageError, ImageFormat, MAX_CHAIN_DEPTH,
};
use aa_virt::libvirt::{parse, ReadOptions};
use aa_virt::policy::{derive, RuleError};

/// Run `qemu-img ARGS` (split on spaces) in `dir`; a missing qemu-img
/// fails the test loudly.
fn qemu_img(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split(' ').collect();
    let out = Command::new("qemu-img")
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap_or_else(|e| {
            panic!("qemu-img is required for this test (apt-get install qemu-utils): {e}")
        });
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn paths(layers: &[aa_virt::libvirt::image::Layer]) -> Vec<PathBuf> {
    layers.iter().map(|l| l.path.clone()).collect()
}

/// A minimal qcow2 v3 header naming `backing` with format `fmt`.
fn qcow2_header(backing: Option<&str>, fmt: Option<&str>) -> Vec<u8> {
    let mut h = vec![0u8; 104];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes()); // 64 KiB clusters
    h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    if let Some(f) = fmt {
        h.extend_from_slice(&0xE279_2ACAu32.to_be_bytes());
        h.extend_from_slice(&(f.len() as u32).to_be_bytes());
        h.extend_from_slice(f.as_bytes());
        h.resize(h.len().div_ceil(8) * 8, 0);
    }
    h.extend_from_slice(&[0u8; 8]); // end of extensions
    if let Some(b) = backing {
        let off = h.len() as u64;
        h[8..16].copy_from_slice(&off.to_be_bytes());
        h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
        h.extend_from_slice(b.as_bytes());
    }
    h
}

/// Replace a qcow2 header extension's type in place (to make an image
/// whose backing format is not recorded, as older tools wrote them).
fn retype_extension(path: &Path, from: u32, to: u32) {
    let mut b = fs::read(path).unwrap();
    let pos = b
        .windows(4)
        .position(|w| w == from.to_be_bytes())
        .expect("extension present");
    b[pos..pos + 4].copy_from_slice(&to.to_be_bytes());
    fs::write(path, b).unwrap();
}

/// `n` crafted qcow2 layers l1 -> l2 -> ... -> ln (raw), relative names.
fn crafted_chain(dir: &Path, n: usize) -> PathBuf {
    for i in 1..=n {
        let img = if i < n {
            qcow2_header(Some(&format!("l{}.qcow2", i + 1)), Some("qcow2"))
        } else {
            qcow2_header(None, None)
        };
        fs::write(dir.join(format!("l{i}.qcow2")), img).unwrap();
    }
    dir.join("l1.qcow2")
}

#[test]
fn qcow2_chains_of_1_3_and_50_layers() {
    let d = tmp();
    let dir = d.path();
    qemu_img(dir, "create -q -f qcow2 base.qcow2 1M");
    qemu_img(dir, "create -q -f qcow2 -b base.qcow2 -F qcow2 one.qcow2");
    let one = chain(&dir.join("one.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(paths(&one), vec![dir.join("base.qcow2")]);
    assert_eq!(one[0].format.as_deref(), Some("qcow2"));

    // 3 layers, mixing relative and absolute names, ending in a raw layer
    qemu_img(dir, "create -q -f raw r.raw 1M");
    let mid = dir.join("mid.qcow2");
    qemu_img(dir, "create -q -f qcow2 -b r.raw -F raw mid.qcow2");
    let upper = format!(
        "create -q -f qcow2 -b {} -F qcow2 upper.qcow2",
        mid.display()
    );
    qemu_img(dir, &upper);
    fs::create_dir(dir.join("sub")).unwrap();
    qemu_img(
        dir,
        "create -q -f qcow2 -b ../upper.qcow2 -F qcow2 sub/top.qcow2",
    );
    let three = chain(&dir.join("sub/top.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(
        paths(&three),
        vec![
            dir.join("sub/../upper.qcow2"),
            mid.clone(),
            dir.join("r.raw")
        ]
    );
    let fmts: Vec<_> = three.iter().map(|l| l.format.clone().unwrap()).collect();
    assert_eq!(fmts, ["qcow2", "qcow2", "raw"]);

    // 50 layers
    qemu_img(dir, "create -q -f qcow2 c0.qcow2 1M");
    for i in 1..50 {
        let args = format!(
            "create -q -f qcow2 -u -b c{}.qcow2 -F qcow2 c{i}.qcow2 1M",
            i - 1
        );
        qemu_img(dir, &args);
    }
    let fifty = chain(&dir.join("c49.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(fifty.len(), 49);
    assert_eq!(fifty[0].path, dir.join("c48.qcow2"));
    assert_eq!(fifty[48].path, dir.join("c0.qcow2"));
}

#[test]
fn qed_raw_backing_followed_other_backing_refused() {
    let d = tmp();
    let dir = d.path();
    qemu_img(dir, "create -q -f raw r.raw 1M");
    qemu_img(dir, "create -q -f qed -b r.raw -F raw a.qed");
    let c = chain(&dir.join("a.qed"), Some("qed")).unwrap();
    assert_eq!(paths(&c), vec![dir.join("r.raw")]);
    assert_eq!(c[0].format.as_deref(), Some("raw"));
    // qed records only "raw"; any other backing format is unrecorded.
    qemu_img(dir, "create -q -f qed base.qed 1M");
    qemu_img(dir, "create -q -f qed -b base.qed -F qed b.qed");
    let e = chain(&dir.join("b.qed"), Some("qed")).unwrap_err();
    assert!(
        matches!(&e, ImageError::UnrecordedFormat { layer, depth: 1, .. } if *layer == dir.join("base.qed")),
        "{e}"
    );
}

#[test]
fn vmdk_sparse_descriptors_and_extents() {
    let d = tmp();
    let dir = d.path();
    qemu_img(dir, "create -q -f vmdk base.vmdk 1M");
    qemu_img(dir, "create -q -f vmdk -b base.vmdk -F vmdk top.vmdk");
    // monolithicSparse: parent from the embedded descriptor, no extra files
    let c = read_chain(&dir.join("top.vmdk"), Some("vmdk")).unwrap();
    assert_eq!(paths(&c.layers), vec![dir.join("base.vmdk")]);
    assert_eq!(c.layers[0].format.as_deref(), Some("vmdk"));
    assert!(c.top_extras.is_empty() && c.layers[0].extras.is_empty());

    // twoGbMaxExtentSparse descriptor with a parent: its extents are the top's
    qemu_img(
        dir,
        "create -q -f vmdk -o subformat=twoGbMaxExtentSparse -b base.vmdk -F vmdk split.vmdk",
    );
    let c = read_chain(&dir.join("split.vmdk"), Some("vmdk")).unwrap();
    assert_eq!(paths(&c.layers), vec![dir.join("base.vmdk")]);
    let extras: Vec<_> = c
        .top_extras
        .iter()
        .map(|e| (e.path.clone(), e.kind))
        .collect();
    assert_eq!(
        extras,
        vec![(dir.join("split-s001.vmdk"), ExtraKind::Extent)]
    );

    // twoGbMaxExtentFlat as a backing layer: its extents belong to the layer
    qemu_img(
        dir,
        "create -q -f vmdk -o subformat=twoGbMaxExtentFlat flat.vmdk 1M",
    );
    qemu_img(dir, "create -q -f qcow2 -b flat.vmdk -F vmdk q.qcow2");
    let c = read_chain(&dir.join("q.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(paths(&c.layers), vec![dir.join("flat.vmdk")]);
    let extras: Vec<_> = c.layers[0].extras.iter().map(|e| e.path.clone()).collect();
    assert_eq!(extras, vec![dir.join("flat-f001.vmdk")]);
    assert!(c.top_extras.is_empty());
}

#[test]
fn qcow2_external_data_file() {
    let d = tmp();
    let dir = d.path();
    qemu_img(
        dir,
        "create -q -f qcow2 -o data_file=data.raw base.qcow2 1M",
    );
    qemu_img(
        dir,
        "create -q -f qcow2 -o data_file=top.raw -b base.qcow2 -F qcow2 top.qcow2",
    );
    let c = read_chain(&dir.join("top.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(c.top_extras.len(), 1);
    assert_eq!(c.top_extras[0].path, dir.join("top.raw"));
    assert_eq!(c.top_extras[0].kind, ExtraKind::DataFile);
    assert_eq!(c.layers[0].extras[0].path, dir.join("data.raw"));
}

#[test]
fn unrecorded_backing_format_is_refused_not_probed() {
    let d = tmp();
    let dir = d.path();
    qemu_img(dir, "create -q -f qcow2 base.qcow2 1M");
    qemu_img(dir, "create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2");
    qemu_img(dir, "create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2");
    // mid no longer records its backing format (an unknown extension type is ignored by QEMU)
    retype_extension(&dir.join("mid.qcow2"), 0xE279_2ACA, 0x0000_0001);
    let e = chain(&dir.join("top.qcow2"), Some("qcow2")).unwrap_err();
    match &e {
        ImageError::UnrecordedFormat {
            layer,
            depth,
            named_by,
        } => {
            assert_eq!(layer, &dir.join("base.qcow2"));
            assert_eq!(*depth, 2);
            assert_eq!(named_by, &dir.join("mid.qcow2"));
        }
        other => panic!("expected UnrecordedFormat, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("base.qcow2") && msg.contains("refusing to probe"),
        "{msg}"
    );
}

#[test]
fn raw_or_undeclared_image_is_never_read() {
    let d = tmp();
    let dir = d.path();
    // a "raw" image whose content is a valid qcow2 header naming /etc/shadow
    let fake = dir.join("guest-written.img");
    fs::write(&fake, qcow2_header(Some("/etc/shadow"), Some("raw"))).unwrap();
    assert!(chain(&fake, Some("raw")).unwrap().is_empty());
    assert!(chain(&fake, None).unwrap().is_empty());
    // ... also as a backing layer declared raw by its parent
    fs::write(
        dir.join("top.qcow2"),
        qcow2_header(Some("guest-written.img"), Some("raw")),
    )
    .unwrap();
    let c = chain(&dir.join("top.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(paths(&c), vec![fake]);
}

#[test]
fn loops_are_detected() {
    let d = tmp();
    let dir = d.path();
    qemu_img(dir, "create -q -f qcow2 -u -b b.qcow2 -F qcow2 a.qcow2 1M");
    qemu_img(dir, "create -q -f qcow2 -u -b a.qcow2 -F qcow2 b.qcow2 1M");
    let e = chain(&dir.join("a.qcow2"), Some("qcow2")).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ImageError::Loop { ref chain } if chain.len() == 3),
        "{msg}"
    );
    assert!(
        msg.contains("a.qcow2 -> ") && msg.contains("b.qcow2"),
        "{msg}"
    );
    // a loop through a symlink (different name, same file)
    qemu_img(
        dir,
        "create -q -f qcow2 -u -b link.qcow2 -F qcow2 self.qcow2 1M",
    );
    symlink(dir.join("self.qcow2"), dir.join("link.qcow2")).unwrap();
    let e = chain(&dir.join("self.qcow2"), Some("qcow2")).unwrap_err();
    assert!(matches!(e, ImageError::Loop { .. }), "{e}");
}

#[test]
fn deep_chain_stops_at_the_limit() {
    let d = tmp();
    let top = crafted_chain(d.path(), 1000);
    let t = Instant::now();
    let e = chain(&top, Some("qcow2")).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, ImageError::TooDeep { .. }), "{e}");
    assert!(e
        .to_string()
        .contains(&format!("deeper than {MAX_CHAIN_DEPTH}")));
    // Bounded by the depth limit, not by a clock: report, don't assert.
    println!("1000-deep chain refused after {took:?}");
    // exactly at the limit is fine: 201 images = top + 200 layers
    let d = tmp();
    let top = crafted_chain(d.path(), MAX_CHAIN_DEPTH + 1);
    assert_eq!(chain(&top, Some("qcow2")).unwrap().len(), MAX_CHAIN_DEPTH);
}

#[test]
fn chain_of_150_layers() {
    let d = tmp();
    let top = crafted_chain(d.path(), 151);
    chain(&top, Some("qcow2")).unwrap(); // warm the page cache
    let runs = 20;
    let t = Instant::now();
    for _ in 0..runs {
        assert_eq!(chain(&top, Some("qcow2")).unwrap().len(), 150);
    }
    let each = t.elapsed() / runs;
    // A figure, not an assertion: timing belongs in benchmarks.
    println!("chain() over 150 qcow2 layers: {each:?} per call");
}

#[test]
fn backing_file_etc_shadow_is_refused_by_the_policy() {
    let d = tmp();
    let dir = d.path();
    qemu_img(
        dir,
        "create -q -f qcow2 -u -b /etc/shadow -F raw top.qcow2 1M",
    );
    let layers = chain(&dir.join("top.qcow2"), Some("qcow2")).unwrap();
    assert_eq!(paths(&layers), vec![PathBuf::from("/etc/shadow")]);
    let xml = format!(
        "<domain type='kvm'><name>evil</name><uuid>0b0c5a8e-6f2d-4c61-9a35-1c2a3b4d5e6f</uuid>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        dir.join("top.qcow2").display()
    );
    let guest = parse(
        &xml,
        &ReadOptions {
            probe_chains: true,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    let e = derive(&guest).unwrap_err();
    match &e {
        RuleError::Restricted { origin, path, .. } => {
            assert_eq!(origin, "disk vda, backing layer 1");
            assert!(path.contains("/etc/shadow"), "{path}");
        }
        other => panic!("expected a restricted-path refusal, got {other}"),
    }
}

#[test]
fn hostile_headers_give_clear_errors() {
    let d = tmp();
    let dir = d.path();
    // truncated: a qcow2 header cut short
    let full = qcow2_header(Some("base.qcow2"), Some("qcow2"));
    fs::write(dir.join("cut.qcow2"), &full[..50]).unwrap();
    let e = chain(&dir.join("cut.qcow2"), Some("qcow2")).unwrap_err();
    assert!(matches!(e, ImageError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("cut.qcow2"), "{e}");
    // the backing name runs past the end of the file
    fs::write(dir.join("cut2.qcow2"), &full[..full.len() - 2]).unwrap();
    let e = chain(&dir.join("cut2.qcow2"), Some("qcow2")).unwrap_err();
    assert!(matches!(e, ImageError::Truncated { .. }), "{e}");
    // backing_file_size over the cap
    let mut big = full.clone();
    big[16..20].copy_from_slice(&60000u32.to_be_bytes());
    fs::write(dir.join("big.qcow2"), &big).unwrap();
    let e = chain(&dir.join("big.qcow2"), Some("qcow2")).unwrap_err();
    assert!(e.to_string().contains("over the limit of 1023"), "{e}");
    // a header that needs more than the read cap (backing name at 1 MiB in 2 MiB clusters)
    let mut far = full.clone();
    far[20..24].copy_from_slice(&21u32.to_be_bytes());
    far[8..16].copy_from_slice(&(1u64 << 20).to_be_bytes());
    far.resize(2 << 20, 0);
    fs::write(dir.join("far.qcow2"), &far).unwrap();
    let e = chain(&dir.join("far.qcow2"), Some("qcow2")).unwrap_err();
    assert!(matches!(e, ImageError::HeaderTooLarge { .. }), "{e}");
    // declared qcow2, but it is not
    fs::write(dir.join("plain.qcow2"), vec![0u8; 4096]).unwrap();
    let e = chain(&dir.join("plain.qcow2"), Some("qcow2")).unwrap_err();
    assert!(e.to_string().contains("not qcow2"), "{e}");
    // a backing file that is a FIFO is not opened for reading (no hang)
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    fs::write(
        dir.join("tofifo.qcow2"),
        qcow2_header(Some("fifo"), Some("qcow2")),
    )
    .unwrap();
    let e = chain(&dir.join("tofifo.qcow2"), Some("qcow2")).unwrap_err();
    assert!(
        matches!(e, ImageError::NotAFile { kind: "FIFO", .. }),
        "{e}"
    );
    // a missing backing file names the file
    fs::write(
        dir.join("tomissing.qcow2"),
        qcow2_header(Some("nope.qcow2"), Some("qcow2")),
    )
    .unwrap();
    let e = chain(&dir.join("tomissing.qcow2"), Some("qcow2")).unwrap_err();
    assert!(e.to_string().contains("nope.qcow2"), "{e}");
    // an unknown recorded format is refused
    fs::write(
        dir.join("odd.qcow2"),
        qcow2_header(Some("x"), Some("weird")),
    )
    .unwrap();
    let e = chain(&dir.join("odd.qcow2"), Some("qcow2")).unwrap_err();
    assert!(matches!(e, ImageError::UnknownFormat { .. }), "{e}");
}

#[test]
fn network_backing_ends_the_chain_with_a_reason() {
    let d = tmp();
    let dir = d.path();
    qemu_img(
        dir,
        "create -q -f qcow2 -u -b nbd://localhost:10809/x -F raw top.qcow2 1M",
    );
    let c = read_chain(&dir.join("top.qcow2"), Some("qcow2")).unwrap();
    assert!(c.layers.is_empty());
    assert_eq!(c.not_local.len(), 1);
    assert_eq!(c.not_local[0].depth, 1);
    assert!(c.not_local[0].reason.contains("nbd"), "{:?}", c.not_local);
}

#[test]
fn parse_header_is_total_on_real_headers() {
    // every prefix and single-byte corruption of a real header parses or errors, never panics
    let d = tmp();
    let dir = d.path();
    qemu_img(
        dir,
        "create -q -f qcow2 -u -b base.qcow2 -F qcow2 -o data_file=d.raw t.qcow2 1M",
    );
    let img = fs::read(dir.join("t.qcow2")).unwrap();
    let head = &img[..1024];
    let h = parse_header(ImageFormat::Qcow2, head).unwrap();
    assert_eq!(h.backing.unwrap().name, b"base.qcow2");
    assert_eq!(h.data_file.as_deref(), Some(&b"d.raw"[..]));
    for n in 0..head.len() {
        let _ = parse_header(ImageFormat::Qcow2, &head[..n]);
    }
    let mut m = head.to_vec();
    for i in 0..m.len() {
        for v in [0u8, 0x7f, 0xff] {
            let old = m[i];
            m[i] = v;
            for f in [
                ImageFormat::Qcow2,
                ImageFormat::Qcow,
                ImageFormat::Qed,
                ImageFormat::Vmdk,
            ] {
                let _ = parse_header(f, &m);
            }
            m[i] = old;
        }
    }
}
