//! What aa-virt's rules say: golden profiles, escaping and hostile input
//! against the parser's DFA, least privilege, image chains, the
//! fuzz corpus, and the differential test against Debian's virt-aa-helper.

#[path = "../common/mod.rs"]
mod common;

mod abi_releases;
mod differential;
mod escaping;
mod explain_dfa;
mod fuzz_corpus;
mod golden;
mod hostile;
mod image_chains;
mod least_privilege;
