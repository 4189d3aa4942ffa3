//! A restricted pickle machine for `torch.save` state dicts.
//!
//! Python's pickle format is a small stack language whose `GLOBAL` and
//! `REDUCE` opcodes import and call arbitrary Python callables; loading an
//! untrusted `.pth` with `pickle.load` can therefore run any code. This
//! machine, like PyTorch's `weights_only=True` loader, understands only the
//! opcodes a state dict is written with and resolves only the globals a
//! state dict needs ([`Global`]): `collections.OrderedDict`, the
//! `torch._utils._rebuild_*` tensor constructors, the typed storage classes
//! and `_codecs.encode` (how Python 3 pickles `bytes` at protocol 2). Any
//! other global is refused the moment it is read, naming it
//! (`refused pickle global posix.system`); nothing is ever executed: the
//! "calls" below build plain data ([`Value`]).
//!
//! Tensors are not materialised here: a tensor is a [`TensorRef`] (storage
//! key, dtype, offset, size, stride) because in the legacy format the
//! storage bytes follow the pickle. `super::rebuild` turns them into
//! [`crate::Tensor`]s once the storages are read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The element type of a typed storage (`torch.FloatStorage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    /// The storage class name as PyTorch pickles it (module `torch`).
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// The only globals a state dict may name; everything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`: called with `()` or a list of pairs.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)` (PyTorch < 1.0 files).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`.
    RebuildParameterWithState,
    /// `_codecs.encode(text, "latin1")`: Python 3 `bytes` pickled at protocol 2.
    CodecsEncode,
    /// A typed storage class; appears only inside a storage's persistent id.
    Storage(StorageDType),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Self::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Self::RebuildParameterWithState,
            ("_codecs", "encode") => Self::CodecsEncode,
            ("torch", class) => Self::Storage(StorageDType::from_class(class)?),
            _ => return None,
        })
    }
}

/// A storage as referenced by a persistent id: `key` names its bytes
/// (`archive/data/<key>` in the zip format, the key list in the legacy one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: StorageDType,
    /// Legacy storage views: (element offset, element count) inside the root storage.
    pub view: Option<(usize, usize)>,
}

/// A tensor as a strided view of a storage, not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Unpickled data. Lists and dicts are shared (`Rc<RefCell>`) as in
/// Python, so that a memoised container filled later is seen filled.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i128),
    /// A float (optimizer settings, say); its value is never needed.
    Float,
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// The kind of value with its article ("an int"), for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class or function",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }

    /// The text of a `str` (or of an ASCII/UTF-8 `bytes`, as Python 2 wrote strings).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Turns a persistent id (the tuple after `BINPERSID`) into a value; the
/// container format decides what ids mean.
pub(crate) type PersistentLoad<'a> = dyn FnMut(&Value) -> Result<Value, String> + 'a;

