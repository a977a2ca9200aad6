//! The crate's one error type.

use std::fmt;

/// Result alias used by every fallible function of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a kernel refused its input.
///
/// Every variant carries the name of the operation (`"conv2d"`, `"max_pool2d"`, …) and a
/// message that names the offending value, e.g.
/// `conv2d: kernel height 3 (dilated 5) exceeds padded input height 4`.
/// Kernels return an `Error` instead of panicking on any bad shape or parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of its domain (stride 0, NaN eps, groups not dividing C, …).
    InvalidParameter {
        /// Operation that rejected it.
        op: &'static str,
        /// What is wrong, naming the value.
        message: String,
    },
    /// A tensor's shape or a slice's length does not match what the operation needs.
    ShapeMismatch {
        /// Operation that rejected it.
        op: &'static str,
        /// What is wrong, naming both shapes.
        message: String,
    },
    /// A size computation overflowed `usize`, or a buffer would exceed the crate's limit.
    TooLarge {
        /// Operation that rejected it.
        op: &'static str,
        /// Which size overflowed.
        message: String,
    },
    /// A caller-provided workspace is smaller than the kernel needs.
    WorkspaceTooSmall {
        /// Operation that rejected it.
        op: &'static str,
        /// Elements needed (see the layer's `workspace_len`).
        required: usize,
        /// Elements provided.
        provided: usize,
    },
    /// An allocation that the allocating convenience API attempted failed.
    AllocationFailed {
        /// Operation that tried to allocate.
        op: &'static str,
        /// Number of elements that could not be allocated.
        elements: usize,
    },
}

impl Error {
    pub(crate) fn param(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            op,
            message: message.into(),
        }
    }
    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::ShapeMismatch {
            op,
            message: message.into(),
        }
    }
    pub(crate) fn too_large(op: &'static str, message: impl Into<String>) -> Self {
        Error::TooLarge {
            op,
            message: message.into(),
        }
    }

    /// The operation that produced the error (`"conv2d"`, `"max_pool2d"`, `"batch_norm"`, …).
    pub fn op(&self) -> &'static str {
        match self {
            Error::InvalidParameter { op, .. }
            | Error::ShapeMismatch { op, .. }
            | Error::TooLarge { op, .. }
            | Error::WorkspaceTooSmall { op, .. }
            | Error::AllocationFailed { op, .. } => op,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidParameter { op, message }
            | Error::ShapeMismatch { op, message }
            | Error::TooLarge { op, message } => write!(f, "{op}: {message}"),
            Error::WorkspaceTooSmall {
                op,
                required,
                provided,
            } => write!(
                f,
                "{op}: workspace has {provided} elements, the kernel needs {required}"
            ),
            Error::AllocationFailed { op, elements } => {
                write!(f, "{op}: could not allocate {elements} elements")
            }
        }
    }
}

impl std::error::Error for Error {}
