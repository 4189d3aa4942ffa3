//! Finds the state dict inside an unpickled checkpoint.
//!
//! A checkpoint is either a state dict itself (a dict of tensors, as
//! `torch.save(model.state_dict(), f)` writes) or a dict holding one among
//! other things (`{"state_dict": ..., "epoch": 3}`, `{"model": ..., "ema": ...}`).
//! With a key (`"state_dict"`, or a nested path `"a/b"`) that entry is
//! taken; without one, the dicts of tensors nearest to the top are the
//! candidates and exactly one must exist, else the error lists them so the
//! user can pick one with `--key`.

use super::pickle::{TensorRef, Value};
use std::collections::VecDeque;
use std::rc::Rc;

/// A state dict: tensor names in file order.
pub(crate) type StateDict = Vec<(String, Rc<TensorRef>)>;

/// The entries of a dict whose keys are all strings.
fn str_entries(v: &Value) -> Option<Vec<(String, Value)>> {
    match v {
        Value::Dict(d) => d.borrow().iter().map(|(k, v)| Some((k.as_str()?.to_string(), v.clone()))).collect(),
        _ => None,
    }
}

/// `Some` when `v` is a non-empty dict of tensors with string keys.
fn as_state_dict(v: &Value) -> Option<StateDict> {
    let entries = str_entries(v)?;
    if entries.is_empty() {
        return None;
    }
    entries
        .into_iter()
        .map(|(k, v)| match v {
            Value::Tensor(t) => Some((k, t)),
            _ => None,
        })
        .collect()
}

fn key_list(v: &Value) -> String {
    match str_entries(v) {
        Some(e) if !e.is_empty() => e.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "),
        Some(_) => "none: it is empty".into(),
        None => format!("none: it is {}", v.kind()),
    }
}

/// The entry at `key` (segments separated by `/`), which must be a dict of tensors.
fn by_key(root: &Value, key: &str) -> Result<StateDict, String> {
    let mut at = root.clone();
    let mut path = String::new();
    for seg in key.split('/') {
        let entries = str_entries(&at).ok_or_else(|| {
            format!("key {key:?}: {} is {}, not a dict", if path.is_empty() { "the checkpoint" } else { &path }, at.kind())
        })?;
        let next = entries.into_iter().find(|(k, _)| k == seg).map(|(_, v)| v);
        at = next.ok_or_else(|| {
            let place = if path.is_empty() { "the checkpoint".to_string() } else { format!("entry {path:?}") };
            format!("no key {seg:?} in {place} (its keys: {})", key_list(&at))
        })?;
        path = if path.is_empty() { seg.to_string() } else { format!("{path}/{seg}") };
    }
    if let Some(sd) = as_state_dict(&at) {
        return Ok(sd);
    }
    let entries = str_entries(&at).ok_or_else(|| format!("entry {key:?} is {}, not a dict of tensors", at.kind()))?;
    match entries.iter().find(|(_, v)| !matches!(v, Value::Tensor(_))) {
        Some((k, v)) => Err(format!("entry {key:?} is not a dict of tensors: its entry {k:?} is {}", v.kind())),
        None => Err(format!("entry {key:?} is an empty dict")),
    }
}

/// Selects the state dict: by `key`, or the one obvious candidate.
pub(crate) fn state_dict(root: &Value, key: Option<&str>) -> Result<StateDict, String> {
    if let Some(key) = key {
        return by_key(root, key);
    }
    if let Some(sd) = as_state_dict(root) {
        return Ok(sd);
    }
    // Breadth-first over string-keyed dicts; the shallowest level with a dict of tensors wins.
    let mut level: VecDeque<(String, Value)> = VecDeque::from([(String::new(), root.clone())]);
    let mut visited = 0usize;
    while !level.is_empty() {
        let mut found = Vec::new();
        let mut next = VecDeque::new();
        for (path, v) in level {
            visited += 1;
            if visited > 100_000 {
                return Err("the checkpoint nests too many dicts to search; give --key".into());
            }
            if let Some(sd) = as_state_dict(&v) {
                found.push((path, sd));
            } else if let Some(entries) = str_entries(&v) {
                for (k, child) in entries {
                    let p = if path.is_empty() { k } else { format!("{path}/{k}") };
                    next.push_back((p, child));
                }
            }
        }
        match found.len() {
            0 => level = next,
            1 => return Ok(found.remove(0).1),
            _ => {
                let names: Vec<String> = found.iter().map(|(p, _)| format!("{p:?}")).collect();
                return Err(format!("several dicts of tensors ({}): choose one with --key", names.join(", ")));
            }
        }
    }
    Err(format!("no dict of tensors found (top-level keys: {})", key_list(root)))
}
