//! The one error type of the client core. Every failure carries a `LIBCURVE_ERROR` code so
//! the binding can hand Python the same negative integers the SWIG SDK returned; the
//! mapping from MDS and chunkserver status codes lives here and nowhere else.

use curve_proto::chunkserver::ChunkOpStatus;
use curve_proto::mds::StatusCode;

/// Curve's `LIBCURVE_ERROR` values (positive; the SDK returns them negated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    Exists = 1,
    Failed = 2,
    DisableIo = 3,
    AuthFail = 4,
    Deleting = 5,
    NotExist = 6,
    UnderSnapshot = 7,
    NotUnderSnapshot = 8,
    DeleteError = 9,
    NotAllocate = 10,
    NotSupport = 11,
    NotEmpty = 12,
    NoShrinkBiggerFile = 13,
    SessionNotExists = 14,
    FileOccupied = 15,
    ParamError = 16,
    InternalError = 17,
    CrcError = 18,
    InvalidRequest = 19,
    DiskFail = 20,
    NoSpace = 21,
    NotAligned = 22,
    BadFd = 23,
    LengthNotSupport = 24,
    SessionNotExist = 25,
    StatusNotMatch = 26,
    DeleteBeingCloned = 27,
    ClientNotSupportSnapshot = 28,
    SnapshotFrozen = 29,
    RetryUntilSuccess = 30,
    EpochTooOld = 31,
    Unknown = 100,
}

/// Every code with upstream's `LIBCURVE_ERROR` name (its spelling, SNAPSTHO_FROZEN
/// included): the one table the binding's `CURVE_ERROR_*` constants, its `ERROR_NAMES` and
/// the Python exception classes are checked against.
pub const SDK_CODES: &[(ErrorCode, &str)] = &[
    (ErrorCode::Exists, "EXISTS"),
    (ErrorCode::Failed, "FAILED"),
    (ErrorCode::DisableIo, "DISABLEIO"),
    (ErrorCode::AuthFail, "AUTHFAIL"),
    (ErrorCode::Deleting, "DELETING"),
    (ErrorCode::NotExist, "NOTEXIST"),
    (ErrorCode::UnderSnapshot, "UNDER_SNAPSHOT"),
    (ErrorCode::NotUnderSnapshot, "NOT_UNDERSNAPSHOT"),
    (ErrorCode::DeleteError, "DELETE_ERROR"),
    (ErrorCode::NotAllocate, "NOT_ALLOCATE"),
    (ErrorCode::NotSupport, "NOT_SUPPORT"),
    (ErrorCode::NotEmpty, "NOT_EMPTY"),
    (ErrorCode::NoShrinkBiggerFile, "NO_SHRINK_BIGGER_FILE"),
    (ErrorCode::SessionNotExists, "SESSION_NOTEXISTS"),
    (ErrorCode::FileOccupied, "FILE_OCCUPIED"),
    (ErrorCode::ParamError, "PARAM_ERROR"),
    (ErrorCode::InternalError, "INTERNAL_ERROR"),
    (ErrorCode::CrcError, "CRC_ERROR"),
    (ErrorCode::InvalidRequest, "INVALID_REQUEST"),
    (ErrorCode::DiskFail, "DISK_FAIL"),
    (ErrorCode::NoSpace, "NO_SPACE"),
    (ErrorCode::NotAligned, "NOT_ALIGNED"),
    (ErrorCode::BadFd, "BAD_FD"),
    (ErrorCode::LengthNotSupport, "LENGTH_NOT_SUPPORT"),
    (ErrorCode::SessionNotExist, "SESSION_NOT_EXIST"),
    (ErrorCode::StatusNotMatch, "STATUS_NOT_MATCH"),
    (ErrorCode::DeleteBeingCloned, "DELETE_BEING_CLONED"),
    (
        ErrorCode::ClientNotSupportSnapshot,
        "CLIENT_NOT_SUPPORT_SNAPSHOT",
    ),
    (ErrorCode::SnapshotFrozen, "SNAPSTHO_FROZEN"),
    (ErrorCode::RetryUntilSuccess, "RETRY_UNTIL_SUCCESS"),
    (ErrorCode::EpochTooOld, "EPOCH_TOO_OLD"),
    (ErrorCode::Unknown, "UNKNOWN"),
];

