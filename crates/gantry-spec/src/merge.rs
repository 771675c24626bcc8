//! The `__base__` merge rules of seed 004, on spanned JSON objects.
//!
//! Every node group inherits `__base__`, key by key:
//! - both values are lists: the lists are appended, base items first;
//! - both values are objects: merged one level deep, a child key replacing the
//!   base key's whole value (nested objects are not merged further);
//! - anything else (including a type mismatch): the child's value wins.
//!
//! Keys only in the base are inherited as they are. Spans are kept, so an
//! error in an inherited value still points into `__base__`.

use crate::json::{Json, JsonKind, Member};

/// Merges a group's members over the base's. Order: base keys first (in base
/// order), then keys only the group has.
pub fn merge_group(base: &[Member], group: &[Member]) -> Vec<Member> {
    let mut merged: Vec<Member> = base.to_vec();
    for child in group {
        match merged.iter_mut().find(|m| m.key == child.key) {
            Some(existing) => {
                existing.value = merge_value(&existing.value, &child.value);
                existing.key_span = child.key_span;
            }
            None => merged.push(child.clone()),
        }
    }
    merged
}

fn merge_value(base: &Json, child: &Json) -> Json {
    match (&base.kind, &child.kind) {
        (JsonKind::Array(b), JsonKind::Array(c)) => {
            Json { span: child.span, kind: JsonKind::Array(b.iter().chain(c).cloned().collect()) }
        }
        (JsonKind::Object(b), JsonKind::Object(c)) => {
            // One level only: a child key replaces the base key's whole value.
            let mut members = b.clone();
            for m in c {
                match members.iter_mut().find(|e| e.key == m.key) {
                    Some(e) => *e = m.clone(),
                    None => members.push(m.clone()),
                }
            }
            Json { span: child.span, kind: JsonKind::Object(members) }
        }
        _ => child.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::diagnostic::SourceMap;

    fn parse_obj(v: &Value) -> Vec<Member> {
        let mut map = SourceMap::default();
        let text = v.to_string();
        let file = map.add("t.json", text.clone());
        let json = crate::json::parse(file, &text).expect("valid json");
        json.as_object().expect("object").to_vec()
    }

    fn merged(base: &Value, group: &Value) -> Value {
        let m = merge_group(&parse_obj(base), &parse_obj(group));
        Json { span: crate::diagnostic::Span { file: m_file(), start: 0, end: 0 }, kind: JsonKind::Object(m) }
            .to_value()
    }

    fn m_file() -> crate::diagnostic::FileId {
        SourceMap::default().add("x", "")
    }

    #[test]
    fn seed_example() {
        let base = json!({
            "autoscale": false,
            "instance_type": "m1.large",
            "security_groups": ["external", "internal"],
            "default_attributes": {"environment": "production", "key": "value"},
            "run_list": ["recipe[a]"],
        });
        let group = json!({
            "autoscale": {"timeout": 120, "node_min": 2, "node_max": 2},
            "instance_type": "m3.xlarge",
            "security_groups": ["bee"],
            "default_attributes": {"other_key": "value"},
            "run_list": ["recipe[b]"],
        });
        assert_eq!(
            merged(&base, &group),
            json!({
                "autoscale": {"timeout": 120, "node_min": 2, "node_max": 2},
                "instance_type": "m3.xlarge",
                "security_groups": ["external", "internal", "bee"],
                "default_attributes": {"environment": "production", "key": "value", "other_key": "value"},
                "run_list": ["recipe[a]", "recipe[b]"],
            })
        );
    }

    #[test]
    fn nested_objects_are_replaced_not_merged() {
        let base = json!({"default_attributes": {"db": {"host": "a", "port": 1}, "x": 1}});
        let group = json!({"default_attributes": {"db": {"host": "b"}}});
        assert_eq!(merged(&base, &group), json!({"default_attributes": {"db": {"host": "b"}, "x": 1}}));
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,4}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-e]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-f]", value(), 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn merge_rules_hold(base in object(), group in object()) {
            let out = merged(&base, &group);
            let (b, g, o) = (base.as_object().unwrap(), group.as_object().unwrap(), out.as_object().unwrap());
            // Keys: exactly the union.
            let mut keys: Vec<&String> = b.keys().chain(g.keys()).collect();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(o.keys().collect::<Vec<_>>(), keys);
            for (k, v) in o {
                match (b.get(k), g.get(k)) {
                    (Some(bv), None) => prop_assert_eq!(v, bv),
                    (None, Some(gv)) => prop_assert_eq!(v, gv),
                    (Some(Value::Array(bl)), Some(Value::Array(gl))) => {
                        let expect: Vec<Value> = bl.iter().chain(gl).cloned().collect();
                        prop_assert_eq!(v, &Value::Array(expect));
                    }
                    (Some(Value::Object(bo)), Some(Value::Object(go))) => {
                        let vo = v.as_object().unwrap();
                        for (ik, iv) in vo {
                            // Child wins whole values at level one; base fills the rest.
                            prop_assert_eq!(Some(iv), go.get(ik).or_else(|| bo.get(ik)));
                        }
                        prop_assert_eq!(vo.len(), bo.keys().chain(go.keys()).collect::<std::collections::BTreeSet<_>>().len());
                    }
                    (Some(_), Some(gv)) => prop_assert_eq!(v, gv),
                    (None, None) => unreachable!("key from nowhere"),
                }
            }
        }

        #[test]
        fn empty_base_is_identity(group in object()) {
            prop_assert_eq!(merged(&json!({}), &group), group);
        }

        #[test]
        fn empty_group_inherits_base(base in object()) {
            prop_assert_eq!(merged(&base, &json!({})), base);
        }
    }
}
