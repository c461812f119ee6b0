//! What a component imports and exports, read with a parser before anything
//! is compiled: a refused component costs a parse (milliseconds), never a
//! compile (up to tens of seconds of CPU for a large one).

use crate::error::LoadError;
use wasmparser::{Parser, Payload};

/// Interfaces a plugin may import (any 0.x patch version the linker accepts):
/// the connector world, what Rust's std needs on `wasm32-wasip2`, and the
/// filesystem and sockets interfaces Python's and JavaScript's runtimes
/// import: linked with nothing behind them, so every call fails.
const ALLOWED_IMPORTS: &[&str] = &[
    "patchbay:connector/types",
    "patchbay:connector/kv",
    "patchbay:connector/signing",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:config/store",
    "wasi:logging/logging",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The interface every plugin exports (any 0.1.x version).
const OPERATIONS_EXPORT: &str = "patchbay:connector/operations@0.1.";

/// Whether a component may import `name` (`package/interface@version`).
pub fn allows_import(name: &str) -> bool {
    let interface = name.split('@').next().unwrap_or(name);
    ALLOWED_IMPORTS.contains(&interface)
}

/// Refuse `wasm` unless it is a component whose top-level imports are all
/// allowed and which exports the operations interface.
pub fn check(wasm: &[u8]) -> Result<(), LoadError> {
    if !Parser::is_component(wasm) {
        return Err(if Parser::is_core_wasm(wasm) {
            LoadError::CoreModule
        } else {
            LoadError::NotWasm
        });
    }
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Invalid(e.to_string());
    // Nested modules and components come inline, each closed by its own `End`;
    // only the outer component's imports reach the host.
    let mut depth = 0usize;
    let mut exports_operations = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let name = import.map_err(invalid)?.name.name;
                    if !allows_import(name) {
                        return Err(LoadError::ForbiddenImport(name.to_owned()));
                    }
                }
            }
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    let name = export.map_err(invalid)?.name.name;
                    exports_operations |= name.starts_with(OPERATIONS_EXPORT);
                }
            }
            _ => {}
        }
    }
    if !exports_operations {
        return Err(LoadError::Exports(
            "the component exports no `patchbay:connector/operations@0.1.x` interface".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_the_connector_world_and_what_std_needs() {
        let cases = [
            ("patchbay:connector/kv@0.1.0", true),
            ("wasi:http/outgoing-handler@0.2.6", true),
            ("wasi:cli/stderr@0.2.0", true),
            ("wasi:io/streams", true),
            ("wasi:filesystem/types@0.2.0", true),
            ("wasi:filesystem/preopens@0.2.0", true),
            ("wasi:sockets/tcp@0.2.0", true),
            ("wasi:sockets/ip-name-lookup@0.2.3", true),
            ("wasi:filesystem/other@0.2.0", false),
            ("wasi:sockets/raw@0.2.0", false),
            ("wasi:http/incoming-handler@0.2.0", false),
            ("wasi:cli/environmentx@0.2.0", false),
            ("patchbay:connector/kv-admin@0.1.0", false),
            ("", false),
        ];
        for (name, allowed) in cases {
            assert_eq!(allows_import(name), allowed, "{name}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_component_before_compiling() {
        let core_module = b"\0asm\x01\0\0\0";
        let empty_component = b"\0asm\x0d\0\x01\0";
        let cases: [(&[u8], &str); 4] = [
            (b"", "not WebAssembly"),
            (b"PK\x03\x04", "not WebAssembly"),
            (core_module, "core WebAssembly module"),
            (empty_component, "exports no `patchbay:connector/operations"),
        ];
        for (wasm, expected) in cases {
            let error = check(wasm).expect_err("refused").to_string();
            assert!(error.contains(expected), "{wasm:?}: {error}");
        }
    }
}