impl ErrorCode {
    /// Upstream's name, e.g. "NOTEXIST".
    pub fn name(self) -> &'static str {
        SDK_CODES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("UNKNOWN", |(_, n)| n)
    }
}

/// Why a call gave up, beyond its code: the SDK's codes do not say whether the cluster
/// answered, so callers that map errors to `TimeoutError`/`ConnectionError` read this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    /// A server's answer (or a local check) decided it.
    #[default]
    Answered,
    /// The call's time budget ran out while requests went unanswered.
    TimedOut,
    /// The budget ran out while the servers could not be reached at all.
    Unreachable,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub cause: Cause,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: Cause::Answered,
        }
    }

    /// The same error, marked with why the call gave up.
    pub fn because(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }

    /// The value the SWIG SDK returned to Python for this error: `-(code)`.
    pub fn sdk_code(&self) -> i32 {
        -(self.code as i32)
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Failed, message)
    }

    pub(crate) fn param(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ParamError, message)
    }

    pub(crate) fn bad_fd(fd: i32) -> Self {
        Self::new(ErrorCode::BadFd, format!("fd {fd} is not open"))
    }

    /// An MDS status turned into an error with the generic mapping (§7.1); `what` names
    /// the call for the message.
    pub(crate) fn from_mds(status: StatusCode, what: &str) -> Self {
        Self::new(
            mds_status_to_code(status),
            format!("{what}: MDS answered {}", status.as_str_name()),
        )
    }
}

/// The generic MDS `StatusCode` → `LIBCURVE_ERROR` table (protocol §7.1). `kOK` has no
/// error; callers check for it first, and it maps to `Unknown` here only so the function
/// stays total.
pub fn mds_status_to_code(status: StatusCode) -> ErrorCode {
    use StatusCode as S;
    match status {
        S::KFileExists => ErrorCode::Exists,
        S::KFileNotExists | S::KDirNotExist | S::KSnapshotFileNotExists | S::KPoolsetNotExist => {
            ErrorCode::NotExist
        }
        S::KSegmentNotAllocated => ErrorCode::NotAllocate,
        S::KShrinkBiggerFile => ErrorCode::NoShrinkBiggerFile,
        S::KNotSupported => ErrorCode::NotSupport,
        S::KOwnerAuthFail => ErrorCode::AuthFail,
        S::KSnapshotFileDeleteError => ErrorCode::DeleteError,
        S::KFileUnderSnapShot => ErrorCode::UnderSnapshot,
        S::KFileNotUnderSnapShot => ErrorCode::NotUnderSnapshot,
        S::KSnapshotDeleting => ErrorCode::Deleting,
        S::KDirNotEmpty => ErrorCode::NotEmpty,
        S::KFileOccupied => ErrorCode::FileOccupied,
        S::KSessionNotExist => ErrorCode::SessionNotExist,
        S::KParaError => ErrorCode::ParamError,
        S::KStorageError => ErrorCode::InternalError,
        S::KFileLengthNotSupported => ErrorCode::LengthNotSupport,
        S::KCloneStatusNotMatch => ErrorCode::StatusNotMatch,
        S::KDeleteFileBeingCloned => ErrorCode::DeleteBeingCloned,
        S::KClientVersionNotMatch => ErrorCode::ClientNotSupportSnapshot,
        S::KSnapshotFrozen => ErrorCode::SnapshotFrozen,
        _ => ErrorCode::Unknown,
    }
}

