//! The built-in detections, compiled to components by the build script
//! and embedded, so the binary needs no plugin files next to it.

/// Names usable as `builtin = "..."` in pipeline.toml.
pub const NAMES: &[&str] = &[
    "shell",
    "package-manager",
    "drift-binary",
    "write-filter",
    "file-drift",
    "exec-bit",
    "io-uring",
];

macro_rules! guest {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/guests/", $file))
    };
}

/// The component bytes of a built-in plugin.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "shell" => guest!("driftwatch_plugin_shell.wasm"),
        "package-manager" => guest!("driftwatch_plugin_package_manager.wasm"),
        "drift-binary" => guest!("driftwatch_plugin_drift_binary.wasm"),
        "write-filter" => guest!("driftwatch_plugin_write_filter.wasm"),
        "file-drift" => guest!("driftwatch_plugin_file_drift.wasm"),
        "exec-bit" => guest!("driftwatch_plugin_exec_bit.wasm"),
        "io-uring" => guest!("driftwatch_plugin_io_uring.wasm"),
        _ => return None,
    })
}

/// Where the build put every guest component (built-ins, the example and the
/// test plugins), for tools and tests that load them by path.
pub const GUEST_DIR: &str = env!("DRIFTWATCH_GUEST_DIR");

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_has_bytes() {
        for n in super::NAMES {
            let b = super::bytes(n).unwrap();
            assert!(b.starts_with(b"\0asm"), "{n}");
        }
        assert!(super::bytes("nope").is_none());
    }
}
