//! Builds the LTTng-UST tracepoint provider of the `vs_lttng` bench
//! (`lttng/ringbuf_tp.{h,c}`) when liblttng-ust is installed, and sets
//! `cfg(has_lttng_ust)` then. Without it (or with `RINGBUF_NO_LTTNG=1`) nothing is
//! built and the bench's LTTng rows print that they were skipped.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_lttng_ust)");
    println!("cargo::rerun-if-changed=lttng/ringbuf_tp.h");
    println!("cargo::rerun-if-changed=lttng/ringbuf_tp.c");
    println!("cargo::rerun-if-env-changed=RINGBUF_NO_LTTNG");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var_os("RINGBUF_NO_LTTNG").is_some_and(|v| v != "0") {
        return;
    }
    let Some(cflags) = pkg_config(&["--cflags", "lttng-ust"]) else {
        return;
    };
    let Some(libs) = pkg_config(&["--libs", "lttng-ust"]) else {
        return;
    };
    let mut build = cc::Build::new();
    build
        .file("lttng/ringbuf_tp.c")
        .include("lttng")
        .opt_level(2);
    for flag in cflags.split_whitespace() {
        match flag.strip_prefix("-I") {
            Some(dir) => build.include(dir),
            None => build.flag(flag),
        };
    }
    // A missing header (liblttng-ust without its -dev files): skip, don't fail.
    if let Err(e) = build.try_compile("ringbuf_lttng_tp") {
        println!("cargo::warning=LTTng-UST provider not built ({e}): vs_lttng skips LTTng");
        return;
    }
    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo::rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo::rustc-link-lib=dylib={lib}");
        }
    }
    // The provider's tracepoints are found through `__start___tracepoints_ptrs` /
    // `__stop___tracepoints_ptrs`, weak references that lld (rustc's linker on
    // x86_64 Linux) does not count as uses under --gc-sections: the section would be
    // dropped and the tracepoint never enabled. Keep sections so referenced.
    println!("cargo::rustc-link-arg-benches=-Wl,-z,nostart-stop-gc");
    println!("cargo::rustc-cfg=has_lttng_ust");
}

/// `pkg-config ARGS`' output, if pkg-config and the package exist.
fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
