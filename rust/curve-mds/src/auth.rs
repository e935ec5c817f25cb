//! Curve's request authentication as the MDS performs it (reference §9): the `date` must be
//! fresh, the `owner` non-empty, and the root user must prove the root password with
//! Base64(HMAC-SHA256(password, `"<date>:<owner>"`)). [`METHODS`] says which check each
//! method gets; the namespace walks the paths those checks name. This module only decides
//! who the caller is.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use curve_proto::mds::StatusCode;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How upstream's `NameSpaceService` authenticates a method (src/mds/nameserver2/curvefs.cpp).
/// Every check but [`Check::None`] first refuses an empty owner, a date 15 s or more from
/// the MDS's clock either way, and an owner named root without the root signature, each
/// with kOwnerAuthFail; a valid root signature skips every ownership check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `CheckPathOwner`: the caller owns every directory above the path (a user naming "/"
    /// itself is refused). The entry need not exist (it is about to be created).
    PathOwner,
    /// `CheckFileOwner`: every directory above the path and the entry, which must exist
    /// (again "/" is root's only).
    FileOwner,
    /// `CheckFileOwner` on the old path, then `CheckDestinationOwner` on the new one (the
    /// new entry, if it exists, must be the caller's too).
    FileThenDestinationOwner,
    /// Upstream first finds the recycled entry (a missing one is kFileNotExists for anyone),
    /// then `CheckRecycleFileOwner` on it and `CheckDestinationOwner` on its original path.
    RecycledFileOwner,
    /// `CheckRootOwner`: the caller must be root, signed, whatever the path.
    RootOwner,
    /// Not authenticated upstream: the requests carry no owner, date or signature.
    None,
}

/// The one table of which method authenticates how: every method the local MDS serves, by
/// (service, method), in the order of Curve's protos. Upstream's throttle
/// and cluster-listing methods are not served here; upstream leaves GetAllocatedSize,
/// GetFileSize, ListClient, FindFileMountPoint and ListVolumesOnCopysets unauthenticated.
pub const METHODS: &[(&str, &str, Check)] = &[
    (CURVEFS, "CreateFile", Check::PathOwner),
    (CURVEFS, "DeleteFile", Check::FileOwner),
    (CURVEFS, "RecoverFile", Check::RecycledFileOwner),
    (CURVEFS, "GetFileInfo", Check::FileOwner),
    (CURVEFS, "GetOrAllocateSegment", Check::FileOwner),
    (CURVEFS, "DeAllocateSegment", Check::FileOwner),
    (CURVEFS, "RenameFile", Check::FileThenDestinationOwner),
    (CURVEFS, "ExtendFile", Check::FileOwner),
    (CURVEFS, "ChangeOwner", Check::RootOwner),
    (CURVEFS, "ListDir", Check::FileOwner),
    (CURVEFS, "OpenFile", Check::FileOwner),
    (CURVEFS, "CloseFile", Check::FileOwner),
    (CURVEFS, "RefreshSession", Check::FileOwner),
    (CURVEFS, "IncreaseFileEpoch", Check::FileOwner),
    (CURVEFS, "CreateCloneFile", Check::PathOwner),
    (CURVEFS, "SetCloneFileStatus", Check::PathOwner),
    (CURVEFS, "CreateSnapShot", Check::FileOwner),
    (CURVEFS, "ListSnapShot", Check::FileOwner),
    (CURVEFS, "DeleteSnapShot", Check::FileOwner),
    (CURVEFS, "CheckSnapShotStatus", Check::FileOwner),
    (CURVEFS, "GetSnapShotFileSegment", Check::FileOwner),
    (TOPOLOGY, "GetChunkServerListInCopySets", Check::None),
    (TOPOLOGY, "GetClusterInfo", Check::None),
    (TOPOLOGY, "GetChunkServer", Check::None),
    (TOPOLOGY, "ListChunkServer", Check::None),
    (TOPOLOGY, "ListPoolset", Check::None),
];

