//! What an agent declares about its tools: a capability manifest as JSON (+ its hash and each
//! tool's schema checked and used), an argument schema and a value to validate against it
//! (split at the first NUL byte; the router validates arguments against schemas agents send,
//! so `validate` runs whether or not `check_schema` accepts the schema), and the XEM's
//! `tool.yaml` / `workspaces.yaml` parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xerotier_fuzz::split_in_two;
use xerotier_proto::agents::CapabilityManifest;
use xerotier_proto::schema;
use xerotier_xem::catalog;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = serde_json::from_slice::<CapabilityManifest>(data) {
        let _ = manifest.hash();
        for tool in &manifest.tools {
            let _ = schema::check_schema(&tool.args_schema);
            let _ = schema::validate(&tool.args_schema, &Value::Object(Default::default()));
        }
    }

    let (schema_bytes, value_bytes) = split_in_two(data);
    if let Ok(schema_value) = serde_json::from_slice::<Value>(schema_bytes) {
        let checked = schema::check_schema(&schema_value).is_ok();
        if let Ok(value) = serde_json::from_slice::<Value>(value_bytes) {
            let result = schema::validate(&schema_value, &value);
            if checked && result.is_ok() {
                // A value accepted once is accepted again (validation is a pure function).
                assert!(schema::validate(&schema_value, &value).is_ok());
            }
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        // The tool's name decides the directory it must be in; take it from the text so the
        // name check can pass and the rest of the validation is reached. (Only from text the
        // catalog would parse at all: its flow-collection limit keeps the YAML scanner, which is
        // quadratic in the flow nesting depth, fast; this harness must not undo that.)
        let flow = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
        let name = (flow <= 512)
            .then(|| serde_norway::from_str::<Value>(text).ok())
            .flatten()
            .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        if let Ok(tool) = catalog::parse_tool_definition(text, &name) {
            assert_eq!(tool.name, name);
            assert!(schema::check_schema(&tool.args_schema).is_ok());
        }
        let _ = catalog::parse_workspaces(text);
    }
});
