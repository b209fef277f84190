//! Bounds on what an error message echoes back: a value read from a user's file (a question,
//! a path, a config string) can be megabytes long, and an error that repeats it whole floods
//! the terminal and the logs while hiding the part that says what went wrong.

/// Longest value (in characters) an error echoes whole.
pub const MAX_ECHO: usize = 120;

/// Longest error message (in characters) kept whole by [`clip_message`].
pub const MAX_MESSAGE: usize = 600;

/// `value` as an error shows it: itself when short, else its first [`MAX_ECHO`] characters,
/// an ellipsis and its full length in bytes, so two long values stay distinguishable.
pub fn clip(value: &str) -> String {
    clip_to(value, MAX_ECHO)
}

/// `{:?}` of [`clip`]: quoted and escaped, for values whose whitespace matters.
pub fn clip_quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// A whole error message kept to about [`MAX_MESSAGE`] characters: its start and its end
/// (where parsers put "expected …" and the position) around the dropped middle. For messages
/// that embed a value this crate did not format itself (serde's `invalid type: string "…"`).
pub fn clip_message(message: &str) -> String {
    let n = message.chars().count();
    if n <= MAX_MESSAGE {
        return message.to_string();
    }
    let head = MAX_MESSAGE * 2 / 3;
    let tail = MAX_MESSAGE - head;
    let start: String = message.chars().take(head).collect();
    let end: String = message.chars().skip(n - tail).collect();
    format!(
        "{start} … [{} characters left out] … {end}",
        n - head - tail
    )
}

/// Longest single message of an error chain kept whole by [`error_chain`].
const MAX_CHAIN_PART: usize = 4000;

/// An error and its causes as `outer: cause: …` (what `{:#}` prints), with two repairs: a
/// cause whose text is already the end of the message before it is left out (safetensors'
/// I/O error prints its `io::Error` and also returns it as its source, so a full disk during
/// a checkpoint save read "No space left on device" twice), and each part is clipped.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|prev| prev.ends_with(&text)) {
            continue;
        }
        parts.push(clip_to(&text, MAX_CHAIN_PART));
    }
    parts.join(": ")
}

fn clip_to(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_and_long_ones_cut_on_a_char_boundary() {
        assert_eq!(clip("abc"), "abc");
        assert_eq!(clip_quoted("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(10_000_000 / 2);
        let c = clip(&long);
        assert!(c.chars().count() < MAX_ECHO + 30, "{}", c.len());
        assert!(c.ends_with("… (10000000 bytes)"), "{c}");
        let q = clip_quoted(&long);
        assert!(q.len() < 2 * MAX_ECHO + 40 && q.ends_with("(10000000 bytes)"));
    }

    /// A full disk under safetensors (a checkpoint save): its I/O error is both in its
    /// message and its source.
    #[test]
    fn a_cause_repeated_by_its_wrapper_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::new(safetensors::SafeTensorError::IoError(io))
            .context("writing runs/x/checkpoint-3/adapter_model.safetensors");
        let full = format!("{e:#}");
        assert_eq!(full.matches("No space left on device").count(), 2, "{full}");
        assert_eq!(
            error_chain(&e),
            "writing runs/x/checkpoint-3/adapter_model.safetensors: I/O error: No space left on device (os error 28)"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }

    #[test]
    fn long_messages_keep_their_start_and_end() {
        let m = format!(
            "invalid type: string \"{}\", expected f64",
            "x".repeat(1 << 20)
        );
        let c = clip_message(&m);
        assert!(c.starts_with("invalid type: string \"xxx"));
        assert!(c.ends_with("\", expected f64"));
        assert!(c.chars().count() < MAX_MESSAGE + 60, "{}", c.len());
        assert_eq!(clip_message("short"), "short");
    }
}
