//! Rendering benchmarks: domain XML to the finished profile text (parse,
//! resolve and vet every path, render the templates), for a typical guest
//! and for a guest with 500 disks. No parser compile, no file writes.
//!
//! `cargo bench --bench render`. The whole-process comparison with
//! virt-aa-helper is `scripts/bench-vs-reference.sh`.

use criterion::{criterion_group, criterion_main, Criterion};

use aa_virt::libvirt::{self, profile, ReadOptions};
use aa_virt::policy::Templates;

/// A domain with `n` file disks, each on a two-layer XML backing chain.
pub fn many_disks(n: usize) -> String {
    let mut d = String::new();
    for i in 0..n {
        d.push_str(&format!(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='/var/lib/libvirt/images/bench/disk{i}.qcow2'/>\
             <backingStore type='file'><format type='qcow2'/>\
             <source file='/var/lib/libvirt/images/bench/base{i}.qcow2'/><backingStore/></backingStore>\
             <target dev='vd{i}' bus='virtio'/></disk>"
        ));
    }
    format!(
        "<domain type='kvm'><name>bench-{n}</name><uuid>00000000-0000-4000-8000-{n:012}</uuid>\
         <memory>1048576</memory><os><type arch='x86_64'>hvm</type></os>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{d}</devices></domain>"
    )
}

fn bench(c: &mut Criterion) {
    let typical = include_str!("../examples/web-server.xml");
    let big = many_disks(500);
    let templates = Templates::load(None).expect("templates");
    let opts = ReadOptions {
        probe_chains: false,
        ..ReadOptions::default()
    };
    for (name, xml) in [("typical", typical), ("500 disks", big.as_str())] {
        c.bench_function(&format!("render {name}"), |b| {
            b.iter(|| {
                let g = libvirt::parse(xml, &opts).expect("parse");
                profile::render(&g, &templates, false).expect("render")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
