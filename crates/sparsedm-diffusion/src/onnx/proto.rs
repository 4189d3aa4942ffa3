//! The few ONNX protobuf messages an exported graph needs, encoded by hand
//! (field numbers from `onnx.proto`): no protoc and no generated code, and
//! the bytes are easy to check against the schema. Protobuf's wire format:
//! each field is a varint key `field << 3 | wire type` followed by a varint
//! (type 0), four little-endian bytes (type 5) or a varint length and the
//! bytes (type 2, also used for nested messages and packed repeats).

/// ONNX `TensorProto.DataType` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    Float = 1,
    Int64 = 7,
}

/// A message under construction: fields appended in order.
#[derive(Debug, Default, Clone)]
pub struct Msg(Vec<u8>);

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Msg {
    pub fn new() -> Self {
        Self::default()
    }
    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }
    /// An int32/int64/enum field (negative values as ten-byte two's complement, as protobuf does).
    pub fn int(mut self, field: u32, v: i64) -> Self {
        self.key(field, 0);
        varint(&mut self.0, v as u64);
        self
    }
    pub fn float(mut self, field: u32, v: f32) -> Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        self.key(field, 2);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }
    pub fn msg(self, field: u32, m: &Msg) -> Self {
        self.bytes(field, &m.0)
    }
    /// A packed repeated int64 field.
    pub fn ints(self, field: u32, v: &[i64]) -> Self {
        let mut packed = Vec::new();
        for &x in v {
            varint(&mut packed, x as u64);
        }
        self.bytes(field, &packed)
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// `TensorProto`: an initializer or constant with raw little-endian data.
pub fn tensor(name: &str, elem: ElemType, dims: &[usize], raw: &[u8]) -> Msg {
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Msg::new().ints(1, &dims).int(2, elem as i64).str(8, name).bytes(9, raw)
}

/// A dimension of a graph input or output: fixed, or named (dynamic).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// `ValueInfoProto` of a tensor-typed graph input or output.
pub fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> Msg {
    let mut shape = Msg::new();
    for d in dims {
        let dim = match d {
            Dim::Fixed(n) => Msg::new().int(1, *n as i64),
            Dim::Named(s) => Msg::new().str(2, s),
        };
        shape = shape.msg(1, &dim);
    }
    let tensor_type = Msg::new().int(1, elem as i64).msg(2, &shape);
    let ty = Msg::new().msg(1, &tensor_type);
    Msg::new().str(1, name).msg(2, &ty)
}

/// An attribute of a node (`AttributeProto`).
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Tensor(Msg),
}

/// `NodeProto` with named attributes.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) -> Msg {
    let mut m = Msg::new();
    for i in inputs {
        m = m.str(1, i);
    }
    for o in outputs {
        m = m.str(2, o);
    }
    m = m.str(3, name).str(4, op);
    for (an, a) in attrs {
        // AttributeProto: name 1, f 2, i 3, t 5, ints 8, type 20 (FLOAT 1, INT 2, TENSOR 4, INTS 7).
        let at = Msg::new().str(1, an);
        let at = match a {
            Attr::Float(f) => at.float(2, *f).int(20, 1),
            Attr::Int(i) => at.int(3, *i).int(20, 2),
            Attr::Tensor(t) => at.msg(5, t).int(20, 4),
            Attr::Ints(v) => v.iter().fold(at, |m, &x| m.int(8, x)).int(20, 7),
        };
        m = m.msg(5, &at);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_protobuf() {
        // Field 1 varint 150 is 08 96 01 (the protobuf documentation's example).
        assert_eq!(Msg::new().int(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
        // Field 2 string "testing": 12 07 74 65 73 74 69 6e 67.
        assert_eq!(Msg::new().str(2, "testing").into_bytes(), [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        // -1 as int64 is ten bytes.
        assert_eq!(Msg::new().int(1, -1).into_bytes().len(), 11);
        // Packed [3, 270]: 0a 03 03 8e 02.
        assert_eq!(Msg::new().ints(1, &[3, 270]).into_bytes(), [0x0a, 0x03, 0x03, 0x8e, 0x02]);
        assert_eq!(Msg::new().float(2, 1.0).into_bytes(), [0x15, 0, 0, 0x80, 0x3f]);
    }
}
