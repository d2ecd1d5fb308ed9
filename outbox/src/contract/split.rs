//! One event's payload schema out of its Rust type's: the whole type's for a struct,
//! the content of one variant of an enum (serde writes a variant `{"Name": content}`,
//! and the outbox stores the content alone), and the definitions a schema refers to.

use serde_json::{Map, Value};

/// The schema of the payload at `path` (variant indices among those serde serializes,
/// outermost first) in the schema `whole` of a Rust type, its references resolved
/// against `definitions` under `prefix` (e.g. `#/$defs/`) where a step needs to see
/// inside one.
///
/// # Errors
/// What was not as serde's externally tagged representation writes it.
pub(super) fn payload_schema(
    whole: &Value,
    path: &[u32],
    definitions: &Map<String, Value>,
    prefix: &str,
) -> Result<Value, String> {
    let mut schema = resolve(whole, definitions, prefix)?;
    for &index in path {
        let entries = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array)
            .ok_or("the enum's schema has no `oneOf` of its variants")?;
        let entry = entries.get(index as usize).ok_or_else(|| {
            format!(
                "the enum's schema lists {} variants, and the event is in the one numbered {index}",
                entries.len()
            )
        })?;
        let content = only_property(entry).ok_or_else(|| {
            format!(
                "variant {index} of the enum's schema is not an object of one property (serde's externally tagged variant)"
            )
        })?;
        let description = entry.get("description").cloned();
        schema = resolve(content, definitions, prefix)?;
        // The variant's doc comment, which schemars puts on the tagged entry.
        if let (Some(description), Some(object)) = (description, schema.as_object_mut()) {
            object.entry("description").or_insert(description);
        }
    }
    Ok(schema)
}

/// The content of `{"type": "object", "properties": {"Name": content}, "required":
/// ["Name"]}`.
fn only_property(entry: &Value) -> Option<&Value> {
    let properties = entry.get("properties")?.as_object()?;
    let required = entry.get("required")?.as_array()?;
    match (
        properties.iter().next(),
        properties.len(),
        required.as_slice(),
    ) {
        (Some((name, content)), 1, [only]) if only.as_str() == Some(name) => Some(content),
        _ => None,
    }
}

/// `schema`, or the definition it is only a reference to.
fn resolve(
    schema: &Value,
    definitions: &Map<String, Value>,
    prefix: &str,
) -> Result<Value, String> {
    let Some(reference) = only_reference(schema) else {
        return Ok(schema.clone());
    };
    definition_name(reference, prefix)
        .and_then(|name| definitions.get(&name))
        .cloned()
        .ok_or_else(|| format!("the reference {reference:?} names no definition"))
}

/// The target of a schema that is a `$ref` and nothing else.
fn only_reference(schema: &Value) -> Option<&str> {
    let object = schema.as_object()?;
    match (object.len(), object.get("$ref")) {
        (1, Some(Value::String(reference))) => Some(reference),
        _ => None,
    }
}

/// The definition a reference under `prefix` names (a JSON pointer's token, unescaped).
fn definition_name(reference: &str, prefix: &str) -> Option<String> {
    let token = reference.strip_prefix(prefix)?;
    (!token.contains('/')).then(|| token.replace("~1", "/").replace("~0", "~"))
}

/// The definitions `schema` refers to, directly or through other definitions.
pub(super) fn reachable(
    schema: &Value,
    definitions: &Map<String, Value>,
    prefix: &str,
) -> Map<String, Value> {
    let mut found = Map::new();
    let mut pending = vec![schema];
    while let Some(next) = pending.pop() {
        let mut references = Vec::new();
        references_in(next, &mut references);
        for name in references
            .into_iter()
            .filter_map(|reference| definition_name(reference, prefix))
        {
            if let (false, Some(definition)) = (found.contains_key(&name), definitions.get(&name)) {
                found.insert(name.clone(), definition.clone());
                pending.push(definition);
            }
        }
    }
    found
}

/// Every `$ref` in `value`, at any depth.
fn references_in<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => out.push(reference),
                    _ => references_in(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references_in(item, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definitions() -> Map<String, Value> {
        let defs = json!({
            "Paid": { "type": "object", "properties": { "line": { "$ref": "#/$defs/Line" } } },
            "Line": { "type": "object", "properties": { "sku": { "type": "string" } } },
            "Unused": { "type": "string" },
            "Events": {
                "oneOf": [
                    {
                        "type": "object",
                        "description": "An order was placed.",
                        "properties": { "placed": { "type": "object", "properties": { "id": { "type": "string" } } } },
                        "required": ["placed"],
                        "additionalProperties": false,
                    },
                    {
                        "type": "object",
                        "properties": { "paid": { "$ref": "#/$defs/Paid" } },
                        "required": ["paid"],
                        "additionalProperties": false,
                    },
                ],
            },
        });
        match defs {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_variant_is_its_content_and_a_reference_is_followed() {
        let defs = definitions();
        let whole = json!({ "$ref": "#/$defs/Events" });
        let placed = payload_schema(&whole, &[0], &defs, "#/$defs/").expect("variant 0");
        assert_eq!(placed["properties"]["id"]["type"], "string");
        assert_eq!(
            placed["description"], "An order was placed.",
            "the variant's doc"
        );
        let paid = payload_schema(&whole, &[1], &defs, "#/$defs/").expect("variant 1");
        assert_eq!(paid, defs["Paid"]);
        let all = payload_schema(&whole, &[], &defs, "#/$defs/").expect("the whole type");
        assert_eq!(all, defs["Events"]);
    }

    #[test]
    fn what_is_not_a_tagged_variant_is_named() {
        let defs = definitions();
        let whole = json!({ "$ref": "#/$defs/Events" });
        let error = payload_schema(&whole, &[2], &defs, "#/$defs/").expect_err("no variant 2");
        assert!(error.contains("lists 2 variants"), "{error}");
        let line = json!({ "$ref": "#/$defs/Line" });
        let error = payload_schema(&line, &[0], &defs, "#/$defs/").expect_err("not an enum");
        assert!(error.contains("no `oneOf`"), "{error}");
        let missing = json!({ "$ref": "#/$defs/Gone" });
        let error =
            payload_schema(&missing, &[], &defs, "#/$defs/").expect_err("no such definition");
        assert!(error.contains("Gone"), "{error}");
    }

    #[test]
    fn only_the_definitions_a_schema_reaches_are_kept() {
        let defs = definitions();
        let paid = json!({ "$ref": "#/$defs/Paid" });
        let kept = reachable(&paid, &defs, "#/$defs/");
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["Line", "Paid"]);
    }
}
