//! The checkers of the fuzz targets (`fuzz/checks/`), as a library for the targets.

#[path = "../checks/mod.rs"]
mod checks;

pub use checks::*;
