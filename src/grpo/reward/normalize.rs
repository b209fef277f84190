//! SQuAD-style text normalization, shared by the explanation and evidence rewards so that both
//! sides of every comparison are tokenized the same way.

/// Calls `f` on each token of `normalize(text)`, in order, reusing `buf` for the token text.
///
/// normalize (DESIGN.md §5): lowercase (per character, Rust's `char::to_lowercase`); every
/// character that is not a letter or digit (`char::is_alphanumeric`, Unicode) or whitespace
/// becomes a space; the words `a`, `an`, `the` are dropped; split on whitespace. A callback
/// instead of a `Vec<String>` keeps scoring allocation-free on the hot path.
pub fn for_each_token(text: &str, buf: &mut String, mut f: impl FnMut(&str)) {
    buf.clear();
    let mut emit = |buf: &mut String| {
        if !buf.is_empty() {
            if !matches!(buf.as_str(), "a" | "an" | "the") {
                f(buf);
            }
            buf.clear();
        }
    };
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                buf.push(c.to_ascii_lowercase());
            } else {
                emit(buf);
            }
        } else {
            for l in c.to_lowercase() {
                if l.is_alphanumeric() {
                    buf.push(l);
                } else {
                    emit(buf);
                }
            }
        }
    }
    emit(buf);
}

/// The tokens of `normalize(text)` as owned strings (reference preparation, tests, docs).
pub fn normalize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = String::new();
    for_each_token(text, &mut buf, |t| out.push(t.to_owned()));
    out
}
