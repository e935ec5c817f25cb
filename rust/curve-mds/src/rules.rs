//! The MDS's pure admission rules for file geometry: Create's length rules, Extend's growth
//! rules and the stripe constraints (reference §8.2, §13). No store access happens here, so
//! every rule is unit-tested on its own.

use curve_proto::mds::StatusCode;

use crate::MdsOptions;

/// Stripe units must align to this many bytes.
const STRIPE_UNIT_ALIGN: u64 = 4096;

/// Create's length rule: within [min, max], whole segments, and room left in the pool.
pub(crate) fn check_create_length(
    options: &MdsOptions,
    length: u64,
    pool_free: u64,
) -> Result<(), StatusCode> {
    let segment = u64::from(options.segment_size);
    if length < options.min_file_length
        || length > options.max_file_length
        || segment == 0
        || !length.is_multiple_of(segment)
        || length > pool_free
    {
        return Err(StatusCode::KFileLengthNotSupported);
    }
    Ok(())
}

/// What Extend does to a file of `length` asked to become `new_size`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Extension {
    /// Same size: nothing to write.
    Unchanged,
    /// Grows by this many bytes.
    Grow(u64),
}

/// Extend's rules: grow only, by whole segments, not past max length nor the pool's free space.
pub(crate) fn check_extend(
    options: &MdsOptions,
    length: u64,
    new_size: u64,
    pool_free: u64,
) -> Result<Extension, StatusCode> {
    if new_size > options.max_file_length {
        return Err(StatusCode::KFileLengthNotSupported);
    }
    if new_size < length {
        return Err(StatusCode::KShrinkBiggerFile);
    }
    if new_size == length {
        return Ok(Extension::Unchanged);
    }
    let delta = new_size - length;
    let segment = u64::from(options.segment_size);
    if segment == 0 || !delta.is_multiple_of(segment) {
        return Err(StatusCode::KExtentUnitError);
    }
    if delta > pool_free {
        return Err(StatusCode::KFileLengthNotSupported);
    }
    Ok(Extension::Grow(delta))
}

/// The MDS's stripe constraints; both zero means "not striped".
pub(crate) fn check_stripe(
    options: &MdsOptions,
    stripe_unit: u64,
    stripe_count: u64,
) -> Result<(), StatusCode> {
    if stripe_unit == 0 && stripe_count == 0 {
        return Ok(());
    }
    let chunk = u64::from(options.chunk_size);
    let segment = u64::from(options.segment_size);
    let ok = stripe_unit != 0
        && stripe_count != 0
        && stripe_unit <= chunk
        && chunk.is_multiple_of(stripe_unit)
        && chunk.is_multiple_of(stripe_count)
        && stripe_unit.is_multiple_of(STRIPE_UNIT_ALIGN)
        && chunk != 0
        && stripe_count <= segment / chunk
        // One stripe per chunk is only "not striped" when the unit is the whole chunk.
        && (stripe_count != 1 || stripe_unit == chunk);
    if ok {
        Ok(())
    } else {
        Err(StatusCode::KParaError)
    }
}

