//! Locates the `relay-server` and `relay` binaries. A separate test crate gets
//! no `CARGO_BIN_EXE_*`, so we look next to the test executable's `deps/`
//! directory (target/<profile>/), which is where `cargo build --workspace` puts them.

use std::path::PathBuf;

fn find(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut dir = exe
        .parent()
        .expect("the test binary lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "binary `{name}` not found at {}: build the workspace first \
         (`cargo build --workspace && cargo nextest run --workspace`)",
        path.display()
    );
    path
}

/// Path of the built `relay-server` binary; panics with a hint if it was not built.
pub fn relay_server() -> PathBuf {
    find("relay-server")
}

/// Path of the built `relay` client binary; panics with a hint if it was not built.
pub fn relay_client() -> PathBuf {
    find("relay")
}
