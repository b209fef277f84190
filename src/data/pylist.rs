//! Parser for list fields that arrive as stringified Python lists (`"['a.png', 'b.png']"`),
//! as some ReXVQA exports store them; accepting both forms avoids a preprocessing pass.

/// Parses a Python list literal of string items (single or double quotes, backslash
/// escapes). A text that does not start with `[` is taken as one bare item, because some
/// exports write a single path without brackets. Returns the reason on malformed input.
pub fn parse_py_str_list(text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    if !t.starts_with('[') {
        return if t.is_empty() {
            Ok(Vec::new())
        } else {
            Ok(vec![t.to_string()])
        };
    }
    let chars: Vec<char> = t.chars().collect();
    let mut i = 1;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            return Err(format!("unterminated list literal {text:?}"));
        }
        if chars[i] == ']' {
            i += 1;
            break;
        }
        let quote = chars[i];
        if quote != '\'' && quote != '"' {
            return Err(format!(
                "list item is not a quoted string at character {i} of {text:?}"
            ));
        }
        i += 1;
        let mut item = String::new();
        loop {
            if i >= chars.len() {
                return Err(format!("unterminated string in list literal {text:?}"));
            }
            let c = chars[i];
            if c == '\\' && i + 1 < chars.len() {
                let n = chars[i + 1];
                item.push(match n {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                i += 2;
                continue;
            }
            i += 1;
            if c == quote {
                break;
            }
            item.push(c);
        }
        out.push(item);
        skip_ws(&mut i);
        if i < chars.len() && chars[i] == ',' {
            i += 1;
        } else if i < chars.len() && chars[i] == ']' {
            i += 1;
            break;
        } else if i >= chars.len() {
            return Err(format!("unterminated list literal {text:?}"));
        } else {
            return Err(format!("expected `,` or `]` at character {i} of {text:?}"));
        }
    }
    skip_ws(&mut i);
    if i != chars.len() {
        return Err(format!("text after the closing `]` in {text:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_py_str_list;

    #[test]
    fn parses_python_lists() {
        assert_eq!(
            parse_py_str_list("['a.png', \"b c.png\"]").unwrap(),
            vec!["a.png", "b c.png"]
        );
        assert_eq!(parse_py_str_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(parse_py_str_list(" ['x',] ").unwrap(), vec!["x"]);
        assert_eq!(parse_py_str_list(r"['it\'s']").unwrap(), vec!["it's"]);
        assert_eq!(parse_py_str_list("a.png").unwrap(), vec!["a.png"]);
    }

    #[test]
    fn rejects_malformed_lists() {
        assert!(parse_py_str_list("['a.png'").is_err());
        assert!(parse_py_str_list("[a.png]").is_err());
        assert!(parse_py_str_list("['a' 'b']").is_err());
        assert!(parse_py_str_list("['a'] x").is_err());
    }
}
