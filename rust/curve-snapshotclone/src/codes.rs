//! The snapshot/clone service's result codes (upstream's
//! `src/common/snapshotclone/snapshotclone_define.{h,cpp}`): one table, the only place
//! their numbers, messages and HTTP statuses live. They are not the SDK's codes.

/// One result code of the service's HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCode {
    pub code: i32,
    /// Upstream's `code2Msg` text, typos included (clients may match on it).
    pub message: &'static str,
    pub name: &'static str,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $message:literal;)*) => {
        impl ServiceCode {
            $(pub const $name: ServiceCode =
                ServiceCode { code: $code, message: $message, name: stringify!($name) };)*
        }
        /// Every code, in upstream's order.
        pub const SERVICE_CODES: &[ServiceCode] = &[$(ServiceCode::$name),*];
    };
}

codes! {
    SUCCESS = 0, "Exec success.";
    INTERNAL_ERROR = -1, "Internal error.";
    SERVER_INIT_FAIL = -2, "Server init fail.";
    SERVER_START_FAIL = -3, "Server start fail.";
    SERVICE_IS_STOP = -4, "Sevice is stop.";
    INVALID_REQUEST = -5, "BadRequest:\"Invalid request.\"";
    TASK_EXIST = -6, "Task already exist.";
    INVALID_USER = -7, "Invalid user.";
    FILE_NOT_EXIST = -8, "File not exist.";
    FILE_STATUS_INVALID = -9, "File status invalid.";
    CHUNK_SIZE_NOT_ALIGNED = -10, "Chunk size not aligned.";
    FILE_NAME_NOT_MATCH = -11, "FileName not match.";
    SNAPSHOT_CANNOT_DELETE_UNFINISHED = -12, "Cannot delete unfinished.";
    SNAPSHOT_CANNOT_CREATE_WHEN_ERROR = -13, "Cannot create when has error.";
    CANNOT_CANCEL_FINISHED = -14, "Cannot cancel finished.";
    INVALID_SNAPSHOT = -15, "Invalid snapshot.";
    SNAPSHOT_CANNOT_DELETE_CLONING = -16, "Cannot delete when using.";
    CANNOT_CLEAN_CLONE_UNFINISHED = -17, "Cannot clean task unfinished.";
    SNAPSHOT_COUNT_REACH_LIMIT = -18, "Snapshot count reach the limit.";
    FILE_EXIST = -19, "File exist.";
    TASK_IS_FULL = -20, "Task is full.";
    NOT_SUPPORT = -21, "Not support.";
}

impl ServiceCode {
    /// The HTTP status upstream answers with: 200 on success, 400 for a bad request,
    /// 500 for every other error.
    pub fn http_status(self) -> u16 {
        match self.code {
            0 => 200,
            -5 => 400,
            _ => 500,
        }
    }

    /// The code of a number, if it is one of the table's.
    pub fn of(code: i32) -> Option<ServiceCode> {
        SERVICE_CODES.iter().copied().find(|c| c.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_runs_from_0_to_minus_21_without_gaps() {
        let codes: Vec<i32> = SERVICE_CODES.iter().map(|c| c.code).collect();
        assert_eq!(codes, (-21..=0).rev().collect::<Vec<_>>());
        assert_eq!(ServiceCode::of(-8), Some(ServiceCode::FILE_NOT_EXIST));
        assert_eq!(ServiceCode::INVALID_REQUEST.http_status(), 400);
        assert_eq!(ServiceCode::FILE_EXIST.http_status(), 500);
        assert_eq!(ServiceCode::SUCCESS.http_status(), 200);
    }
}
