//! The stable text form of a graph. It prints and parses back to an equal graph, so golden
//! tests can hold graphs as text.
//!
//! ```text
//! graph "mlp" {
//!   input %x: f32[batch,4]
//!   %w: f32[4,2] = const {weight = true, trainable = true} [0.5, -1.0, 2.0, 0.25, 1.0, 0.0, 3.0, -2.0] loc("keras", "Dense", "dense")
//!   %y: f32[batch,2] = matmul(%x, %w) loc("keras", "Dense", "dense")
//!   output %y
//! }
//! ```
//! Constant data is printed in full, each float in its shortest exact form.

use crate::graph::{Graph, Node, Origin, Value, ValueId};
use crate::op::{Attr, Op, Weight};
use crate::types::{Dim, TensorType};
use forgec_runtime::{DType, Data, Tensor};
use std::collections::HashMap;
use std::fmt::Write;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn value_ref(name: &str) -> String {
    if !name.is_empty() && name.chars().all(is_name_char) && !name.starts_with('-') {
        format!("%{name}")
    } else {
        format!("%{}", quote(name))
    }
}

fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}

fn fmt_attr(a: &Attr) -> String {
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Float(v) => fmt_f64(*v),
        Attr::Bool(v) => v.to_string(),
        Attr::Str(s) => quote(s),
        Attr::Ident(s) => s.clone(),
        Attr::Ints(v) => format!(
            "[{}]",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Attr::Dims(v) => format!(
            "[{}]",
            v.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Attr::Floats(v) => format!(
            "[{}]",
            v.iter().map(|x| fmt_f64(*x)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn fmt_data(t: &Tensor) -> String {
    let items: Vec<String> = match t.data() {
        Data::F32(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Data::F64(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Data::F16(_) | Data::BF16(_) => t
            .to_f64_vec()
            .iter()
            .map(|x| format!("{:?}", *x as f32))
            .collect(),
        Data::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        _ => t.to_i64_vec().iter().map(|x| x.to_string()).collect(),
    };
    format!("[{}]", items.join(", "))
}

fn fmt_node(g: &Graph, n: &Node, out: &mut String, elide_over: Option<usize>) {
    let results: Vec<String> = n
        .outputs
        .iter()
        .map(|&o| format!("{}: {}", value_ref(&g.value(o).name), g.ty(o)))
        .collect();
    let _ = write!(out, "  {} = {}", results.join(", "), n.op.name());
    let attrs = n.op.attrs();
    if !attrs.is_empty() {
        let a: Vec<String> = attrs
            .iter()
            .map(|(k, v)| format!("{k} = {}", fmt_attr(v)))
            .collect();
        let _ = write!(out, " {{{}}}", a.join(", "));
    }
    let mut comment = String::new();
    if let Op::Const { value, .. } = &n.op {
        match elide_over {
            Some(k) if value.numel() > k => {
                out.push_str(" [...]");
                comment = format!(" # {} values elided", value.numel());
            }
            _ => {
                let _ = write!(out, " {}", fmt_data(value));
            }
        }
    } else {
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|&i| value_ref(&g.value(i).name))
            .collect();
        let _ = write!(out, "({})", ins.join(", "));
    }
    let o = &n.origin;
    if !(o.framework.is_empty() && o.kind.is_empty() && o.name.is_empty()) {
        let _ = write!(
            out,
            " loc({}, {}, {})",
            quote(&o.framework),
            quote(&o.kind),
            quote(&o.name)
        );
    }
    out.push_str(&comment);
    out.push('\n');
}

/// Prints `g` in the text form.
pub fn print(g: &Graph) -> String {
    print_with(g, None)
}

/// Prints `g` for reading: constants of more than `elide_over` elements are elided (that
/// text does not parse back).
pub fn print_with(g: &Graph, elide_over: Option<usize>) -> String {
    let mut out = format!("graph {} {{\n", quote(&g.name));
    for &i in &g.inputs {
        let _ = writeln!(out, "  input {}: {}", value_ref(&g.value(i).name), g.ty(i));
    }
    for n in &g.nodes {
        fmt_node(g, n, &mut out, elide_over);
    }
    let outs: Vec<String> = g
        .outputs
        .iter()
        .map(|&o| value_ref(&g.value(o).name))
        .collect();
    let _ = writeln!(out, "  output {}", outs.join(", "));
    out.push_str("}\n");
    out
}

// ---------------------------------------------------------------- parsing

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Num(String),
    Str(String),
    Val(String),
    P(char),
}

struct Lexer {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize, usize)>, String> {
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut toks = Vec::new();
    let read_str = |i: &mut usize, col: &mut usize, line: usize| -> Result<String, String> {
        let mut s = String::new();
        *i += 1;
        *col += 1;
        loop {
            match chars.get(*i) {
                None | Some('\n') => return Err(format!("{line}:{col}: unterminated string")),
                Some('"') => {
                    *i += 1;
                    *col += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    let c = chars.get(*i + 1).copied();
                    s.push(match c {
                        Some('n') => '\n',
                        Some(c) => c,
                        None => return Err(format!("{line}:{col}: unterminated string")),
                    });
                    *i += 2;
                    *col += 2;
                }
                Some(&c) => {
                    s.push(c);
                    *i += 1;
                    *col += 1;
                }
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        if c == '\n' {
            line += 1;
            col = 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
            col += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' {
            let s = read_str(&mut i, &mut col, line)?;
            toks.push((Tok::Str(s), l0, c0));
        } else if c == '%' {
            i += 1;
            col += 1;
            if chars.get(i) == Some(&'"') {
                let s = read_str(&mut i, &mut col, line)?;
                toks.push((Tok::Val(s), l0, c0));
            } else {
                let st = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                if st == i {
                    return Err(format!("{l0}:{c0}: '%' must be followed by a value name"));
                }
                col += i - st;
                toks.push((Tok::Val(chars[st..i].iter().collect()), l0, c0));
            }
        } else if "{}()[],=:".contains(c) {
            toks.push((Tok::P(c), l0, c0));
            i += 1;
            col += 1;
        } else if c.is_ascii_digit() || c == '-' || c == '+' {
            let st = i;
            i += 1;
            // Digits, letters (inf, e), '.', and a sign only right after an exponent 'e'.
            let sign_ok = |i: usize| matches!(chars[i - 1], 'e' | 'E');
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || (matches!(chars[i], '-' | '+') && sign_ok(i)))
            {
                i += 1;
            }
            col += i - st;
            toks.push((Tok::Num(chars[st..i].iter().collect()), l0, c0));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let st = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            col += i - st;
            toks.push((Tok::Word(chars[st..i].iter().collect()), l0, c0));
        } else {
            return Err(format!("{l0}:{c0}: unexpected character '{c}'"));
        }
    }
    Ok(toks)
}

impl Lexer {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn at(&self) -> String {
        match self.toks.get(self.pos) {
            Some((_, l, c)) => format!("{l}:{c}"),
            None => "end of input".into(),
        }
    }
    fn next(&mut self) -> Result<Tok, String> {
        let t = self
            .toks
            .get(self.pos)
            .map(|t| t.0.clone())
            .ok_or_else(|| "unexpected end of input".to_string())?;
        self.pos += 1;
        Ok(t)
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        let at = self.at();
        match self.next()? {
            Tok::P(x) if x == c => Ok(()),
            t => Err(format!("{at}: expected '{c}', found {t:?}")),
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::P(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> Result<String, String> {
        let at = self.at();
        match self.next()? {
            Tok::Word(w) => Ok(w),
            t => Err(format!("{at}: expected a word, found {t:?}")),
        }
    }
    fn keyword(&mut self, k: &str) -> Result<(), String> {
        let at = self.at();
        let w = self.word()?;
        if w == k {
            Ok(())
        } else {
            Err(format!("{at}: expected '{k}', found '{w}'"))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let at = self.at();
        match self.next()? {
            Tok::Str(s) => Ok(s),
            t => Err(format!("{at}: expected a string, found {t:?}")),
        }
    }
    fn val(&mut self) -> Result<String, String> {
        let at = self.at();
        match self.next()? {
            Tok::Val(s) => Ok(s),
            t => Err(format!("{at}: expected a %value, found {t:?}")),
        }
    }

    fn ty(&mut self) -> Result<TensorType, String> {
        let at = self.at();
        let d = self.word()?;
        let dtype =
            DType::from_name(&d).ok_or_else(|| format!("{at}: unknown element type '{d}'"))?;
        self.expect('[')?;
        let mut shape = Vec::new();
        if !self.eat(']') {
            loop {
                let at = self.at();
                shape.push(match self.next()? {
                    Tok::Num(n) => {
                        Dim::Known(n.parse().map_err(|_| format!("{at}: bad dim '{n}'"))?)
                    }
                    Tok::Word(w) => Dim::Sym(w),
                    t => return Err(format!("{at}: expected a dim, found {t:?}")),
                });
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(TensorType::new(dtype, shape))
    }

    /// A bracketed list of number / bool tokens, kept as text.
    fn raw_list(&mut self) -> Result<Vec<String>, String> {
        self.expect('[')?;
        let mut items = Vec::new();
        if self.eat(']') {
            return Ok(items);
        }
        loop {
            let at = self.at();
            items.push(match self.next()? {
                Tok::Num(n) => n,
                // Other words are symbolic dims, kept for a `Dims` attribute.
                Tok::Word(w) => w,
                t => return Err(format!("{at}: expected a number, found {t:?}")),
            });
            if self.eat(']') {
                return Ok(items);
            }
            self.expect(',')?;
        }
    }

    fn attr(&mut self) -> Result<Attr, String> {
        let at = self.at();
        match self.peek() {
            Some(Tok::P('[')) => {
                let items = self.raw_list()?;
                let is_sym = |s: &String| {
                    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && !matches!(s.as_str(), "true" | "false" | "inf" | "NaN")
                };
                if items.iter().any(is_sym) {
                    items
                        .iter()
                        .map(|s| {
                            if is_sym(s) {
                                Ok(Dim::Sym(s.clone()))
                            } else {
                                s.parse::<usize>()
                                    .map(Dim::Known)
                                    .map_err(|_| format!("{at}: bad dim '{s}'"))
                            }
                        })
                        .collect::<Result<_, _>>()
                        .map(Attr::Dims)
                } else if items.iter().all(|s| s.parse::<i64>().is_ok()) {
                    Ok(Attr::Ints(
                        items.iter().map(|s| s.parse().unwrap()).collect(),
                    ))
                } else {
                    items
                        .iter()
                        .map(|s| parse_float(s).ok_or_else(|| format!("{at}: bad number '{s}'")))
                        .collect::<Result<_, _>>()
                        .map(Attr::Floats)
                }
            }
            _ => match self.next()? {
                Tok::Num(n) => {
                    if let Ok(i) = n.parse::<i64>() {
                        Ok(Attr::Int(i))
                    } else {
                        parse_float(&n)
                            .map(Attr::Float)
                            .ok_or_else(|| format!("{at}: bad number '{n}'"))
                    }
                }
                Tok::Str(s) => Ok(Attr::Str(s)),
                Tok::Word(w) => Ok(match w.as_str() {
                    "true" => Attr::Bool(true),
                    "false" => Attr::Bool(false),
                    "inf" | "NaN" => Attr::Float(parse_float(&w).unwrap()),
                    _ => Attr::Ident(w),
                }),
                t => Err(format!("{at}: expected an attribute value, found {t:?}")),
            },
        }
    }
}

fn parse_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

fn parse_data(items: &[String], ty: &TensorType) -> Result<Tensor, String> {
    let shape = ty
        .known_shape()
        .ok_or_else(|| format!("a constant's type {ty} must have known dims"))?;
    let bad = |s: &str| format!("'{s}' is not a {} value", ty.dtype);
    let data = match ty.dtype {
        DType::F32 => Data::F32(
            items
                .iter()
                .map(|s| s.parse::<f32>().map_err(|_| bad(s)))
                .collect::<Result<_, _>>()?,
        ),
        DType::F64 => Data::F64(
            items
                .iter()
                .map(|s| s.parse::<f64>().map_err(|_| bad(s)))
                .collect::<Result<_, _>>()?,
        ),
        DType::F16 | DType::BF16 => {
            let v: Vec<f64> = items
                .iter()
                .map(|s| s.parse::<f32>().map(f64::from).map_err(|_| bad(s)))
                .collect::<Result<_, _>>()?;
            return Tensor::from_f64_values(ty.dtype, shape, &v).map_err(|e| e.0);
        }
        DType::Bool => Data::Bool(
            items
                .iter()
                .map(|s| match s.as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(bad(s)),
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::I8 | DType::I32 | DType::I64 => {
            let v: Vec<i64> = items
                .iter()
                .map(|s| s.parse::<i64>().map_err(|_| bad(s)))
                .collect::<Result<_, _>>()?;
            return Tensor::from_i64_values(ty.dtype, shape, &v).map_err(|e| e.0);
        }
    };
    Tensor::new(shape, data).map_err(|e| e.0)
}

/// Parses the text form. The result is not verified: run `verify` on it.
pub fn parse(src: &str) -> Result<Graph, String> {
    let mut lx = Lexer {
        toks: lex(src)?,
        pos: 0,
    };
    lx.keyword("graph")?;
    let name = lx.string()?;
    lx.expect('{')?;
    let mut g = Graph::new(&name);
    let mut ids: HashMap<String, ValueId> = HashMap::new();
    let define = |g: &mut Graph,
                  ids: &mut HashMap<String, ValueId>,
                  name: String,
                  ty: TensorType,
                  at: &str| {
        if ids.contains_key(&name) {
            return Err(format!("{at}: %{name} is defined twice"));
        }
        g.values.push(Value {
            name: name.clone(),
            ty,
        });
        let id = ValueId(g.values.len() - 1);
        ids.insert(name, id);
        Ok(id)
    };
    loop {
        let at = lx.at();
        match lx.peek().cloned() {
            Some(Tok::Word(w)) if w == "input" => {
                lx.next()?;
                let v = lx.val()?;
                lx.expect(':')?;
                let ty = lx.ty()?;
                let id = define(&mut g, &mut ids, v, ty, &at)?;
                g.inputs.push(id);
            }
            Some(Tok::Word(w)) if w == "output" => {
                lx.next()?;
                loop {
                    let at = lx.at();
                    let v = lx.val()?;
                    let id = *ids
                        .get(&v)
                        .ok_or_else(|| format!("{at}: output %{v} is not defined"))?;
                    g.outputs.push(id);
                    if !lx.eat(',') {
                        break;
                    }
                }
                lx.expect('}')?;
                if lx.peek().is_some() {
                    return Err(format!("{}: text after the end of the graph", lx.at()));
                }
                return Ok(g);
            }
            Some(Tok::Val(_)) => {
                let mut results = Vec::new();
                loop {
                    let v = lx.val()?;
                    lx.expect(':')?;
                    results.push((v, lx.ty()?));
                    if !lx.eat(',') {
                        break;
                    }
                }
                lx.expect('=')?;
                let op_at = lx.at();
                let opname = lx.word()?;
                let mut attrs: Vec<(String, Attr)> = Vec::new();
                if lx.eat('{') && !lx.eat('}') {
                    loop {
                        let k = lx.word()?;
                        lx.expect('=')?;
                        attrs.push((k, lx.attr()?));
                        if lx.eat('}') {
                            break;
                        }
                        lx.expect(',')?;
                    }
                }
                let mut inputs = Vec::new();
                let op = if opname == "const" {
                    let items = lx.raw_list()?;
                    if results.len() != 1 {
                        return Err(format!("{op_at}: const has exactly one result"));
                    }
                    let value =
                        parse_data(&items, &results[0].1).map_err(|e| format!("{op_at}: {e}"))?;
                    let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    for (k, _) in &attrs {
                        if k != "weight" && k != "trainable" {
                            return Err(format!("{op_at}: op 'const' has no attribute '{k}'"));
                        }
                    }
                    let weight = match (get("weight"), get("trainable")) {
                        (None, None) => None,
                        (Some(Attr::Bool(true)), Some(Attr::Bool(t))) => {
                            Some(Weight { trainable: t })
                        }
                        _ => {
                            return Err(format!(
                                "{op_at}: a weight needs 'weight = true, trainable = true|false'"
                            ))
                        }
                    };
                    Op::Const { value, weight }
                } else {
                    lx.expect('(')?;
                    if !lx.eat(')') {
                        loop {
                            let at = lx.at();
                            let v = lx.val()?;
                            inputs.push(*ids.get(&v).ok_or_else(|| {
                                format!("{at}: %{v} is used before it is defined")
                            })?);
                            if lx.eat(')') {
                                break;
                            }
                            lx.expect(',')?;
                        }
                    }
                    Op::from_parts(&opname, &attrs).map_err(|e| format!("{op_at}: {e}"))?
                };
                let mut origin = Origin::default();
                if matches!(lx.peek(), Some(Tok::Word(w)) if w == "loc") {
                    lx.next()?;
                    lx.expect('(')?;
                    origin.framework = lx.string()?;
                    lx.expect(',')?;
                    origin.kind = lx.string()?;
                    lx.expect(',')?;
                    origin.name = lx.string()?;
                    lx.expect(')')?;
                }
                let mut outputs = Vec::new();
                for (v, ty) in results {
                    outputs.push(define(&mut g, &mut ids, v, ty, &at)?);
                }
                g.nodes.push(Node {
                    op,
                    inputs,
                    outputs,
                    origin,
                });
            }
            Some(t) => {
                return Err(format!(
                    "{at}: expected 'input', 'output' or a node, found {t:?}"
                ))
            }
            None => return Err("unexpected end of input: the graph has no 'output' line".into()),
        }
    }
}
