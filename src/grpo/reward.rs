//! The five reward components and their weighted sum.
