//! `forgec summary`: Keras's model.summary() table.

use crate::keras::{KerasModel, LayerInfo, LoadOptions};
use crate::UserError;
use std::path::{Path, PathBuf};

pub fn cmd(model: &Path, weights: Option<PathBuf>, ir: bool) -> Result<i32, UserError> {
    let opts = LoadOptions {
        weights,
        allow_missing_weights: true,
        input_shape: None,
    };
    let m = match crate::load_any(model, &opts).map_err(|e| UserError::new(e.to_string()))? {
        crate::Model::Keras(m) => m,
        crate::Model::Onnx(m) => {
            print!("{}", render_onnx(&m));
            if ir {
                println!();
                print!("{}", forgec_ir::text::print_with(&m.graph, Some(16)));
            }
            return Ok(0);
        }
    };
    print!("{}", render(&m));
    if !m.has_weights {
        println!("(no weights file was found: the counts come from the layer configs)");
    }
    if ir {
        println!();
        print!("{}", forgec_ir::text::print_with(&m.graph, Some(16)));
    }
    Ok(0)
}

/// `1,234,567`
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keras's readable_memory_size: `8.50 KB`.
pub fn readable_size(bytes: usize) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    for u in units {
        if v / 1024.0 < 1.0 {
            return format!("{v:.2} {u}");
        }
        v /= 1024.0;
    }
    format!("{v:.2} PB")
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        // A word longer than the column is cut with an ellipsis, as rich does.
        if word.chars().count() > width {
            word = word
                .chars()
                .take(width.saturating_sub(1))
                .collect::<String>()
                + "…";
        }
        if cur.is_empty() {
            cur = word;
        } else if cur.chars().count() + 1 + word.chars().count() <= width {
            cur.push(' ');
            cur.push_str(&word);
        } else {
            lines.push(std::mem::take(&mut cur));
            cur = word;
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

fn shapes(info: &LayerInfo) -> String {
    match info.outputs.len() {
        1 => info.outputs[0].keras_shape(),
        _ => format!(
            "[{}]",
            info.outputs
                .iter()
                .map(|t| t.keras_shape())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Renders the table and the totals the way Keras 3 prints them.
pub fn render(m: &KerasModel) -> String {
    let connected = !(m.class == "Sequential" || m.sequential_like);
    let (line, positions): (usize, &[f64]) = if connected {
        (108, &[0.3, 0.56, 0.74, 1.0])
    } else {
        (88, &[0.45, 0.80, 1.0])
    };
    let header: &[&str] = if connected {
        &["Layer (type)", "Output Shape", "Param #", "Connected to"]
    } else {
        &["Layer (type)", "Output Shape", "Param #"]
    };
    let ncol = header.len();
    // Keras asks rich for columns of int(position * line) - previous; with borders and
    // padding that overflows the line, and rich shrinks the columns by `ratio_reduce`.
    let mut widths = Vec::new();
    let mut current = 0usize;
    for p in positions {
        let w = (p * line as f64) as usize - current;
        widths.push(w);
        current += w;
    }
    let excess = (widths.iter().sum::<usize>() + 3 * ncol + 1).saturating_sub(line);
    let mut remaining = excess as f64;
    let mut ratio = ncol as f64;
    for w in widths.iter_mut() {
        let d = (remaining / ratio).round_ties_even().min(*w as f64);
        *w -= d as usize;
        remaining -= d;
        ratio -= 1.0;
    }
    let right = |c: usize| c == 2;
    let border = |l: &str, m: &str, r: &str, f: &str| -> String {
        let parts: Vec<String> = widths.iter().map(|w| f.repeat(w + 2)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    let row = |cells: &[String], edge: &str| -> String {
        let wrapped: Vec<Vec<String>> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| wrap(c, w))
            .collect();
        let h = wrapped.iter().map(|w| w.len()).max().unwrap_or(1);
        let mut out = String::new();
        for k in 0..h {
            out.push_str(edge);
            for (c, w) in wrapped.iter().enumerate() {
                let text = w.get(k).cloned().unwrap_or_default();
                let pad = widths[c].saturating_sub(text.chars().count());
                if right(c) {
                    out.push_str(&format!(" {}{} ", " ".repeat(pad), text));
                } else {
                    out.push_str(&format!(" {}{} ", text, " ".repeat(pad)));
                }
                out.push_str(edge);
            }
            out.push('\n');
        }
        out
    };
    let mut out = format!("Model: \"{}\"\n", m.name);
    out.push_str(&border("┏", "┳", "┓", "━"));
    out.push_str(&row(
        &header.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "┃",
    ));
    out.push_str(&border("┡", "╇", "┩", "━"));
    for (i, l) in m.layers.iter().enumerate() {
        let mut cells = vec![
            format!("{} ({})", l.name, l.class),
            shapes(l),
            thousands(l.params),
        ];
        if connected {
            cells.push(if l.connected.is_empty() {
                "-".into()
            } else {
                l.connected.join(", ")
            });
        }
        out.push_str(&row(&cells, "│"));
        if i + 1 < m.layers.len() {
            out.push_str(&border("├", "┼", "┤", "─"));
        }
    }
    out.push_str(&border("└", "┴", "┘", "─"));
    let t: usize = m.layers.iter().map(|l| l.trainable_params).sum();
    let nt: usize = m.layers.iter().map(|l| l.non_trainable_params).sum();
    let tb: usize = m.layers.iter().map(|l| l.trainable_bytes).sum();
    let ntb: usize = m.layers.iter().map(|l| l.non_trainable_bytes).sum();
    out.push_str(&format!(
        " Total params: {} ({})\n",
        thousands(t + nt),
        readable_size(tb + ntb)
    ));
    out.push_str(&format!(
        " Trainable params: {} ({})\n",
        thousands(t),
        readable_size(tb)
    ));
    out.push_str(&format!(
        " Non-trainable params: {} ({})\n",
        thousands(nt),
        readable_size(ntb)
    ));
    out
}

/// An ONNX model: producer, opset, inputs and outputs with symbolic dims, op table, params.
pub fn render_onnx(m: &crate::onnx::OnnxModel) -> String {
    let g = &m.graph;
    let mut out = format!(
        "Model: \"{}\" (ONNX IR version {}, opset {}, from {})\n",
        g.name,
        m.ir_version,
        m.opset,
        if m.producer.is_empty() {
            "an unknown producer"
        } else {
            &m.producer
        }
    );
    out.push_str("Inputs:\n");
    for &i in &g.inputs {
        out.push_str(&format!("  {}: {}\n", g.value(i).name, g.ty(i)));
    }
    out.push_str("Outputs:\n");
    for &o in &g.outputs {
        out.push_str(&format!("  {}: {}\n", g.value(o).name, g.ty(o)));
    }
    let w = m
        .op_counts
        .keys()
        .map(|k| k.len())
        .max()
        .unwrap_or(7)
        .max(7);
    out.push_str(&format!("{:<w$}  {:>5}\n", "Op type", "Count"));
    for (op, n) in &m.op_counts {
        out.push_str(&format!("{op:<w$}  {n:>5}\n"));
    }
    out.push_str(&format!(
        " Total params: {} ({})\n",
        thousands(m.params),
        readable_size(m.param_bytes)
    ));
    out
}
