//! A component that imports wasi:sockets is refused at install.

use patchbay::runtime::error::LoadError;
use patchbay::runtime::package::PackageError;
use patchbay_tests::{Harness, plugins::SOCKET_USER};

#[tokio::test]
async fn a_sockets_import_is_refused_naming_the_import() {
    let harness = Harness::new();
    let err = harness
        .services
        .catalog
        .install(SOCKET_USER.package())
        .await
        .expect_err("must be refused");
    match &err {
        PackageError::Component(LoadError::ForbiddenImport(name)) => {
            assert!(name.starts_with("wasi:sockets/"), "{name}");
        }
        other => panic!("expected a forbidden import, got {other:?}"),
    }
}
