//! A component of another world is refused at install.

use patchbay::runtime::error::LoadError;
use patchbay::runtime::package::PackageError;
use patchbay_tests::{Harness, plugins::WRONG_EXPORT};

#[tokio::test]
async fn a_component_without_the_operations_export_is_refused() {
    let harness = Harness::new();
    let err = harness
        .services
        .catalog
        .install(WRONG_EXPORT.package())
        .await
        .expect_err("must be refused");
    assert!(
        matches!(err, PackageError::Component(LoadError::Exports(_))),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("patchbay:connector/operations"),
        "{err}"
    );
}
