//! `aa-virt-helper`: aa-virt's drop-in for libvirt's virt-aa-helper, alone.
//!
//! The same code as `aa-virt helper` (and aa-virt run as `virt-aa-helper`),
//! in a binary that links none of aa-virt's other front ends: no libvirt or
//! LXC client libraries to load, so each of the runs libvirt makes per
//! hotplugged file starts in a few milliseconds.

fn main() {
    std::process::exit(aa_virt::libvirt::helper::main(
        "virt-aa-helper",
        std::env::args_os().skip(1).collect(),
    ));
}
