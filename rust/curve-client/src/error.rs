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

/// One row of [`SDK_CODES`]: everything the SDK and the Python layer say about a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkCode {
    pub code: ErrorCode,
    /// Upstream's `LIBCURVE_ERROR` name, its spelling (SNAPSTHO_FROZEN included).
    pub name: &'static str,
    /// What the code means, in a few words: the exception's docstring and the docs' table.
    pub message: &'static str,
    /// The POSIX errno (its symbolic name) a Python exception of this code carries, so
    /// `OSError.errno` stays meaningful to code that knows only built-in exceptions.
    pub errno: &'static str,
    /// The class of `curvefs.exceptions` raised for it.
    pub class: &'static str,
    /// The built-in exception that class also derives from ("" for none).
    pub builtin: &'static str,
}

/// Every `LIBCURVE_ERROR` code: the one table of them. The binding's `CURVE_ERROR_*`
/// constants and `SDK_CODES`, `curvefs.exceptions`' classes and errno map, the stub's
/// constants and the docs' table are generated from it or checked against it by a test.
///
/// Errnos follow what upstream's name means, not how often a code is seen: DELETING
/// (upstream: "volume is deleting state") is EBUSY, a volume in a transition that refuses the
/// call; SESSION_NOTEXISTS and SESSION_NOT_EXIST (no session at the MDS for the client's
/// open of the file) are ESTALE, as EPOCH_TOO_OLD: the file exists, the handle on it is stale,
/// so ENOENT would tell errno-reading code a file is missing that is not.
pub const SDK_CODES: &[SdkCode] = &[
    SdkCode {
        code: ErrorCode::Exists,
        name: "EXISTS",
        message: "the file or directory already exists",
        errno: "EEXIST",
        class: "CurveExistsError",
        builtin: "FileExistsError",
    },
    SdkCode {
        code: ErrorCode::Failed,
        name: "FAILED",
        message: "the call failed (an unreachable MDS, IO past the end, …)",
        errno: "EIO",
        class: "CurveFailedError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::DisableIo,
        name: "DISABLEIO",
        message: "IO on this open file is disabled (deleted, replaced, lease lost)",
        errno: "EIO",
        class: "CurveDisableIoError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::AuthFail,
        name: "AUTHFAIL",
        message: "the user is not allowed to do this",
        errno: "EACCES",
        class: "CurveAuthError",
        builtin: "PermissionError",
    },
    SdkCode {
        code: ErrorCode::Deleting,
        name: "DELETING",
        message: "the volume is being deleted",
        errno: "EBUSY",
        class: "CurveDeletingError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NotExist,
        name: "NOTEXIST",
        message: "the file, directory or poolset does not exist",
        errno: "ENOENT",
        class: "CurveNotExistError",
        builtin: "FileNotFoundError",
    },
    SdkCode {
        code: ErrorCode::UnderSnapshot,
        name: "UNDER_SNAPSHOT",
        message: "the file has a snapshot",
        errno: "EIO",
        class: "CurveUnderSnapshotError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NotUnderSnapshot,
        name: "NOT_UNDERSNAPSHOT",
        message: "the file has no snapshot",
        errno: "EIO",
        class: "CurveNotUnderSnapshotError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::DeleteError,
        name: "DELETE_ERROR",
        message: "deleting the snapshot failed",
        errno: "EIO",
        class: "CurveDeleteError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NotAllocate,
        name: "NOT_ALLOCATE",
        message: "the segment is not allocated",
        errno: "EIO",
        class: "CurveNotAllocateError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NotSupport,
        name: "NOT_SUPPORT",
        message: "the operation is not supported on this entry",
        errno: "EOPNOTSUPP",
        class: "CurveNotSupportError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NotEmpty,
        name: "NOT_EMPTY",
        message: "the directory is not empty",
        errno: "ENOTEMPTY",
        class: "CurveNotEmptyError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NoShrinkBiggerFile,
        name: "NO_SHRINK_BIGGER_FILE",
        message: "volumes only grow",
        errno: "EIO",
        class: "CurveNoShrinkError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::SessionNotExists,
        name: "SESSION_NOTEXISTS",
        message: "the MDS holds no session for this open file",
        errno: "ESTALE",
        class: "CurveSessionNotExistsError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::FileOccupied,
        name: "FILE_OCCUPIED",
        message: "the file is open by a client",
        errno: "EBUSY",
        class: "CurveFileOccupiedError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::ParamError,
        name: "PARAM_ERROR",
        message: "an argument was refused",
        errno: "EINVAL",
        class: "CurveParamError",
        builtin: "ValueError",
    },
    SdkCode {
        code: ErrorCode::InternalError,
        name: "INTERNAL_ERROR",
        message: "the server failed internally",
        errno: "EIO",
        class: "CurveInternalError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::CrcError,
        name: "CRC_ERROR",
        message: "a checksum did not match",
        errno: "EIO",
        class: "CurveCrcError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::InvalidRequest,
        name: "INVALID_REQUEST",
        message: "a chunkserver cannot run this request",
        errno: "EINVAL",
        class: "CurveInvalidRequestError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::DiskFail,
        name: "DISK_FAIL",
        message: "a chunkserver's disk failed",
        errno: "EIO",
        class: "CurveDiskFailError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NoSpace,
        name: "NO_SPACE",
        message: "the pool is full",
        errno: "ENOSPC",
        class: "CurveNoSpaceError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::NotAligned,
        name: "NOT_ALIGNED",
        message: "offset or length is not a multiple of the block size",
        errno: "EINVAL",
        class: "CurveNotAlignedError",
        builtin: "ValueError",
    },
    SdkCode {
        code: ErrorCode::BadFd,
        name: "BAD_FD",
        message: "the fd or volume is not open",
        errno: "EBADF",
        class: "CurveBadFdError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::LengthNotSupport,
        name: "LENGTH_NOT_SUPPORT",
        message: "the file length is out of range or not aligned",
        errno: "EFBIG",
        class: "CurveLengthNotSupportError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::SessionNotExist,
        name: "SESSION_NOT_EXIST",
        message: "the MDS holds no session for this open file",
        errno: "ESTALE",
        class: "CurveSessionNotExistError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::StatusNotMatch,
        name: "STATUS_NOT_MATCH",
        message: "the file's status does not allow this",
        errno: "EIO",
        class: "CurveStatusNotMatchError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::DeleteBeingCloned,
        name: "DELETE_BEING_CLONED",
        message: "the volume is the source of a lazy clone",
        errno: "EIO",
        class: "CurveDeleteBeingClonedError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::ClientNotSupportSnapshot,
        name: "CLIENT_NOT_SUPPORT_SNAPSHOT",
        message: "the client's version does not support snapshots",
        errno: "EIO",
        class: "CurveClientNotSupportSnapshotError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::SnapshotFrozen,
        name: "SNAPSTHO_FROZEN",
        message: "snapshots are frozen",
        errno: "EIO",
        class: "CurveSnapshotFrozenError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::RetryUntilSuccess,
        name: "RETRY_UNTIL_SUCCESS",
        message: "the call must be retried",
        errno: "EIO",
        class: "CurveRetryUntilSuccessError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::EpochTooOld,
        name: "EPOCH_TOO_OLD",
        message: "another client fenced this one off the file",
        errno: "ESTALE",
        class: "CurveEpochTooOldError",
        builtin: "",
    },
    SdkCode {
        code: ErrorCode::Unknown,
        name: "UNKNOWN",
        message: "an MDS answer without a closer code",
        errno: "EIO",
        class: "CurveUnknownError",
        builtin: "",
    },
];

impl ErrorCode {
    /// Upstream's name, e.g. "NOTEXIST".
    pub fn name(self) -> &'static str {
        SDK_CODES
            .iter()
            .find(|row| row.code == self)
            .map_or("UNKNOWN", |row| row.name)
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
    fn the_code_table_names_each_code_and_class_once() {
        use std::collections::HashSet;
        let codes: HashSet<i32> = SDK_CODES.iter().map(|r| r.code as i32).collect();
        let names: HashSet<&str> = SDK_CODES.iter().map(|r| r.name).collect();
        let classes: HashSet<&str> = SDK_CODES.iter().map(|r| r.class).collect();
        assert_eq!(codes.len(), SDK_CODES.len());
        assert_eq!(names.len(), SDK_CODES.len());
        assert_eq!(classes.len(), SDK_CODES.len());
        for row in SDK_CODES {
            assert_eq!(row.code.name(), row.name);
            assert!(
                row.errno.starts_with('E') && !row.message.is_empty(),
                "{row:?}"
            );
            assert!(row.class.starts_with("Curve") && row.class.ends_with("Error"));
        }
    }

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
