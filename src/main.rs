//! The `aa-virt` binary: the command line ([`cli`]) over the `aa_virt`
//! library. No library module imports anything from here.

#![warn(missing_docs)]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
