//! brpc's error codes as they appear in `RpcResponseMeta.error_code` (reference §16.2),
//! and which of them a caller may retry. System errno values (ENOENT, EAGAIN) pass through
//! brpc unchanged; CliService2.GetLeader answers with them.

/// The peer host has no such service.
pub const ENOSERVICE: i32 = 1001;
/// The service has no such method.
pub const ENOMETHOD: i32 = 1002;
/// The request could not be parsed (a required field missing, bad bytes).
pub const EREQUEST: i32 = 1003;
/// Authentication failed.
pub const ERPCAUTH: i32 = 1004;
/// The call timed out (on the server, or as the client reports it).
pub const ERPCTIMEDOUT: i32 = 1008;
/// The connection broke.
pub const EFAILEDSOCKET: i32 = 1009;
/// Too many requests queued on the server's socket.
pub const EOVERCROWDED: i32 = 1011;
/// The server failed internally.
pub const EINTERNAL: i32 = 2001;
/// The server could not serialize its response.
pub const ERESPONSE: i32 = 2002;
/// The server is stopping.
pub const ELOGOFF: i32 = 2003;
/// The server's concurrency limit was reached.
pub const ELIMIT: i32 = 2004;
/// The server closed the connection on purpose.
pub const ECLOSE: i32 = 2005;

/// `EPERM`: TransferLeader asked of a member that does not lead (braft's answer).
pub const SYS_EPERM: i32 = 1;
/// `ENOENT`: GetLeader on a chunkserver that does not host the copyset.
pub const SYS_ENOENT: i32 = 2;
/// `EAGAIN`: GetLeader while the copyset has no leader.
pub const SYS_EAGAIN: i32 = 11;
/// `EINVAL`: TransferLeader to a peer outside the copyset.
pub const SYS_EINVAL: i32 = 22;

/// The server can never run this request: asking again, or elsewhere, cannot help.
pub fn is_final(code: i32) -> bool {
    matches!(code, ENOSERVICE | ENOMETHOD | EREQUEST | ERPCAUTH)
}

/// The name of a known code, for messages.
pub fn name(code: i32) -> Option<&'static str> {
    Some(match code {
        ENOSERVICE => "ENOSERVICE",
        ENOMETHOD => "ENOMETHOD",
        EREQUEST => "EREQUEST",
        ERPCAUTH => "ERPCAUTH",
        ERPCTIMEDOUT => "ERPCTIMEDOUT",
        EFAILEDSOCKET => "EFAILEDSOCKET",
        EOVERCROWDED => "EOVERCROWDED",
        EINTERNAL => "EINTERNAL",
        ERESPONSE => "ERESPONSE",
        ELOGOFF => "ELOGOFF",
        ELIMIT => "ELIMIT",
        ECLOSE => "ECLOSE",
        SYS_ENOENT => "ENOENT",
        SYS_EAGAIN => "EAGAIN",
        _ => return None,
    })
}
