//! `cfg(linux_kernel)`, as the library's `build.rs` sets it: here, whether `serve` is
//! built (it reads its clients' credentials with `SO_PEERCRED` and serves on
//! abstract sockets, both Linux's). Off on other systems, and on Linux when built
//! with `--cfg portlease_other_unix`, so that the command of macOS and the BSDs
//! builds and runs its tests here.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(linux_kernel)");
    println!("cargo::rustc-check-cfg=cfg(portlease_other_unix)");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let forced_other = std::env::var_os("CARGO_CFG_PORTLEASE_OTHER_UNIX").is_some();
    if linux && !forced_other {
        println!("cargo::rustc-cfg=linux_kernel");
    }
}
