//! Where a clone chunk's unwritten pages come from (upstream's `LocationOperator`):
//! `"<curve path>:<offset>@cs"` for a lazy clone of a volume, `"<object key>@s3"` for a
//! clone from a snapshot. The clone task writes these and the chunkservers read them.

/// `"<curve path>:<offset>@cs"`: the chunk's origin is `<offset>` bytes into a volume.
const CURVE_TYPE: &str = "cs";
/// `"<object key>@s3"`: the origin is an object of the snapshot data store (a chunk of a
/// snapshot, named `<file>-<chunkIndex>-<sn>`).
const S3_TYPE: &str = "s3";

/// What a location's origin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKind {
    /// A volume of the cluster (`@cs`).
    Curve,
    /// An object of the snapshot data store (`@s3`).
    S3,
}

/// Where a clone chunk's unwritten pages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveOrigin {
    pub kind: OriginKind,
    /// The source volume's path, or the object's key.
    pub source: String,
    /// Where this chunk's first byte lies in the source (0 in an object: it is one chunk).
    pub offset: u64,
}

impl CurveOrigin {
    /// A chunk `offset` bytes into the volume `source`.
    pub fn volume(source: &str, offset: u64) -> Self {
        CurveOrigin {
            kind: OriginKind::Curve,
            source: source.to_string(),
            offset,
        }
    }
}

/// Why a location cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("location {0:?} is neither \"<curve path>:<offset>@cs\" nor \"<object key>@s3\"")]
    Malformed(String),
}

/// Upstream's `GenerateCurveLocation`.
pub fn curve_location(source: &str, offset: u64) -> String {
    format!("{source}:{offset}@{CURVE_TYPE}")
}

/// Upstream's `GenerateS3Location`: the object `key` of the snapshot data store.
pub fn s3_location(key: &str) -> String {
    format!("{key}@{S3_TYPE}")
}

/// Upstream's `ParseLocation` then `ParseCurveChunkPath`: split at the last `@` (a path
/// may hold one); an `@s3` key is the rest, non-empty; an `@cs` path is split at its last
/// `:`, both parts non-empty, the offset a decimal u64.
pub fn parse_location(location: &str) -> Result<CurveOrigin, LocationError> {
    let malformed = || LocationError::Malformed(location.to_string());
    let (path, kind) = location.rsplit_once('@').ok_or_else(malformed)?;
    match kind {
        CURVE_TYPE => {}
        S3_TYPE if !path.is_empty() => {
            return Ok(CurveOrigin {
                kind: OriginKind::S3,
                source: path.to_string(),
                offset: 0,
            });
        }
        _ => return Err(malformed()),
    }
    let (source, offset) = path.rsplit_once(':').ok_or_else(malformed)?;
    if source.is_empty() || offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let offset = offset.parse::<u64>().map_err(|_| malformed())?;
    Ok(CurveOrigin::volume(source, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_split_at_the_last_separators() {
        let loc = curve_location("/vol:a@b", 16 << 20);
        assert_eq!(loc, "/vol:a@b:16777216@cs");
        assert_eq!(
            parse_location(&loc),
            Ok(CurveOrigin::volume("/vol:a@b", 16 << 20))
        );
        let s3 = s3_location("/vol-1-2");
        assert_eq!(s3, "/vol-1-2@s3");
        assert_eq!(
            parse_location(&s3),
            Ok(CurveOrigin {
                kind: OriginKind::S3,
                source: "/vol-1-2".into(),
                offset: 0
            })
        );
        for bad in [
            "",
            "/vol",
            "/vol:0",
            "/vol:0@",
            "/vol:0@nfs",
            "@s3",
            ":0@cs",
            "/vol:@cs",
            "/vol@cs",
            "/vol:-1@cs",
            "/vol:+1@cs",
            "/vol:99999999999999999999@cs",
        ] {
            assert!(
                matches!(parse_location(bad), Err(LocationError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
