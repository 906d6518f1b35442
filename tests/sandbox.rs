//! Golden tests: recorded events through the real default pipeline (the
//! built-in plugins as WASM components in wasmtime), checked line by line.

mod support;

#[test]
fn placeholder_until_goldens_land() {
    let out = support::bin().arg("--help").output().unwrap();
    assert!(out.status.success());
}
