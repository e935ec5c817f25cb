//! Where a clone chunk's unwritten pages come from (upstream's `LocationOperator`):
//! `"<curve path>:<offset>@cs"` for a lazy clone of a volume, `"<object key>@s3"` for a
//! clone from a snapshot. The clone task writes these and the chunkservers read them.

/// `"<curve path>:<offset>@cs"`: the chunk's origin is `<offset>` bytes into a volume.
const CURVE_TYPE: &str = "cs";
/// `"<object key>@s3"`: an origin in S3, which the local cluster does not have.
const S3_TYPE: &str = "s3";

/// Where a clone chunk's unwritten pages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveOrigin {
    /// The source volume's path.
    pub source: String,
    /// Where this chunk's first byte lies in the source volume.
    pub offset: u64,
}

/// Why a location cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("location {0:?} names an S3 origin; this chunkserver reads only Curve origins (@cs)")]
    S3(String),
    #[error("location {0:?} is not \"<curve path>:<offset>@cs\"")]
    Malformed(String),
}

/// Upstream's `GenerateCurveLocation`.
pub fn curve_location(source: &str, offset: u64) -> String {
    format!("{source}:{offset}@{CURVE_TYPE}")
}

/// Upstream's `ParseLocation` then `ParseCurveChunkPath`: split at the last `@` (a path
/// may hold one), then at the last `:`; both parts non-empty, the offset a decimal u64.
pub fn parse_location(location: &str) -> Result<CurveOrigin, LocationError> {
    let malformed = || LocationError::Malformed(location.to_string());
    let (path, kind) = location.rsplit_once('@').ok_or_else(malformed)?;
    match kind {
        CURVE_TYPE => {}
        S3_TYPE => return Err(LocationError::S3(location.to_string())),
        _ => return Err(malformed()),
    }
    let (source, offset) = path.rsplit_once(':').ok_or_else(malformed)?;
    if source.is_empty() || offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let offset = offset.parse::<u64>().map_err(|_| malformed())?;
    Ok(CurveOrigin {
        source: source.to_string(),
        offset,
    })
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
            Ok(CurveOrigin {
                source: "/vol:a@b".into(),
                offset: 16 << 20
            })
        );
        assert!(matches!(
            parse_location("bucket/key@s3"),
            Err(LocationError::S3(_))
        ));
        for bad in [
            "",
            "/vol",
            "/vol:0",
            "/vol:0@",
            "/vol:0@nfs",
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
