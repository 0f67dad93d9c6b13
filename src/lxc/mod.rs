//! LXC containers: liblxc access.

pub mod sys;