/// The namespace service's full name on the wire.
pub const CURVEFS: &str = "curve.mds.CurveFSService";
/// The topology service's full name on the wire.
pub const TOPOLOGY: &str = "curve.mds.topology.TopologyService";

/// Who an authenticated request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The configured root user with a valid signature: skips every ownership check.
    Root,
    /// Any other owner: must own every ancestor (and usually the target).
    User(String),
}

impl Caller {
    /// The owner name ownership checks compare against; `None` for root, who is not checked.
    pub(crate) fn checked_owner(&self) -> Option<&str> {
        match self {
            Caller::Root => None,
            Caller::User(owner) => Some(owner),
        }
    }
}

/// The signature a client computes for `owner` at `date` with `password`.
pub fn sign(password: &str, date: u64, owner: &str) -> String {
    match mac(password, date, owner) {
        Some(mac) => STANDARD.encode(mac.finalize().into_bytes()),
        None => String::new(),
    }
}

/// HMAC takes keys of any length, so this is `None` only if the hmac crate changed contract.
fn mac(password: &str, date: u64, owner: &str) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(password.as_bytes()).ok()?;
    mac.update(format!("{date}:{owner}").as_bytes());
    Some(mac)
}

/// Whether `signature` is the root signature for (`date`, `owner`), compared in constant time.
pub fn verify(password: &str, date: u64, owner: &str, signature: &str) -> bool {
    match (
        STANDARD.decode(signature.as_bytes()),
        mac(password, date, owner),
    ) {
        (Ok(bytes), Some(mac)) => mac.verify_slice(&bytes).is_ok(),
        _ => false,
    }
}

/// The authentication settings of one MDS.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    pub root_user: String,
    pub root_password: String,
    pub date_tolerance_us: u64,
}

impl Authenticator {
    /// Checks date, owner and (for root) signature, at MDS time `now_us`.
    pub(crate) fn authenticate(
        &self,
        owner: &str,
        signature: Option<&str>,
        date: u64,
        now_us: u64,
    ) -> Result<Caller, StatusCode> {
        if date.abs_diff(now_us) >= self.date_tolerance_us {
            return Err(StatusCode::KOwnerAuthFail);
        }
        if owner.is_empty() {
            return Err(StatusCode::KOwnerAuthFail);
        }
        if owner == self.root_user {
            let signature = signature.unwrap_or("");
            if verify(&self.root_password, date, owner, signature) {
                return Ok(Caller::Root);
            }
            return Err(StatusCode::KOwnerAuthFail);
        }
        Ok(Caller::User(owner.to_owned()))
    }

