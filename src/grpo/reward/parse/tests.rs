//! Property tests of the completion scanner: it reads model output, which can be anything, so
//! no input may make it panic (a slice off a char boundary, an index past the end), and its
//! answers must agree with each other.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Completions built from the pieces the scanner looks for (tags, letters, separators, the
/// words `and`/`or`) and arbitrary Unicode between them, so tags and letters meet in every
/// order and next to multi-byte characters.
fn completion() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(WORK_START.to_string()),
        Just(WORK_END.to_string()),
        Just(SOLUTION_START.to_string()),
        Just(SOLUTION_END.to_string()),
        "[A-Ja-jKz(). ,/&:-]{0,3}",
        "( and | or |AND|Or|\u{a0}|\n)",
        "\\PC{0,6}",
    ];
    vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every function of the scanner on any completion: no panic, and the invariants that
    /// tie them together.
    #[test]
    fn never_panics_and_agrees_with_itself(c in completion()) {
        let sol = solution(&c);
        if let Some(s) = sol {
            prop_assert_eq!(s, s.trim());
            if let Some(l) = letter(s) {
                prop_assert!(l.is_ascii_uppercase() && ('A'..='J').contains(&l));
                prop_assert_eq!(leading_letter(s).map(|x| x.0), Some(l));
            }
            let rest = strip_leading_answer(s);
            prop_assert!(s.ends_with(rest));
        }
        let r = reasoning(&c);
        let _ = r.text();
        if well_formed(&c) {
            prop_assert!(sol.is_some_and(|s| !s.is_empty()));
            prop_assert!(matches!(r, Reasoning::Blocks(w, _) if !w.trim().is_empty()));
        }
        if sol.is_none() && first_block(&c, WORK_START, WORK_END).is_none() {
            prop_assert!(matches!(r, Reasoning::Untagged(_)));
        }
    }

    /// `leading_letter` on any short text: its offset is a char boundary inside the text.
    #[test]
    fn leading_letter_offsets_are_char_boundaries(s in "\\PC{0,4}") {
        if let Some((c, after)) = leading_letter(&s) {
            prop_assert!(c.is_ascii_uppercase());
            prop_assert!(after <= s.len() && s.is_char_boundary(after));
            let _ = continues_letter_list(&s[after..]);
        }
    }
}
