//! Group-relative advantages (TRL rule).