    /// ChangeOwner's check: the caller must be root, with a valid signature.
    pub(crate) fn authenticate_root(
        &self,
        root_owner: &str,
        signature: &str,
        date: u64,
        now_us: u64,
    ) -> Result<(), StatusCode> {
        match self.authenticate(root_owner, Some(signature), date, now_us)? {
            Caller::Root => Ok(()),
            Caller::User(_) => Err(StatusCode::KOwnerAuthFail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: u64 = 1_700_000_000_123_456;

    fn authenticator() -> Authenticator {
        Authenticator {
            root_user: "root".into(),
            root_password: "root_password".into(),
            date_tolerance_us: 15_000_000,
        }
    }

    #[test]
    fn known_vector() {
        // Computed independently: printf '1700000000123456:root' |
        //   openssl dgst -sha256 -hmac root_password -binary | base64
        assert_eq!(
            sign("root_password", DATE, "root"),
            "pqAgnzxpQ/P6btlFBeSIJcYfZJTVonioPOD5nYwplv4="
        );
    }

    #[test]
    fn signature_shape() {
        let s = sign("root_password", DATE, "root");
        assert_eq!(s.len(), 44);
        assert!(s.ends_with('='));
        assert!(verify("root_password", DATE, "root", &s));
        assert!(!verify("other", DATE, "root", &s));
        assert!(!verify("root_password", DATE + 1, "root", &s));
        assert!(!verify("root_password", DATE, "root", "not base64 !"));
        assert!(!verify("root_password", DATE, "root", ""));
    }

    #[test]
    fn only_the_exact_string_verifies() {
        // Upstream compares the Base64 text itself; decoding first must accept no other
        // spelling of the same bytes.
        let s = sign("root_password", DATE, "root");
        let unpadded = s.trim_end_matches('=');
        let url_safe = s.replace('+', "-").replace('/', "_");
        for other in [
            unpadded.to_owned(),
            format!("{s}\n"),
            format!(" {s}"),
            format!("{unpadded}=="),
            s.to_lowercase(),
        ] {
            assert!(!verify("root_password", DATE, "root", &other), "{other:?}");
        }
        if url_safe != s {
            assert!(!verify("root_password", DATE, "root", &url_safe));
        }
        // The last character carries 2 spare bits: a different one decoding to the same
        // bytes would be a second spelling.
        let last = s.len() - 2;
        let mut twin = s.clone().into_bytes();
        twin[last] = if twin[last] == b'4' { b'5' } else { b'4' };
        let twin = String::from_utf8(twin).unwrap_or_default();
        assert!(!verify("root_password", DATE, "root", &twin), "{twin:?}");
    }

    #[test]
    fn methods_table_is_whole() {
        let names: Vec<_> = METHODS.iter().map(|(s, m, _)| (*s, *m)).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each method once");
        // Every namespace method authenticates (upstream: all but the listing ones, which
        // are not served here); no topology method does.
        for (service, method, check) in METHODS {
            assert_eq!(*service == TOPOLOGY, *check == Check::None, "{method}");
        }
    }

    #[test]
    fn root_needs_valid_signature() {
        let a = authenticator();
        let good = sign("root_password", DATE, "root");
        assert_eq!(
            a.authenticate("root", Some(&good), DATE, DATE),
            Ok(Caller::Root)
        );
        assert_eq!(
            a.authenticate("root", Some(""), DATE, DATE),
            Err(StatusCode::KOwnerAuthFail)
        );
        assert_eq!(
            a.authenticate("root", None, DATE, DATE),
            Err(StatusCode::KOwnerAuthFail)
        );
        let wrong = sign("nope", DATE, "root");
        assert_eq!(
            a.authenticate("root", Some(&wrong), DATE, DATE),
            Err(StatusCode::KOwnerAuthFail)
        );
    }

    #[test]
    fn users_are_not_signed() {
        let a = authenticator();
        assert_eq!(
            a.authenticate("alice", Some(""), DATE, DATE),
            Ok(Caller::User("alice".into()))
        );
        assert_eq!(
            a.authenticate("alice", Some("garbage"), DATE, DATE),
            Ok(Caller::User("alice".into()))
        );
        assert_eq!(
            a.authenticate("", Some(""), DATE, DATE),
            Err(StatusCode::KOwnerAuthFail)
        );
    }

    #[test]
    fn date_window_both_directions() {
        let a = authenticator();
        let now = DATE;
        for date in [now - 14_999_999, now + 14_999_999] {
            assert!(a.authenticate("alice", None, date, now).is_ok());
        }
        for date in [now - 15_000_000, now + 15_000_000, 0, u64::MAX] {
            assert_eq!(
                a.authenticate("alice", None, date, now),
                Err(StatusCode::KOwnerAuthFail)
            );
        }
    }

    #[test]
    fn change_owner_is_root_only() {
        let a = authenticator();
        let good = sign("root_password", DATE, "root");
        assert_eq!(a.authenticate_root("root", &good, DATE, DATE), Ok(()));
        assert_eq!(
            a.authenticate_root("alice", "", DATE, DATE),
            Err(StatusCode::KOwnerAuthFail)
        );
        assert_eq!(
            a.authenticate_root("root", "", DATE, DATE),
            Err(StatusCode::KOwnerAuthFail)
        );
    }
}