/// Runs one pickle starting at `data[pos]`; returns the value and the
/// position after its `STOP` opcode. Errors are messages naming the
/// refused global or opcode and the byte offset.
pub(crate) fn unpickle(data: &[u8], pos: usize, persistent_load: &mut PersistentLoad<'_>) -> Result<(Value, usize), String> {
    let mut m = Machine { data, pos, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    loop {
        let at = m.pos;
        let op = m.bytes(1)?[0];
        m.step(op, persistent_load).map_err(|e| format!("{e} (pickle opcode {} at byte {at})", describe(op)))?;
        if op == b'.' {
            let v = m.pop()?;
            return Ok((v, m.pos));
        }
    }
}

fn describe(op: u8) -> String {
    if op.is_ascii_graphic() { format!("{:?}", op as char) } else { format!("0x{op:02x}") }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl<'a> Machine<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("the pickle ends in the middle of an opcode")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap_or_default()))
    }
    /// A text argument ending with a newline (GLOBAL, PUT, GET).
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("a text argument has no end of line")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a text argument is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn len_prefixed(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "a length does not fit in memory")?;
        self.bytes(n)
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| "the pickle stack is empty".to_string())
    }
    fn top(&self) -> Result<&Value, String> {
        self.stack.last().ok_or_else(|| "the pickle stack is empty".to_string())
    }
    /// Pops everything above the last MARK, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("no MARK on the pickle stack")?;
        if m > self.stack.len() {
            return Err("the pickle stack lost its MARK".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }
    fn memo_put(&mut self, idx: u64) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }
    fn memo_get(&mut self, idx: u64) -> Result<(), String> {
        let v = self.memo.get(&idx).cloned().ok_or_else(|| format!("memo entry {idx} was never stored"))?;
        self.push(v);
        Ok(())
    }
    fn text(bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not valid UTF-8".to_string())
    }
    /// Python 2 `str` (BINSTRING): UTF-8 when it is, else Latin-1.
    fn py2_text(bytes: &[u8]) -> String {
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) => bytes.iter().map(|&b| b as char).collect(),
        }
    }
    fn int(bytes: &[u8]) -> Result<Value, String> {
        if bytes.len() > 16 {
            return Err(format!("an integer of {} bytes is too large", bytes.len()));
        }
        if bytes.is_empty() {
            return Ok(Value::Int(0));
        }
        let fill = if bytes[bytes.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut b = [fill; 16];
        b[..bytes.len()].copy_from_slice(bytes);
        Ok(Value::Int(i128::from_le_bytes(b)))
    }
    fn global(module: &str, name: &str) -> Result<Value, String> {
        Global::resolve(module, name).map(Value::Global).ok_or_else(|| {
            format!(
                "refused pickle global {module}.{name}: a state dict needs only tensors, storages and OrderedDicts (nothing was executed)"
            )
        })
    }

    fn step(&mut self, op: u8, persistent_load: &mut PersistentLoad<'_>) -> Result<(), String> {
        match op {
            0x80 => {
                let v = self.u8()?;
                if v > 5 {
                    return Err(format!("unsupported pickle protocol {v}"));
                }
            }
            0x95 => {
                self.u64()?; // FRAME: a length hint only
            }
            b'.' => {}
            b'(' => self.marks.push(self.stack.len()),
            b')' => self.push(Value::Tuple(Rc::new(Vec::new()))),
            b']' => self.push(Value::List(Rc::default())),
            b'}' => self.push(Value::Dict(Rc::default())),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(Rc::new(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err("the pickle stack is too short for a tuple".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(Rc::new(items)));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.push(Value::Dict(Rc::new(RefCell::new(pairs))));
            }
            b'a' => {
                let v = self.pop()?;
                self.list_extend(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_extend(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.dict_extend(vec![(k, v)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let p = pairs(items)?;
                self.dict_extend(p)?;
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Value::Int(v.into()));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v.into()));
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v.into()));
            }
            0x8a => {
                let n = self.u8()?;
                let b = self.bytes(n as usize)?;
                self.push(Self::int(b)?);
            }
            0x8b => {
                let n = self.u32()?;
                let b = self.len_prefixed(n.into())?;
                self.push(Self::int(b)?);
            }
            b'G' => {
                self.bytes(8)?;
                self.push(Value::Float);
            }
            b'X' => {
                let n = self.u32()?;
                let b = self.len_prefixed(n.into())?;
                self.push(Value::Str(Self::text(b)?));
            }
            0x8c => {
                let n = self.u8()?;
                let b = self.bytes(n as usize)?;
                self.push(Value::Str(Self::text(b)?));
            }
            0x8d => {
                let n = self.u64()?;
                let b = self.len_prefixed(n)?;
                self.push(Value::Str(Self::text(b)?));
            }
            b'T' => {
                let n = self.u32()?;
                let b = self.len_prefixed(n.into())?;
                self.push(Value::Str(Self::py2_text(b)));
            }
            b'U' => {
                let n = self.u8()?;
                let b = self.bytes(n as usize)?;
                self.push(Value::Str(Self::py2_text(b)));
            }
            b'B' => {
                let n = self.u32()?;
                let b = self.len_prefixed(n.into())?;
                self.push(Value::Bytes(b.to_vec()));
            }
            b'C' => {
                let n = self.u8()?;
                let b = self.bytes(n as usize)?;
                self.push(Value::Bytes(b.to_vec()));
            }
            0x8e => {
                let n = self.u64()?;
                let b = self.len_prefixed(n)?;
                self.push(Value::Bytes(b.to_vec()));
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = Self::global(module, name)?;
                self.push(g);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => {
                        let g = Self::global(m, n)?;
                        self.push(g);
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                let v = call(&f, &args)?;
                self.push(v);
            }
            b'b' => {
                let state = self.pop()?;
                match (self.top()?, &state) {
                    // An OrderedDict's attributes (a state dict's `_metadata`): not needed.
                    (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                    (target, _) => {
                        return Err(format!("BUILD (setting the state of an object) on {} is not part of a state dict", target.kind()));
                    }
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = persistent_load(&pid)?;
                self.push(v);
            }
            b'q' => {
                let i = self.u8()?;
                self.memo_put(i.into())?;
            }
            b'r' => {
                let i = self.u32()?;
                self.memo_put(i.into())?;
            }
            0x94 => {
                let i = self.memo.len() as u64;
                self.memo_put(i)?;
            }
            b'p' => {
                let i = self.line()?.trim().parse().map_err(|_| "PUT has a bad memo index")?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = self.u8()?;
                self.memo_get(i.into())?;
            }
            b'j' => {
                let i = self.u32()?;
                self.memo_get(i.into())?;
            }
            b'g' => {
                let i = self.line()?.trim().parse().map_err(|_| "GET has a bad memo index")?;
                self.memo_get(i)?;
            }
            b'0' => {
                if self.stack.is_empty() {
                    self.pop_mark()?;
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v);
            }
            _ => return Err("refused pickle opcode: not one a state dict is written with".into()),
        }
        Ok(())
    }

    fn list_extend(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(format!("APPEND to {}, not a list", other.kind())),
        }
    }

    fn dict_extend(&mut self, items: Vec<(Value, Value)>) -> Result<(), String> {
        match self.top()? {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                for (k, v) in items {
                    // A repeated key replaces the earlier value, keeping its position (Python dict semantics).
                    match d.iter_mut().find(|(old, _)| same_key(old, &k)) {
                        Some(slot) => slot.1 = v,
                        None => d.push((k, v)),
                    }
                }
                Ok(())
            }
            other => Err(format!("SETITEM on {}, not a dict", other.kind())),
        }
    }
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        _ => false,
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("an odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn tuple(args: &Value) -> Result<&[Value], String> {
    match args {
        Value::Tuple(t) => Ok(t),
        other => Err(format!("call arguments are {}, not a tuple", other.kind())),
    }
}

fn usize_of(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} {i} is out of range")),
        other => Err(format!("{what} is {}, not an int", other.kind())),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items: Vec<Value> = match v {
        Value::Tuple(t) => t.to_vec(),
        Value::List(l) => l.borrow().clone(),
        other => return Err(format!("{what} is {}, not a tuple", other.kind())),
    };
    items.iter().map(|x| usize_of(x, what)).collect()
}

/// "Calls" an accepted global: builds the data it stands for.
fn call(f: &Value, args: &Value) -> Result<Value, String> {
    let g = match f {
        Value::Global(g) => *g,
        other => return Err(format!("REDUCE calls {}, which is not callable", other.kind())),
    };
    let a = tuple(args)?;
    match g {
        Global::OrderedDict => match a {
            [] => Ok(Value::Dict(Rc::default())),
            [Value::List(items)] => {
                let mut d = Vec::new();
                for item in items.borrow().iter() {
                    match item {
                        Value::Tuple(kv) if kv.len() == 2 => d.push((kv[0].clone(), kv[1].clone())),
                        other => return Err(format!("OrderedDict item is {}, not a (key, value) pair", other.kind())),
                    }
                }
                Ok(Value::Dict(Rc::new(RefCell::new(d))))
            }
            _ => Err(format!("OrderedDict called with {} unexpected arguments", a.len())),
        },
        Global::RebuildTensorV2 | Global::RebuildTensor => {
            let want = if g == Global::RebuildTensor { 4..=4 } else { 6..=7 };
            if !want.contains(&a.len()) {
                return Err(format!("tensor rebuild called with {} arguments", a.len()));
            }
            let storage = match &a[0] {
                Value::Storage(s) => (**s).clone(),
                other => return Err(format!("a tensor's storage is {}, not a storage", other.kind())),
            };
            let offset = usize_of(&a[1], "storage offset")?;
            let size = usizes(&a[2], "tensor size")?;
            let stride = usizes(&a[3], "tensor stride")?;
            if size.len() != stride.len() {
                return Err(format!("tensor size {size:?} and stride {stride:?} have different ranks"));
            }
            Ok(Value::Tensor(Rc::new(TensorRef { storage, offset, size, stride })))
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => match a.first() {
            Some(t @ Value::Tensor(_)) if a.len() >= 3 => Ok(t.clone()),
            _ => Err("a Parameter rebuilt from something other than a tensor".into()),
        },
        Global::CodecsEncode => match a {
            [Value::Str(s), enc] if matches!(enc.as_str(), Some("latin1" | "latin-1")) => {
                let b: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                b.map(Value::Bytes).ok_or_else(|| "_codecs.encode of a non-Latin-1 string".to_string())
            }
            _ => Err("_codecs.encode called with arguments other than (str, 'latin1')".into()),
        },
        Global::Storage(_) => Err("a storage class is called directly instead of being loaded by persistent id".into()),
    }
}

/// Interprets a storage persistent id: `('storage', <StorageClass>, key,
/// location, numel)` in the zip format, with a sixth element `view_metadata`
/// (`None` or `(view_key, offset, size)`) in the legacy one.
pub(crate) fn storage_id(pid: &Value) -> Result<(StorageRef, usize), String> {
    let t = match pid {
        Value::Tuple(t) => t,
        other => return Err(format!("persistent id is {}, not a tuple", other.kind())),
    };
    match t.first().and_then(Value::as_str) {
        Some("storage") => {}
        Some(other) => return Err(format!("refused persistent id of type {other:?} (only storages are loaded)")),
        None => return Err("persistent id without a type name".into()),
    }
    if t.len() != 5 && t.len() != 6 {
        return Err(format!("storage persistent id has {} elements", t.len()));
    }
    let dtype = match &t[1] {
        Value::Global(Global::Storage(d)) => *d,
        other => return Err(format!("storage type is {}, not a torch storage class", other.kind())),
    };
    let key = t[2].as_str().ok_or("storage key is not a string")?.to_string();
    let numel = usize_of(&t[4], "storage size")?;
    let view = match t.get(5) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v)) if v.len() == 3 => Some((usize_of(&v[1], "storage view offset")?, usize_of(&v[2], "storage view size")?)),
        Some(other) => return Err(format!("storage view metadata is {}", other.kind())),
    };
    Ok((StorageRef { key, dtype, view }, numel))
}
