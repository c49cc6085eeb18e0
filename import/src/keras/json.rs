//! Small helpers to read Keras configs with errors that name the key.

use serde_json::Value;

pub type R<T> = Result<T, String>;

pub fn get<'a>(cfg: &'a Value, key: &str) -> Option<&'a Value> {
    cfg.get(key).filter(|v| !v.is_null())
}

pub fn str_or<'a>(cfg: &'a Value, key: &str, default: &'a str) -> R<&'a str> {
    match get(cfg, key) {
        None => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(format!("config `{key}` must be a string, got {v}")),
    }
}

pub fn bool_or(cfg: &Value, key: &str, default: bool) -> R<bool> {
    match get(cfg, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("config `{key}` must be true or false, got {v}")),
    }
}

pub fn f64_or(cfg: &Value, key: &str, default: f64) -> R<f64> {
    match get(cfg, key) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("config `{key}` must be a number, got {v}")),
    }
}

/// The largest integer a layer config may hold (sizes, units, dims): 2^31. Larger ones are not
/// plausible, and would overflow the arithmetic on them.
pub const MAX_CONFIG_INT: u64 = 1 << 31;

pub fn as_usize(v: &Value, key: &str) -> R<usize> {
    v.as_u64()
        .filter(|&x| x <= MAX_CONFIG_INT)
        .map(|x| x as usize)
        .ok_or_else(|| format!("config `{key}` must be a non-negative integer up to 2^31, got {v}"))
}

pub fn usize_req(cfg: &Value, key: &str) -> R<usize> {
    as_usize(
        get(cfg, key).ok_or_else(|| format!("config has no `{key}`"))?,
        key,
    )
}

pub fn usize_or(cfg: &Value, key: &str, default: usize) -> R<usize> {
    match get(cfg, key) {
        None => Ok(default),
        Some(v) => as_usize(v, key),
    }
}

pub fn i64_of(v: &Value, key: &str) -> R<i64> {
    v.as_i64()
        .ok_or_else(|| format!("config `{key}` must be an integer, got {v}"))
}

/// An int or a list of `n` ints (Keras accepts both for kernel_size, strides, ...): each 1 to
/// 65536 (0 to 65536 for `output_padding`).
pub fn tuple(cfg: &Value, key: &str, n: usize, default: Option<usize>) -> R<Vec<usize>> {
    let v = tuple_any(cfg, key, n, default)?;
    let least = usize::from(key != "output_padding");
    if let Some(bad) = v.iter().find(|&&x| x < least || x > 65536) {
        return Err(format!(
            "config `{key}` holds {bad}: each entry must be {least} to 65536"
        ));
    }
    Ok(v)
}

fn tuple_any(cfg: &Value, key: &str, n: usize, default: Option<usize>) -> R<Vec<usize>> {
    match get(cfg, key) {
        None => default
            .map(|d| vec![d; n])
            .ok_or_else(|| format!("config has no `{key}`")),
        Some(Value::Array(a)) => {
            if a.len() != n {
                return Err(format!(
                    "config `{key}` must have {n} entries, got {}",
                    a.len()
                ));
            }
            a.iter().map(|v| as_usize(v, key)).collect()
        }
        Some(v) => Ok(vec![as_usize(v, key)?; n]),
    }
}

/// A list of ints, or a single int as a one-element list.
pub fn int_list(cfg: &Value, key: &str) -> R<Option<Vec<i64>>> {
    match get(cfg, key) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| i64_of(v, key))
            .collect::<R<Vec<_>>>()
            .map(Some),
        Some(v) => Ok(Some(vec![i64_of(v, key)?])),
    }
}

/// A shape list where null is an unknown dim.
pub fn shape_list(v: &Value, key: &str) -> R<Vec<Option<usize>>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|d| {
                if d.is_null() {
                    Ok(None)
                } else {
                    as_usize(d, key).map(Some)
                }
            })
            .collect(),
        _ => Err(format!("`{key}` must be a list, got {v}")),
    }
}
