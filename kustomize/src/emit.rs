//! YAML text as `kustomize build` prints it (go-yaml v2's encoder): keys in go-yaml's natural
//! order, two spaces of indentation, list items at their key's column, strings plain unless
//! they would read back as something else, long ones folded at 80 columns, multi-line ones as
//! literal blocks.

use serde_json::Value;

/// The documents of a stream, separated by `---` as kustomize separates them.
pub fn to_yaml_stream<'a>(objects: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for (index, object) in objects.into_iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(object));
    }
    out
}

/// One document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar, 0, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, width: usize) {
    out.extend(std::iter::repeat_n(' ', width));
}

/// Where go-yaml's encoder wraps long scalars.
const WIDTH: usize = 80;

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, at: usize) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| natural_order(a.0, b.0));
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            indent(out, at);
        }
        let key = string_text(key, at, at, true);
        let column = at + key.chars().count() + 2;
        out.push_str(&key);
        out.push(':');
        write_value_after_key(out, value, at, column);
    }
}

/// go-yaml v2's order of mapping keys: letters by code point, a non-letter before a letter,
/// runs of digits by their number.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    for i in 0..a.len().min(b.len()) {
        if a[i] == b[i] {
            continue;
        }
        let (al, bl) = (a[i].is_alphabetic(), b[i].is_alphabetic());
        if al && bl {
            return a[i].cmp(&b[i]);
        }
        if al || bl {
            return if bl {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if a[i] == '0' || b[i] == '0' {
            let mut j = i;
            while j > 0 && a[j - 1].is_ascii_digit() {
                j -= 1;
                if a[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < a.len() && a[ai].is_ascii_digit() {
            an = an
                .saturating_mul(10)
                .saturating_add(i64::from(a[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < b.len() && b[bi].is_ascii_digit() {
            bn = bn
                .saturating_mul(10)
                .saturating_add(i64::from(b[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return a[i].cmp(&b[i]);
    }
    a.len().cmp(&b.len())
}

/// A value after `key:` at column `at`; the scalar would start at `column`.
fn write_value_after_key(out: &mut String, value: &Value, at: usize, column: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            indent(out, at + 2);
            write_map(out, map, at + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            indent(out, at);
            write_seq(out, items, at);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, at + 2, column));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], at: usize) {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            indent(out, at);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_map(out, map, at + 2),
            Value::Array(inner) if !inner.is_empty() => write_seq(out, inner, at + 2),
            scalar => {
                out.push_str(&scalar_text(scalar, at + 2, at + 2));
                out.push('\n');
            }
        }
    }
}

/// A scalar whose continuation lines sit at column `at`, starting at column `column`.
fn scalar_text(value: &Value, at: usize, column: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s, at, column, false),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// A string as go-yaml writes it: plain, single-quoted, double-quoted or a literal block
/// (whose lines, and a folded scalar's, sit at column `at`; it starts at column `column`).
fn string_text(s: &str, at: usize, column: usize, key: bool) -> String {
    if s.is_empty() {
        return "\"\"".into();
    }
    if s.contains('\n') {
        if !key && literal_allowed(s) {
            return literal(s, at);
        }
        return fold(&double_quoted(s), at, column, key, Quoting::Double);
    }
    if resolves_otherwise(s) {
        return fold(&double_quoted(s), at, column, key, Quoting::Double);
    }
    if plain_allowed(s) {
        return fold(s, at, column, key, Quoting::Plain);
    }
    if s.chars().all(|c| c == ' ' || !c.is_control()) {
        return fold(
            &format!("'{}'", s.replace('\'', "''")),
            at,
            column,
            key,
            Quoting::Single,
        );
    }
    fold(&double_quoted(s), at, column, key, Quoting::Double)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Plain,
    Single,
    Double,
}

/// libyaml's line breaking: at a single space past column 80, the line ends and the text goes
/// on at column `at` (a double-quoted scalar escapes a space that follows with `\`). Keys are
/// never broken.
fn fold(text: &str, at: usize, column: usize, key: bool, quoting: Quoting) -> String {
    if key || column + text.chars().count() <= WIDTH {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let (first, last) = match quoting {
        Quoting::Plain => (0, chars.len()),
        _ => (1, chars.len().saturating_sub(1)),
    };
    let mut out = String::with_capacity(text.len() + 16);
    let mut col = column;
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        let inside = i >= first && i < last;
        if inside && c == ' ' {
            let next_space = chars.get(i + 1) == Some(&' ');
            let breakable = !spaces
                && col > WIDTH
                && match quoting {
                    Quoting::Plain => !next_space,
                    Quoting::Single => i != first && i + 1 != last && !next_space,
                    Quoting::Double => i != first && i + 1 != last,
                };
            spaces = true;
            if breakable {
                out.push('\n');
                out.extend(std::iter::repeat_n(' ', at));
                col = at;
                if quoting == Quoting::Double && next_space {
                    out.push('\\');
                    col += 1;
                }
                continue;
            }
        } else {
            spaces = false;
        }
        out.push(c);
        col += 1;
    }
    out
}

/// Whether a plain scalar with this text would read back as a number, boolean or null (in
/// YAML 1.2, or as a YAML 1.1 boolean, which go-yaml also quotes).
fn resolves_otherwise(s: &str) -> bool {
    const WORDS: [&str; 28] = [
        "null", "Null", "NULL", "~", "true", "True", "TRUE", "false", "False", "FALSE", "y", "Y",
        "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".nan",
    ];
    if WORDS.contains(&s) || matches!(s, "-.inf" | "+.inf" | ".Inf" | ".INF" | ".NaN" | ".NAN") {
        return true;
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if unsigned.is_empty() {
        return false;
    }
    let digits =
        |t: &str, radix: u32| !t.is_empty() && t.chars().all(|c| c.is_digit(radix) || c == '_');
    if digits(unsigned, 10)
        || unsigned.strip_prefix("0x").is_some_and(|t| digits(t, 16))
        || unsigned.strip_prefix("0o").is_some_and(|t| digits(t, 8))
        || unsigned.strip_prefix("0b").is_some_and(|t| digits(t, 2))
    {
        return true;
    }
    // Floats: 1.5, .5, 1., 1e3, 1.5E-3; and sexagesimal numbers (1:20) that YAML 1.1 reads.
    if unsigned.contains(':')
        && unsigned
            .split(':')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
    {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = {
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let has_digit = whole.chars().any(|c| c.is_ascii_digit())
            || fraction.chars().any(|c| c.is_ascii_digit());
        has_digit
            && whole.chars().all(|c| c.is_ascii_digit() || c == '_')
            && fraction.chars().all(|c| c.is_ascii_digit() || c == '_')
            && (mantissa.contains('.') || exponent.is_some())
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// libyaml's rule for a plain scalar in block context.
fn plain_allowed(s: &str) -> bool {
    let first = s.chars().next().unwrap_or(' ');
    if matches!(
        first,
        '-' | '?'
            | ':'
            | ','
            | '['
            | ']'
            | '{'
            | '}'
            | '#'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) {
        // `-x`, `?x` and `:x` are plain when followed by a non-space.
        let second = s.chars().nth(1);
        let ok = matches!(first, '-' | '?' | ':') && second.is_some_and(|c| c != ' ');
        if !ok {
            return false;
        }
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    !s.chars()
        .any(|c| c.is_control() || c == '\u{feff}' || (c as u32) >= 0x80 && !printable(c))
}

fn printable(c: char) -> bool {
    !matches!(c as u32, 0x80..=0x9f | 0xd800..=0xdfff | 0xfffe | 0xffff)
}

/// Whether libyaml would write this multi-line string as a literal block.
fn literal_allowed(s: &str) -> bool {
    !s.ends_with(' ')
        && !s.contains(" \n")
        && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

fn literal(s: &str, at: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    // Text that starts with a blank says how far it is indented (libyaml's hint).
    let hint = if s.starts_with([' ', '\n']) { "2" } else { "" };
    let mut out = format!("|{hint}{chomp}");
    let body = if trailing == 1 { &s[..s.len() - 1] } else { s };
    let body = if trailing > 1 {
        &body[..body.len() - 1]
    } else {
        body
    };
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', at));
            out.push_str(line);
        }
    }
    out
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || !printable(c) => {
                let code = c as u32;
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02X}"));
                } else {
                    out.push_str(&format!("\\u{code:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_as_kustomize_prints() {
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"labels": {"app": "web", "version": "1.0"}, "name": "web"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"args": ["--port", "8080", "yes", ""], "image": "nginx:1.27", "name": "web",
                 "env": [{"name": "A", "value": "x: y"}, {"name": "B", "value": "#c"}]}
            ]}}, "empty": {}, "none": []}
        });
        let text = to_yaml(&object);
        assert_eq!(
            text,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels:\n    app: web\n    version: \"1.0\"\n  name: web\nspec:\n  empty: {}\n  none: []\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - args:\n        - --port\n        - \"8080\"\n        - \"yes\"\n        - \"\"\n        env:\n        - name: A\n          value: 'x: y'\n        - name: B\n          value: '#c'\n        image: nginx:1.27\n        name: web\n"
        );
    }

    #[test]
    fn keys_sort_as_go_yaml_sorts_them_and_long_strings_fold() {
        let object =
            json!({"ANOTHER": 1, "A_FIRST": 2, "a10": 3, "a9": 4, "b": "x ".repeat(50).trim_end()});
        let text = to_yaml(&object);
        assert!(
            text.starts_with("A_FIRST: 2\nANOTHER: 1\na9: 4\na10: 3\nb: x x"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 83), "{text}");
        assert!(
            text.contains("\n  x x"),
            "continued at two more columns: {text}"
        );
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let object =
            json!({"data": {"a": "one\ntwo\n", "b": "no newline\nat end", "c": "trail  \nx"}});
        assert_eq!(
            to_yaml(&object),
            "data:\n  a: |\n    one\n    two\n  b: |-\n    no newline\n    at end\n  c: \"trail  \\nx\"\n"
        );
    }

    #[test]
    fn numbers_and_words_that_would_change_type_are_quoted() {
        for quoted in [
            "1", "-2", "0x1F", "1.5", "1e3", "true", "on", "null", "~", "1:20",
        ] {
            assert_eq!(
                string_text(quoted, 0, 0, false),
                format!("\"{quoted}\""),
                "{quoted}"
            );
        }
        for plain in [
            "v1",
            "1.2.3",
            "-x",
            "a:b",
            "nginx:1.27",
            "e",
            "10Mi",
            "http://x",
        ] {
            assert_eq!(string_text(plain, 0, 0, false), plain, "{plain}");
        }
    }
}
