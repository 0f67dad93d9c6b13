fn main() {
    std::process::exit(aa_virt::cli::main());
}
