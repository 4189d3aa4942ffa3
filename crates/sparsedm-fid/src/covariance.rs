//! A covariance must be symmetric and positive semi-definite: anything else
//! (an edited or corrupt statistics file, a matrix written transposed or
//! negated) makes the Fréchet distance meaningless — negative, or a number
//! computed from the symmetrised part of a matrix that is not a covariance.
//! [`check_covariance`] refuses such a matrix with its worst entry or its
//! most negative eigenvalue; tolerances admit round-off (including float32
//! storage), never a real violation.

use crate::error::{FidError, Result};
use crate::frechet::eigh;
use faer::Mat;

/// Largest asymmetry `|S_ij − S_ji|` accepted, relative to `max |S|`.
pub const SYMMETRY_TOLERANCE: f64 = 1e-5;
/// Most negative eigenvalue accepted, relative to the largest `|λ|`.
pub const PSD_TOLERANCE: f64 = 1e-4;

/// Checks that the row-major `d × d` matrix `sigma` (named `what`) is
/// symmetric and positive semi-definite within the tolerances above.
///
/// # Errors
/// [`FidError::InvalidArgument`] naming the matrix and the violation.
pub fn check_covariance(sigma: &[f64], d: usize, what: &str) -> Result<()> {
    let scale = sigma.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = (0.0f64, 0, 0);
    for i in 0..d {
        for j in i + 1..d {
            let gap = (sigma[i * d + j] - sigma[j * d + i]).abs();
            if gap > worst.0 {
                worst = (gap, i, j);
            }
        }
    }
    if worst.0 > SYMMETRY_TOLERANCE * scale {
        let (gap, i, j) = worst;
        return Err(FidError::invalid(
            "sigma",
            format!(
                "the covariance of {what} is not symmetric: sigma[{i}][{j}] = {} but sigma[{j}][{i}] = {} (difference {gap:e})",
                sigma[i * d + j],
                sigma[j * d + i]
            ),
        ));
    }
    let m = Mat::<f64>::from_fn(d, d, |i, j| sigma[i * d + j]);
    let (lambda, _) = eigh(m.as_ref(), false, "a covariance")?;
    let max_abs = lambda.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let min = lambda.iter().copied().fold(f64::INFINITY, f64::min);
    if min < -(PSD_TOLERANCE * max_abs) {
        return Err(FidError::invalid(
            "sigma",
            format!(
                "the covariance of {what} is not positive semi-definite: eigenvalue {min:e} (largest |eigenvalue| {max_abs:e}); it is not a covariance matrix"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covariances_are_accepted_and_impostors_refused() {
        // A covariance of 3 samples in 2-d (singular is fine).
        check_covariance(&[2.0, 1.0, 1.0, 0.5], 2, "ok").unwrap();
        check_covariance(&[0.0; 4], 2, "zero").unwrap();
        let e = check_covariance(&[1.0, 0.5, -0.5, 1.0], 2, "A").unwrap_err().to_string();
        assert!(e.contains("not symmetric") && e.contains("sigma[0][1]"), "{e}");
        let e = check_covariance(&[-1.0, 0.0, 0.0, -2.0], 2, "B").unwrap_err().to_string();
        assert!(e.contains("not positive semi-definite"), "{e}");
        // Indefinite: eigenvalues 3 and -1.
        assert!(check_covariance(&[1.0, 2.0, 2.0, 1.0], 2, "C").is_err());
    }
}
