//! Shared set-up for the host's unit tests.

use crate::api::AppState;
use crate::services::Services;

/// The operator token `app_state` accepts.
pub(crate) const OPERATOR_TOKEN: &str = "pbo_test-operator-token";

/// Real services on a throw-away data directory, removed when the returned
/// guard is dropped (keep it for as long as the state is used).
pub(crate) async fn app_state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = Services::open(dir.path(), Default::default()).expect("services");
    (services.app_state(OPERATOR_TOKEN), dir)
}
