//! The strict JSON-schema subset tool arguments are checked against.
//!
//! Supported keywords: `type` (object, string, integer, number, boolean, array, null),
//! `properties`, `required`, `additionalProperties` (boolean), `enum`, `minLength`,
//! `maxLength`, `minimum`, `maximum`, `items`, and the annotations `description`, `title`,
//! `default`. Any other keyword is refused when the schema is loaded, so a tool author never
//! believes a constraint is enforced when it is not.

use serde_json::{Map, Value};

const TYPES: [&str; 7] = ["object", "string", "integer", "number", "boolean", "array", "null"];
const KEYWORDS: [&str; 13] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "items",
    "description",
    "title",
    "default",
];

/// A schema that uses something this subset does not enforce, or is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema at {path}: {message}")]
pub struct SchemaError {
    /// Where in the schema, as a JSON pointer (`` for the root).
    pub path: String,
    pub message: String,
}

/// Arguments that do not match a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ArgsError {
    /// Where in the arguments, as a JSON pointer (`/replicas`; empty for the whole object).
    pub path: String,
    pub message: String,
}

fn schema_error(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: if path.is_empty() { "/".into() } else { path.into() },
        message: message.into(),
    }
}

/// Checks a tool's argument schema: an object schema using only supported keywords.
pub fn check_schema(schema: &Value) -> Result<(), SchemaError> {
    check_node(schema, "")?;
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(schema_error("", "the top-level schema must have \"type\": \"object\""));
    }
    Ok(())
}

fn non_negative_integer(value: &Value, path: &str, keyword: &str) -> Result<(), SchemaError> {
    match value.as_u64() {
        Some(_) => Ok(()),
        None => Err(schema_error(path, format!("{keyword} must be a non-negative integer"))),
    }
}

fn check_node(node: &Value, path: &str) -> Result<(), SchemaError> {
    let Some(map) = node.as_object() else {
        return Err(schema_error(path, "a schema must be a JSON object"));
    };
    for (keyword, value) in map {
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(schema_error(path, format!("unsupported schema keyword {keyword:?}")));
        }
        match keyword.as_str() {
            "type" => match value.as_str() {
                Some(t) if TYPES.contains(&t) => {}
                _ => {
                    return Err(schema_error(
                        path,
                        format!("type must be one of {}", TYPES.join(", ")),
                    ));
                }
            },
            "properties" => {
                let Some(properties) = value.as_object() else {
                    return Err(schema_error(path, "properties must be an object"));
                };
                for (name, property) in properties {
                    check_node(property, &format!("{path}/properties/{name}"))?;
                }
            }
            "required" => {
                let names = value.as_array().filter(|a| a.iter().all(Value::is_string));
                if names.is_none() {
                    return Err(schema_error(path, "required must be an array of strings"));
                }
            }
            "additionalProperties" if !value.is_boolean() => {
                return Err(schema_error(path, "additionalProperties must be true or false"));
            }
            "enum" if value.as_array().is_none_or(|a| a.is_empty()) => {
                return Err(schema_error(path, "enum must be a non-empty array"));
            }
            "minLength" | "maxLength" => non_negative_integer(value, path, keyword)?,
            "minimum" | "maximum" if !value.is_number() => {
                return Err(schema_error(path, format!("{keyword} must be a number")));
            }
            "items" => check_node(value, &format!("{path}/items"))?,
            _ => {}
        }
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, wanted: &str) -> bool {
    match wanted {
        // An integer is a number with no fractional part, however it was written.
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        other => type_name(value) == other,
    }
}

/// Checks `value` against a schema that passed [`check_schema`].
pub fn validate(schema: &Value, value: &Value) -> Result<(), ArgsError> {
    validate_node(schema, value, "")
}

fn args_error(path: &str, message: impl Into<String>) -> ArgsError {
    ArgsError { path: path.to_string(), message: message.into() }
}

fn validate_node(schema: &Value, value: &Value, path: &str) -> Result<(), ArgsError> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(wanted) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, wanted)
    {
        return Err(args_error(path, format!("expected {wanted}, got {}", type_name(value))));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(args_error(path, format!("must be one of {}", list.join(", "))));
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            return Err(args_error(path, format!("must be at least {min} characters")));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            return Err(args_error(path, format!("must be at most {max} characters")));
        }
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && number < min
        {
            return Err(args_error(path, format!("must be at least {min}")));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && number > max
        {
            return Err(args_error(path, format!("must be at most {max}")));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            validate_node(items, item, &format!("{path}/{index}"))?;
        }
    }
    if let Some(object) = value.as_object() {
        validate_object(schema, object, path)?;
    }
    Ok(())
}

