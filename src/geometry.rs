//! Output-size arithmetic shared by every layer, in checked integer arithmetic.
//!
//! `out = (in + 2·pad − dilation·(kernel − 1) − 1) / stride + 1` (floor), per axis.

use crate::error::{Error, Result};

/// The name of an axis, used in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    Height,
    Width,
}

impl Axis {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Axis::Height => "height",
            Axis::Width => "width",
        }
    }
}

/// Number of outputs of a sliding window along one axis.
///
/// Errors (naming `op` and the axis) when `stride` or `dilation` or `kernel` is 0, when a
/// size overflows, or when the dilated kernel does not fit in the padded input.
pub(crate) fn output_len(
    op: &'static str,
    axis: Axis,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Result<usize> {
    let a = axis.name();
    if stride == 0 {
        return Err(Error::param(
            op,
            format!("stride {a} must be at least 1, got 0"),
        ));
    }
    if dilation == 0 {
        return Err(Error::param(
            op,
            format!("dilation {a} must be at least 1, got 0"),
        ));
    }
    if kernel == 0 {
        return Err(Error::shape(op, format!("kernel {a} is 0")));
    }
    if input == 0 {
        return Err(Error::shape(op, format!("input {a} is 0")));
    }
    let effective = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| {
            Error::too_large(
                op,
                format!("kernel {a} {kernel} with dilation {dilation} overflows"),
            )
        })?;
    let padded = pad
        .checked_mul(2)
        .and_then(|v| v.checked_add(input))
        .ok_or_else(|| {
            Error::too_large(
                op,
                format!("input {a} {input} with padding {pad} overflows"),
            )
        })?;
    if effective > padded {
        let dilated = if dilation > 1 {
            format!(" (dilated {effective})")
        } else {
            String::new()
        };
        return Err(Error::shape(
            op,
            format!("kernel {a} {kernel}{dilated} exceeds padded input {a} {padded}"),
        ));
    }
    Ok((padded - effective) / stride + 1)
}

/// Product of `dims`, or an error naming `what` on overflow.
pub(crate) fn checked_product(op: &'static str, what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::too_large(op, format!("{what} {dims:?} overflows usize")))
}

/// Errors if any dimension of `dims` is 0.
pub(crate) fn check_nonempty(op: &'static str, what: &str, dims: &[usize]) -> Result<()> {
    if dims.contains(&0) {
        return Err(Error::shape(
            op,
            format!("{what} {dims:?} has an empty dimension"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_len_matches_formula() {
        assert_eq!(output_len("t", Axis::Height, 7, 3, 2, 1, 1).unwrap(), 4);
        assert_eq!(output_len("t", Axis::Width, 5, 3, 1, 1, 1).unwrap(), 5);
        assert_eq!(output_len("t", Axis::Width, 9, 3, 1, 2, 2).unwrap(), 9);
        assert_eq!(output_len("t", Axis::Width, 1, 1, 3, 0, 1).unwrap(), 1);
    }

    #[test]
    fn output_len_errors_name_values() {
        let e = output_len("conv2d", Axis::Height, 2, 3, 1, 1, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conv2d: kernel height 3 (dilated 5) exceeds padded input height 4"
        );
        assert!(output_len("conv2d", Axis::Width, 4, 3, 0, 1, 1)
            .unwrap_err()
            .to_string()
            .contains("stride width"));
        assert!(output_len("c", Axis::Width, usize::MAX, 3, 1, 1, 1).is_err());
        assert!(output_len("c", Axis::Width, 5, usize::MAX, 1, 1, 2).is_err());
    }
}
