//! aa-virt: sVirt-style AppArmor confinement for libvirt guests and LXC containers.