fn validate_object(
    schema: &Map<String, Value>,
    object: &Map<String, Value>,
    path: &str,
) -> Result<(), ArgsError> {
    let empty = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = name.as_str()
            && !object.contains_key(name)
        {
            return Err(args_error(path, format!("missing required property {name:?}")));
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, value) in object {
        let child = format!("{path}/{name}");
        match properties.get(name) {
            Some(property) => validate_node(property, value, &child)?,
            None if closed => return Err(args_error(&child, "unknown property")),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "namespace": { "type": "string", "minLength": 1, "maxLength": 8 },
                "replicas": { "type": "integer", "minimum": 0, "maximum": 10 },
                "ratio": { "type": "number" },
                "mode": { "enum": ["fast", "safe"] },
                "dry_run": { "type": "boolean" },
                "labels": { "type": "array", "items": { "type": "string" } },
                "nothing": { "type": "null" }
            },
            "required": ["namespace"],
            "additionalProperties": false
        })
    }

    fn refused(value: Value) -> ArgsError {
        validate(&schema(), &value).unwrap_err()
    }

    #[test]
    fn a_schema_with_unsupported_or_malformed_keywords_is_refused() {
        check_schema(&schema()).unwrap();
        let err = check_schema(&json!({"type": "object", "properties": {"x": {"pattern": "a+"}}}))
            .unwrap_err();
        assert_eq!(err.path, "/properties/x");
        assert!(err.message.contains("\"pattern\""), "{err}");
        assert!(check_schema(&json!({"type": "string"})).is_err(), "top level must be an object");
        assert!(check_schema(&json!({"type": "object", "additionalProperties": {}})).is_err());
        assert!(check_schema(&json!({"type": "object", "required": [1]})).is_err());
        assert!(check_schema(&json!({"type": "tuple"})).is_err());
        assert!(check_schema(&json!({"type": "object", "enum": []})).is_err());
        assert!(
            check_schema(&json!({"type": "object", "properties": {"s": {"minLength": -1}}}))
                .is_err()
        );
        assert!(
            check_schema(&json!({"type": "object", "properties": {"n": {"maximum": "9"}}}))
                .is_err()
        );
        assert!(check_schema(&json!([])).is_err());
    }

    #[test]
    fn matching_arguments_pass() {
        let args = json!({
            "namespace": "prod", "replicas": 3, "ratio": 0.5, "mode": "safe",
            "dry_run": true, "labels": ["a", "b"], "nothing": null
        });
        validate(&schema(), &args).unwrap();
        validate(&schema(), &json!({"namespace": "p", "replicas": 2.0})).unwrap();
    }

    #[test]
    fn each_keyword_refuses_what_it_should() {
        assert_eq!(refused(json!({})).message, "missing required property \"namespace\"");
        let err = refused(json!({"namespace": "p", "nmespace": "x"}));
        assert_eq!((err.path.as_str(), err.message.as_str()), ("/nmespace", "unknown property"));
        let err = refused(json!({"namespace": 7}));
        assert_eq!(err.to_string(), "/namespace: expected string, got integer");
        assert_eq!(refused(json!({"namespace": ""})).path, "/namespace");
        assert!(refused(json!({"namespace": "ninechars"})).message.contains("at most 8"));
        assert!(refused(json!({"namespace": "p", "replicas": 1.5})).message.contains("integer"));
        assert!(refused(json!({"namespace": "p", "replicas": 11})).message.contains("at most 10"));
        assert!(refused(json!({"namespace": "p", "replicas": -1})).message.contains("at least 0"));
        assert!(refused(json!({"namespace": "p", "ratio": "x"})).message.contains("number"));
        assert!(refused(json!({"namespace": "p", "mode": "slow"})).message.contains("one of"));
        assert!(refused(json!({"namespace": "p", "dry_run": "yes"})).message.contains("boolean"));
        assert_eq!(refused(json!({"namespace": "p", "labels": ["a", 2]})).path, "/labels/1");
        assert!(refused(json!({"namespace": "p", "nothing": 0})).message.contains("null"));
        assert_eq!(refused(json!([1])).message, "expected object, got array");
    }

    #[test]
    fn open_objects_accept_unknown_properties() {
        let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        validate(&open, &json!({"a": "x", "b": 1})).unwrap();
        assert!(validate(&open, &json!({"a": 1})).is_err());
    }
}
