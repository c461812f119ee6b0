//! In-memory stores, for unit tests only: one module per kind of state,
//! each meeting the same contract tests as its sled counterpart.

mod audit;
mod kv;
mod outbox;
mod secrets;
mod tenancy;

pub use audit::MemoryAudit;
pub use kv::MemoryKv;
pub use outbox::MemoryOutbox;
pub use secrets::MemorySecrets;
pub use tenancy::MemoryTenancy;

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_meets_the_audit_store_contract() {
        crate::audit::contract_tests::run_all(&super::MemoryAudit::default());
    }

    #[test]
    fn memory_store_meets_the_tenancy_store_contract() {
        crate::tenancy::contract_tests::run_all(&super::MemoryTenancy::default());
    }

    #[test]
    fn memory_store_meets_the_outbox_contract() {
        let outbox =
            crate::outbox::Outbox::new(std::sync::Arc::new(super::MemoryOutbox::default()));
        crate::outbox::contract_tests::run_all(&outbox);
    }

    #[test]
    fn memory_store_meets_the_kv_contract() {
        crate::contract_tests::run_all(&super::MemoryKv::default());
    }

    #[test]
    fn memory_store_meets_the_secret_store_contract() {
        crate::secrets::contract_tests::run_all(&super::MemorySecrets::default());
    }
}
