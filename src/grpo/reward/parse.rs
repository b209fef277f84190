//! Reading a completion: its SOLUTION, answer letter, reasoning and format, by hand-written
//! scanning that follows DESIGN.md §5 word for word (no regex: exact and allocation-free).
//!
//! "Whitespace" is Unicode `White_Space` (Rust's `char::is_whitespace`, `str::trim`)
//! everywhere; tags are case-sensitive.

/// Opens the reasoning block.
pub const WORK_START: &str = "<start_working_out>";
/// Closes the reasoning block.
pub const WORK_END: &str = "<end_working_out>";
/// Opens the answer block.
pub const SOLUTION_START: &str = "<SOLUTION>";
/// Closes the answer block.
pub const SOLUTION_END: &str = "</SOLUTION>";

/// The four tags, in the order a well-formed completion uses them.
pub const TAGS: [&str; 4] = [WORK_START, WORK_END, SOLUTION_START, SOLUTION_END];

/// Content of the first `open … close` block: from the first `open` to the first `close`
/// after it (what the lazy regex `open(.*?)close` with dot-all finds), untrimmed.
pub fn first_block<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// The answer: the first `<SOLUTION>…</SOLUTION>` block's content, trimmed; `None` when
/// there is no complete block (an empty block gives `Some("")`).
pub fn solution(completion: &str) -> Option<&str> {
    first_block(completion, SOLUTION_START, SOLUTION_END).map(str::trim)
}

/// An optional `(`, then a letter A–J (either case) not followed by a letter or digit, at the
/// very start of `s`: the letter (upper case) and the byte offset just after it.
pub fn leading_letter(s: &str) -> Option<(char, usize)> {
    let start = usize::from(s.starts_with('('));
    let c = s[start..].chars().next()?;
    if !matches!(c, 'A'..='J' | 'a'..='j') {
        return None;
    }
    let after = start + 1;
    match s[after..].chars().next() {
        Some(n) if n.is_alphanumeric() => None,
        _ => Some((c.to_ascii_uppercase(), after)),
    }
}

/// Whether the text right after a leading letter continues a list of letters: an optional
/// `)` or `.`, whitespace, a separator (`,` `/` `&` `and` `or`, the words in any case),
/// whitespace, then another leading letter (optional `(`, A–J, not followed by a letter or
/// digit). This is the guard that keeps "A and B", "B/C", "(A), (B)" from scoring.
pub fn continues_letter_list(rest: &str) -> bool {
    let rest = rest
        .strip_prefix(')')
        .or_else(|| rest.strip_prefix('.'))
        .unwrap_or(rest)
        .trim_start();
    let after_sep = if let Some(r) = rest.strip_prefix([',', '/', '&']) {
        r
    } else if starts_with_ignore_ascii_case(rest, "and") {
        &rest[3..]
    } else if starts_with_ignore_ascii_case(rest, "or") {
        &rest[2..]
    } else {
        return false;
    };
    leading_letter(after_sep.trim_start()).is_some()
}

fn starts_with_ignore_ascii_case(s: &str, word: &str) -> bool {
    s.len() >= word.len()
        && s.is_char_boundary(word.len())
        && s[..word.len()].eq_ignore_ascii_case(word)
}

/// The answer letter of a (trimmed) solution, upper case; `None` when the solution does not
/// start with a single letter or starts with a list of letters.
pub fn letter(solution: &str) -> Option<char> {
    let (c, after) = leading_letter(solution)?;
    (!continues_letter_list(&solution[after..])).then_some(c)
}

/// The solution with its leading answer removed when it starts with one: optional `(`,
/// a letter A–J not followed by a letter or digit, and the run of `)`, `.`, `-`, `:` and
/// whitespace right after it. "B - left effusion" -> "left effusion".
pub fn strip_leading_answer(solution: &str) -> &str {
    match leading_letter(solution) {
        Some((_, after)) => solution[after..]
            .trim_start_matches(|c: char| matches!(c, ')' | '.' | '-' | ':') || c.is_whitespace()),
        None => solution,
    }
}

/// Where the reasoning text comes from: either the two blocks (the working-out content,
/// then the solution without its leading answer, joined by a space) or, when the completion
/// has neither block, the whole completion with every tag removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reasoning<'a> {
    /// At least one complete block: (working-out content or "", stripped solution or "").
    Blocks(&'a str, &'a str),
    /// Neither block: the completion with all four tags removed.
    Untagged(String),
}

impl Reasoning<'_> {
    /// The reasoning as one string, exactly as DESIGN.md §5 defines it.
    pub fn text(&self) -> String {
        match self {
            Reasoning::Blocks(w, s) => format!("{w} {s}"),
            Reasoning::Untagged(t) => t.clone(),
        }
    }
}

/// Splits a completion into its reasoning (see [`Reasoning`]).
pub fn reasoning(completion: &str) -> Reasoning<'_> {
    let work = first_block(completion, WORK_START, WORK_END);
    let sol = solution(completion);
    if work.is_none() && sol.is_none() {
        let mut t = completion.to_owned();
        for tag in TAGS {
            if t.contains(tag) {
                t = t.replace(tag, "");
            }
        }
        return Reasoning::Untagged(t);
    }
    Reasoning::Blocks(
        work.unwrap_or(""),
        sol.map(strip_leading_answer).unwrap_or(""),
    )
}

/// The format rule: the completion matches
/// `^\s*<start_working_out>(.+?)<end_working_out>\s*<SOLUTION>(.+?)</SOLUTION>\s*$`
/// (dot-all), each of the four tags occurs exactly once, and both contents are non-empty
/// after trimming. With every tag unique, the regex reduces to the positional checks below.
pub fn well_formed(completion: &str) -> bool {
    if TAGS.iter().any(|t| completion.matches(t).count() != 1) {
        return false;
    }
    let t = completion.trim();
    let (Some(body), true) = (t.strip_prefix(WORK_START), t.ends_with(SOLUTION_END)) else {
        return false;
    };
    let body = &body[..body.len() - SOLUTION_END.len()];
    let (Some(we), Some(ss)) = (body.find(WORK_END), body.find(SOLUTION_START)) else {
        return false;
    };
    let gap_start = we + WORK_END.len();
    if ss < gap_start || !body[gap_start..ss].trim().is_empty() {
        return false;
    }
    let work = &body[..we];
    let sol = &body[ss + SOLUTION_START.len()..];
    !work.trim().is_empty() && !sol.trim().is_empty()
}

#[cfg(test)]
mod tests;
