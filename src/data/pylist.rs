//! Parser for list fields that arrive as stringified Python lists (`"['a.png', 'b.png']"`),
//! as some ReXVQA exports store them; accepting both forms avoids a preprocessing pass.

use crate::clip::clip_quoted;

/// Parses a Python list literal of string items (single or double quotes, backslash
/// escapes). A text that does not start with `[` is taken as one bare item, because some
/// exports write a single path without brackets. Returns the reason on malformed input,
/// naming the text (clipped: a field can be megabytes long).
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
            return Err(format!("unterminated list literal {}", clip_quoted(text)));
        }
        if chars[i] == ']' {
            i += 1;
            break;
        }
        let quote = chars[i];
        if quote != '\'' && quote != '"' {
            return Err(format!(
                "list item is not a quoted string at character {i} of {}",
                clip_quoted(text)
            ));
        }
        i += 1;
        let mut item = String::new();
        loop {
            if i >= chars.len() {
                return Err(format!(
                    "unterminated string in list literal {}",
                    clip_quoted(text)
                ));
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
            return Err(format!("unterminated list literal {}", clip_quoted(text)));
        } else {
            return Err(format!(
                "expected `,` or `]` at character {i} of {}",
                clip_quoted(text)
            ));
        }
    }
    skip_ws(&mut i);
    if i != chars.len() {
        return Err(format!(
            "text after the closing `]` in {}",
            clip_quoted(text)
        ));
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

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::parse_py_str_list;
        use crate::clip::clip_quoted;

        /// Text made of the characters a list literal is made of, so most cases are near
        /// misses (an escape at the end, a quote inside the other quotes, text after `]`).
        fn near_list() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,40}",
                "\\[[ '\",\\\\a-z\\]\\[]{0,40}",
                "[ ]{0,2}\\[[ '\",\\\\a.]{0,12}\\][ x]{0,2}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Never panics, and every error quotes the text it was given (clipped).
            #[test]
            fn never_panics_and_errors_name_the_text(text in near_list()) {
                if let Err(e) = parse_py_str_list(&text) {
                    prop_assert!(e.contains(&clip_quoted(&text)), "{e} does not name {text:?}");
                }
            }

            /// A list written the way Python prints one reads back as its items.
            #[test]
            fn python_lists_read_back(
                items in vec("[a-zA-Z0-9 ./_()-]{0,12}", 0..6),
                double in any::<bool>(),
            ) {
                let q = if double { '"' } else { '\'' };
                let body: Vec<String> = items.iter().map(|i| format!("{q}{i}{q}")).collect();
                let text = format!("[{}]", body.join(", "));
                prop_assert_eq!(parse_py_str_list(&text).unwrap(), items);
            }
        }
    }
}
