//! The plugins shipped inside the binary (compiled from `plugins/*` by build.rs).

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

use patchbay_policy::signing::TrustedPublisher;
use patchbay_runtime::package::Package;

/// Every bundled plugin as a signed package.
pub fn packages() -> impl Iterator<Item = Package> {
    BUNDLED.iter().map(|(manifest, wasm, signature)| Package {
        manifest_text: (*manifest).to_owned(),
        wasm: wasm.to_vec(),
        signature: Some((*signature).to_owned()),
    })
}

/// The publisher of the bundled packages, with this build's key: trusted
/// by this binary whatever operator policy says, and by no other.
pub fn publisher() -> TrustedPublisher {
    TrustedPublisher {
        name: PUBLISHER.to_owned(),
        key: PUBLISHER_KEY
            .parse()
            .expect("build.rs writes a valid public key"),
    }
}
