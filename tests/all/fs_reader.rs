//! A component that imports wasi:filesystem is refused at install.

use patchbay::package::PackageError;
use patchbay::runtime::error::LoadError;
use patchbay_tests::{Harness, plugins::FS_READER};

#[tokio::test]
async fn a_filesystem_import_is_refused_naming_the_import() {
    let harness = Harness::new();
    let err = harness
        .services
        .catalog
        .install(FS_READER.package())
        .await
        .expect_err("must be refused");
    match &err {
        PackageError::Component(LoadError::ForbiddenImport(name)) => {
            assert!(name.starts_with("wasi:filesystem/"), "{name}");
        }
        other => panic!("expected a forbidden import, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("outside the patchbay:connector world"),
        "{err}"
    );
    assert!(
        harness.services.catalog.list().expect("list").is_empty(),
        "nothing was installed"
    );
}
