//! The fast entry points under test, one name per family, so the checkers read
//! `conv::forward(…)` for the fast path next to `naive::forward(…)`.

pub use cnn_kernels::{conv, norm, pool};
