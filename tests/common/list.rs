//! Helpers for the `list`/`status` tests: running the binary, the corpus,
//! and a small JSON Schema validator for `docs/list.schema.json`.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// Run `aa-virt ARGS` with `AA_VIRT_SYSROOT=sysroot`.
pub fn aa_virt(sysroot: &Path, args: &[&str]) -> Output {
    super::aa_virt()
        .args(args)
        .env("AA_VIRT_SYSROOT", sysroot)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .output()
        .expect("run aa-virt")
}

/// [`aa_virt`] with extra environment variables.
pub fn aa_virt_env(sysroot: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    super::aa_virt()
        .args(args)
        .env("AA_VIRT_SYSROOT", sysroot)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .envs(env.iter().copied())
        .output()
        .expect("run aa-virt")
}

/// stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shared corpus of libvirt's test XMLs (the `corpus/libvirt`
/// directory, as in tests/policy/differential.rs and the Makefile):
/// `$AA_VIRT_CORPUS`, or `shared/corpus/libvirt` beside an ancestor of the
/// project. Panics when missing: these tests must not pass without their data.
pub fn corpus() -> PathBuf {
    if let Some(p) = std::env::var_os("AA_VIRT_CORPUS") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/corpus/libvirt"))
        .find(|p| p.join("qemuxmlconfdata").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "the libvirt corpus (shared/corpus/libvirt) is missing beside {}; set AA_VIRT_CORPUS",
                here.display()
            )
        })
}

/// The schema document.
pub fn schema() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/list.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read schema"))
        .expect("schema is JSON")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        _ => false,
    }
}

/// Validate `v` against `schema` (the keywords our schema uses: type,
/// const, enum, required, properties, items, minimum, pattern for simple
/// UUIDs, $ref to #/$defs). Also fails on any object member the schema does
/// not document, so the schema cannot drift from the output. Returns every
/// error with its JSON path.
pub fn validate(root: &Value, schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("only local $defs refs");
        return validate(root, &root["$defs"][name], v, path, errs);
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errs.push(format!("{path}: {v} != const {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{path}: {v} not in {e:?}"));
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => errs.push(format!("{path}: {v} is not {t}")),
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), v)) => {
            errs.push(format!("{path}: {v} is none of {ts:?}"))
        }
        _ => {}
    }
    if let (Some(m), Some(n)) = (schema.get("minimum").and_then(Value::as_i64), v.as_i64()) {
        if n < m {
            errs.push(format!("{path}: {n} < minimum {m}"));
        }
    }
    if let (Some(_), Some(s)) = (schema.get("pattern"), v.as_str()) {
        // The only pattern used is the UUID one.
        if uuid::Uuid::parse_str(s)
            .map(|u| u.hyphenated().to_string() != s)
            .unwrap_or(true)
        {
            errs.push(format!("{path}: {s:?} is not a lower-case hyphenated UUID"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or("");
            if !obj.contains_key(r) {
                errs.push(format!("{path}: missing required {r}"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(root, s, val, &format!("{path}.{k}"), errs),
                None => errs.push(format!("{path}: member {k} is not in the schema")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(root, items, x, &format!("{path}[{i}]"), errs);
        }
    }
}

/// Parse `text` as JSON and validate it against the list schema; panics
/// with every error.
pub fn check_schema(text: &str) -> Value {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    let s = schema();
    let mut errs = Vec::new();
    validate(&s, &s, &v, "$", &mut errs);
    assert!(errs.is_empty(), "schema errors:\n{}", errs.join("\n"));
    v
}

/// The guest named `name` in a list document.
pub fn guest<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["guests"]
        .as_array()
        .expect("guests array")
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no guest {name} in {v}"))
}
