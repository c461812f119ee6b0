//! Shared set-up for the host's unit tests.

use crate::api::AppState;
use crate::egress::Egress;
use crate::egress::resolve::SystemLookup;
use crate::package::catalog::Catalog;
use crate::package::store::PluginStore;
use crate::policy::limits::OperatorLimits;
use crate::runtime::Runtime;
use crate::storage::memory::MemoryKv;
use std::sync::Arc;

pub(crate) async fn app_state() -> AppState {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let credentials = Arc::new(crate::credentials::Credentials::new(
        Arc::new(crate::storage::memory::MemorySecrets::default()),
        crate::credentials::seal::MasterKey::generate()
            .expect("key")
            .0,
        crate::clock::system(),
    ));
    let db = crate::storage::sled_store::SledDb::open(&dir.join("db")).expect("db");
    let audit = Arc::new(
        crate::audit::AuditLog::start(
            Arc::new(db.audit().expect("audit tree")),
            crate::clock::system(),
            Default::default(),
        )
        .expect("audit writer"),
    );
    let egress = Egress::new(
        Default::default(),
        Arc::new(SystemLookup),
        Default::default(),
        credentials,
        audit,
    )
    .expect("egress");
    let runtime = Runtime::new(
        OperatorLimits::default(),
        Arc::new(egress),
        Arc::new(MemoryKv::default()),
        crate::clock::system(),
        None,
    )
    .expect("runtime");
    let store = PluginStore::open(dir.join("plugins")).expect("store");
    AppState {
        catalog: Arc::new(Catalog::new(store, Arc::new(runtime))),
    }
}