/// The final code of an IO that ended on this chunk status (protocol §7.3).
pub fn chunk_status_to_code(status: ChunkOpStatus) -> ErrorCode {
    use ChunkOpStatus as C;
    match status {
        C::CopysetNotexist | C::ChunkNotexist => ErrorCode::NotExist,
        C::InvalidRequest => ErrorCode::InvalidRequest,
        C::ChunkExist => ErrorCode::Exists,
        C::EpochTooOld => ErrorCode::EpochTooOld,
        C::DiskFail => ErrorCode::DiskFail,
        C::CrcFail => ErrorCode::CrcError,
        C::Nospace => ErrorCode::NoSpace,
        _ => ErrorCode::Failed,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sdk_code_is_negated() {
        assert_eq!(Error::new(ErrorCode::NotExist, "x").sdk_code(), -6);
        assert_eq!(Error::new(ErrorCode::Unknown, "x").sdk_code(), -100);
        assert_eq!(Error::new(ErrorCode::EpochTooOld, "x").sdk_code(), -31);
    }

    #[test]
    fn mds_mapping_follows_the_generic_table() {
        use StatusCode as S;
        let cases = [
            (S::KFileExists, ErrorCode::Exists),
            (S::KFileNotExists, ErrorCode::NotExist),
            (S::KDirNotExist, ErrorCode::NotExist),
            (S::KPoolsetNotExist, ErrorCode::NotExist),
            (S::KSegmentNotAllocated, ErrorCode::NotAllocate),
            (S::KShrinkBiggerFile, ErrorCode::NoShrinkBiggerFile),
            (S::KNotSupported, ErrorCode::NotSupport),
            (S::KOwnerAuthFail, ErrorCode::AuthFail),
            (S::KDirNotEmpty, ErrorCode::NotEmpty),
            (S::KFileOccupied, ErrorCode::FileOccupied),
            (S::KSessionNotExist, ErrorCode::SessionNotExist),
            (S::KParaError, ErrorCode::ParamError),
            (S::KStorageError, ErrorCode::InternalError),
            (S::KFileLengthNotSupported, ErrorCode::LengthNotSupport),
            (S::KFileUnderSnapShot, ErrorCode::UnderSnapshot),
            (S::KDeleteFileBeingCloned, ErrorCode::DeleteBeingCloned),
            (
                S::KClientVersionNotMatch,
                ErrorCode::ClientNotSupportSnapshot,
            ),
            (S::KSnapshotFrozen, ErrorCode::SnapshotFrozen),
            (S::KNotDirectory, ErrorCode::Unknown),
            (S::KExtentUnitError, ErrorCode::Unknown),
            (S::KFileIdNotMatch, ErrorCode::Unknown),
            (S::KEpochTooOld, ErrorCode::Unknown),
            (S::KInternalError, ErrorCode::Unknown),
        ];
        for (status, code) in cases {
            assert_eq!(mds_status_to_code(status), code, "{status:?}");
        }
    }

    #[test]
    fn chunk_mapping_follows_the_final_code_table() {
        use ChunkOpStatus as C;
        assert_eq!(chunk_status_to_code(C::Redirected), ErrorCode::Failed);
        assert_eq!(
            chunk_status_to_code(C::CopysetNotexist),
            ErrorCode::NotExist
        );
        assert_eq!(
            chunk_status_to_code(C::InvalidRequest),
            ErrorCode::InvalidRequest
        );
        assert_eq!(chunk_status_to_code(C::Backward), ErrorCode::Failed);
        assert_eq!(chunk_status_to_code(C::ChunkExist), ErrorCode::Exists);
        assert_eq!(chunk_status_to_code(C::EpochTooOld), ErrorCode::EpochTooOld);
        assert_eq!(chunk_status_to_code(C::Overload), ErrorCode::Failed);
        assert_eq!(chunk_status_to_code(C::DiskFail), ErrorCode::DiskFail);
        assert_eq!(chunk_status_to_code(C::CrcFail), ErrorCode::CrcError);
        assert_eq!(chunk_status_to_code(C::Nospace), ErrorCode::NoSpace);
        assert_eq!(chunk_status_to_code(C::FailureUnknown), ErrorCode::Failed);
    }
}
