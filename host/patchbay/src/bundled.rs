//! The plugins shipped inside the binary (compiled from `plugins/*` by build.rs).

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

use patchbay_runtime::package::Package;

/// Every bundled plugin as a package.
pub fn packages() -> impl Iterator<Item = Package> {
    BUNDLED.iter().map(|(manifest, wasm)| Package {
        manifest_text: (*manifest).to_owned(),
        wasm: wasm.to_vec(),
    })
}