/// Upstream's SetCloneFileStatus transitions (`CurveFS::SetCloneFileStatus`): whether a file
/// in status `from` may be set to `to`. Setting the status it has is always allowed.
pub(crate) fn clone_status_may_change(
    from: curve_proto::mds::FileStatus,
    to: curve_proto::mds::FileStatus,
) -> bool {
    use curve_proto::mds::FileStatus as F;
    match from {
        F::KFileCloning => matches!(to, F::KFileCloning | F::KFileCloneMetaInstalled),
        F::KFileCloneMetaInstalled => matches!(to, F::KFileCloneMetaInstalled | F::KFileCloned),
        F::KFileCloned => matches!(to, F::KFileCloned | F::KFileBeingCloned),
        F::KFileCreated => matches!(to, F::KFileCreated | F::KFileBeingCloned),
        F::KFileBeingCloned => {
            matches!(to, F::KFileBeingCloned | F::KFileCreated | F::KFileCloned)
        }
        F::KFileDeleting => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn opts() -> MdsOptions {
        MdsOptions::default()
    }

    #[test]
    fn create_lengths() {
        let o = opts();
        let free = 100 * GIB;
        assert_eq!(check_create_length(&o, 10 * GIB, free), Ok(()));
        assert_eq!(check_create_length(&o, 11 * GIB, free), Ok(()));
        for bad in [0, GIB, 9 * GIB, 10 * GIB + 4096, 10 * GIB + GIB / 2] {
            assert_eq!(
                check_create_length(&o, bad, free),
                Err(StatusCode::KFileLengthNotSupported),
                "{bad}"
            );
        }
        assert_eq!(
            check_create_length(&o, o.max_file_length + GIB, u64::MAX),
            Err(StatusCode::KFileLengthNotSupported)
        );
        assert_eq!(check_create_length(&o, o.max_file_length, u64::MAX), Ok(()));
    }

    #[test]
    fn create_respects_pool_room() {
        let o = opts();
        assert_eq!(check_create_length(&o, 20 * GIB, 20 * GIB), Ok(()));
        assert_eq!(
            check_create_length(&o, 21 * GIB, 20 * GIB),
            Err(StatusCode::KFileLengthNotSupported)
        );
    }

    #[test]
    fn extend_rules() {
        let o = opts();
        let free = 100 * GIB;
        assert_eq!(
            check_extend(&o, 10 * GIB, 10 * GIB, free),
            Ok(Extension::Unchanged)
        );
        assert_eq!(
            check_extend(&o, 10 * GIB, 12 * GIB, free),
            Ok(Extension::Grow(2 * GIB))
        );
        assert_eq!(
            check_extend(&o, 10 * GIB, 9 * GIB, free),
            Err(StatusCode::KShrinkBiggerFile)
        );
        assert_eq!(
            check_extend(&o, 10 * GIB, 10 * GIB + 4096, free),
            Err(StatusCode::KExtentUnitError)
        );
        assert_eq!(
            check_extend(&o, 10 * GIB, o.max_file_length + GIB, u64::MAX),
            Err(StatusCode::KFileLengthNotSupported)
        );
        assert_eq!(
            check_extend(&o, 10 * GIB, 20 * GIB, 5 * GIB),
            Err(StatusCode::KFileLengthNotSupported)
        );
    }

    #[test]
    fn stripes() {
        let o = opts();
        assert_eq!(check_stripe(&o, 0, 0), Ok(()));
        assert_eq!(check_stripe(&o, 1 << 20, 4), Ok(()));
        assert_eq!(check_stripe(&o, 16 << 20, 1), Ok(()));
        assert_eq!(check_stripe(&o, 4096, 64), Ok(()));
        for (unit, count) in [
            (0, 4),
            (1 << 20, 0),
            (32 << 20, 2),
            (3 << 20, 2),
            (2048, 2),
            (1 << 20, 3),
            (1 << 20, 128),
            (1 << 20, 1),
        ] {
            assert_eq!(
                check_stripe(&o, unit, count),
                Err(StatusCode::KParaError),
                "{unit} {count}"
            );
        }
    }

    #[test]
    fn clone_statuses_follow_upstreams_transitions() {
        use curve_proto::mds::FileStatus as F;
        // A clone: Cloning -> CloneMetaInstalled -> Cloned, never back.
        assert!(clone_status_may_change(
            F::KFileCloning,
            F::KFileCloneMetaInstalled
        ));
        assert!(clone_status_may_change(
            F::KFileCloneMetaInstalled,
            F::KFileCloned
        ));
        assert!(!clone_status_may_change(F::KFileCloning, F::KFileCloned));
        assert!(!clone_status_may_change(
            F::KFileCloned,
            F::KFileCloneMetaInstalled
        ));
        // A source: Created <-> BeingCloned, Cloned -> BeingCloned -> Cloned.
        assert!(clone_status_may_change(
            F::KFileCreated,
            F::KFileBeingCloned
        ));
        assert!(clone_status_may_change(
            F::KFileBeingCloned,
            F::KFileCreated
        ));
        assert!(clone_status_may_change(F::KFileCloned, F::KFileBeingCloned));
        assert!(clone_status_may_change(F::KFileBeingCloned, F::KFileCloned));
        // No chains: a clone still reading its source cannot be a source.
        assert!(!clone_status_may_change(
            F::KFileCloneMetaInstalled,
            F::KFileBeingCloned
        ));
        assert!(!clone_status_may_change(
            F::KFileCloning,
            F::KFileBeingCloned
        ));
        assert!(!clone_status_may_change(F::KFileDeleting, F::KFileCreated));
    }
}
