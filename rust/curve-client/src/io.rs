//! Offset mapping (§8.2): a user IO `[offset, offset+len)` becomes per-chunk pieces of at
//! most `global.fileIOSplitMaxSizeKB`, each a contiguous slice of the caller's buffer.
//! Pure arithmetic; no IO here.

use curve_proto::mds::FileInfo;

use crate::error::{Error, ErrorCode, Result};

/// A file's layout, taken from its FileInfo (never hard-coded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub chunk_size: u64,
    pub segment_size: u64,
    /// 0 when not striped.
    pub stripe_unit: u64,
    /// 0 when not striped.
    pub stripe_count: u64,
}

impl Geometry {
    pub fn from_file_info(info: &FileInfo) -> Result<Self> {
        let g = Self {
            chunk_size: u64::from(info.chunk_size.unwrap_or(0)),
            segment_size: u64::from(info.segment_size.unwrap_or(0)),
            stripe_unit: info.stripe_unit.unwrap_or(0),
            stripe_count: info.stripe_count.unwrap_or(0),
        };
        g.validate()?;
        Ok(g)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::new(ErrorCode::Failed, m));
        if self.chunk_size == 0
            || self.segment_size == 0
            || !self.segment_size.is_multiple_of(self.chunk_size)
            || self.chunk_size > u64::from(u32::MAX)
        {
            return bad(format!(
                "file has an unusable layout: chunk size {}, segment size {}",
                self.chunk_size, self.segment_size
            ));
        }
        if self.is_striped()
            && (self.stripe_unit > self.chunk_size
                || !self.chunk_size.is_multiple_of(self.stripe_unit))
        {
            return bad(format!(
                "file has an unusable stripe: unit {}, count {}, chunk size {}",
                self.stripe_unit, self.stripe_count, self.chunk_size
            ));
        }
        Ok(())
    }

    /// Striping applies when both values are set and the count is not 1.
    pub fn is_striped(&self) -> bool {
        self.stripe_unit != 0 && self.stripe_count != 0 && self.stripe_count != 1
    }

    pub fn chunks_per_segment(&self) -> u64 {
        self.segment_size / self.chunk_size
    }

    pub fn segment_of_chunk(&self, chunk_index: u64) -> u64 {
        chunk_index / self.chunks_per_segment()
    }

    /// Segment-aligned file offset of a segment, as GetOrAllocateSegment wants it.
    pub fn segment_offset(&self, segment_index: u64) -> u64 {
        segment_index * self.segment_size
    }
}

/// One chunk sub-request: where in which chunk, and which part of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPiece {
    pub chunk_index: u64,
    pub offset_in_chunk: u64,
    pub len: u64,
    /// Offset of this piece in the caller's buffer.
    pub buf_offset: u64,
}

/// Splits `[offset, offset+len)` into pieces no longer than `max_piece`. Pieces come in
/// buffer order and cover the buffer exactly, so callers can hand out disjoint slices.
pub fn split(geo: &Geometry, offset: u64, len: u64, max_piece: u64) -> Vec<ChunkPiece> {
    let max_piece = max_piece.max(1);
    let mut out = Vec::new();
    let mut cur = offset;
    let end = offset.saturating_add(len);
    while cur < end {
        let left = end - cur;
        let (chunk_index, offset_in_chunk, run) = if geo.is_striped() {
            let su = geo.stripe_unit;
            let sc = geo.stripe_count;
            let block_index = cur / su;
            let stripe_index = block_index / sc;
            let stripe_pos = block_index % sc;
            let stripes_per_chunk = geo.chunk_size / su;
            let chunk_index = (stripe_index / stripes_per_chunk) * sc + stripe_pos;
            let in_chunk = (stripe_index % stripes_per_chunk) * su + cur % su;
            (chunk_index, in_chunk, (su - cur % su).min(left))
        } else {
            let in_chunk = cur % geo.chunk_size;
            (
                cur / geo.chunk_size,
                in_chunk,
                (geo.chunk_size - in_chunk).min(left),
            )
        };
        let mut done = 0;
        while done < run {
            let n = (run - done).min(max_piece);
            out.push(ChunkPiece {
                chunk_index,
                offset_in_chunk: offset_in_chunk + done,
                len: n,
                buf_offset: cur + done - offset,
            });
            done += n;
        }
        cur += run;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn plain() -> Geometry {
        Geometry {
            chunk_size: 16 * MIB,
            segment_size: 1024 * MIB,
            stripe_unit: 0,
            stripe_count: 0,
        }
    }

    fn piece(chunk_index: u64, offset_in_chunk: u64, len: u64, buf_offset: u64) -> ChunkPiece {
        ChunkPiece {
            chunk_index,
            offset_in_chunk,
            len,
            buf_offset,
        }
    }

    #[test]
    fn small_io_is_one_piece() {
        assert_eq!(
            split(&plain(), 4096, 4096, 64 * 1024),
            vec![piece(0, 4096, 4096, 0)]
        );
    }

    #[test]
    fn splits_at_the_size_limit() {
        let p = split(&plain(), 0, 200 * 1024, 64 * 1024);
        assert_eq!(
            p,
            vec![
                piece(0, 0, 65536, 0),
                piece(0, 65536, 65536, 65536),
                piece(0, 131072, 65536, 131072),
                piece(0, 196608, 8192, 196608),
            ]
        );
    }

    #[test]
    fn splits_at_chunk_boundaries() {
        // 8 KiB straddling the end of chunk 0.
        let p = split(&plain(), 16 * MIB - 4096, 8192, 64 * 1024);
        assert_eq!(
            p,
            vec![piece(0, 16 * MIB - 4096, 4096, 0), piece(1, 0, 4096, 4096)]
        );
        // Crossing a segment boundary: chunk 63 is the last of segment 0.
        let p = split(&plain(), 1024 * MIB - 4096, 8192, 64 * 1024);
        assert_eq!(p[0].chunk_index, 63);
        assert_eq!(p[1].chunk_index, 64);
        assert_eq!(plain().segment_of_chunk(63), 0);
        assert_eq!(plain().segment_of_chunk(64), 1);
        assert_eq!(plain().segment_offset(1), 1024 * MIB);
    }

    #[test]
    fn pieces_cover_the_buffer_exactly() {
        let len = 64 * MIB;
        let p = split(&plain(), 12 * MIB, len, 64 * 1024);
        let mut next = 0;
        for x in &p {
            assert_eq!(x.buf_offset, next);
            assert!(x.len <= 64 * 1024);
            next += x.len;
        }
        assert_eq!(next, len);
        assert_eq!(p.len(), 1024);
    }

    #[test]
    fn stripe_count_one_is_not_striped() {
        let g = Geometry {
            stripe_unit: 4096,
            stripe_count: 1,
            ..plain()
        };
        assert_eq!(split(&g, 0, 8192, 1 << 20), vec![piece(0, 0, 8192, 0)]);
    }

    #[test]
    fn striped_mapping_matches_hand_computed_cases() {
        // chunk 16 MiB, stripe unit 1 MiB, stripe count 4 → 16 stripes per chunk.
        let g = Geometry {
            stripe_unit: MIB,
            stripe_count: 4,
            ..plain()
        };
        // Offset 0: block 0 → stripe 0, pos 0 → chunk 0 @ 0.
        // Offset 1 MiB: block 1 → stripe 0, pos 1 → chunk 1 @ 0.
        // Offset 4 MiB: block 4 → stripe 1, pos 0 → chunk 0 @ 1 MiB.
        // Offset 5.5 MiB: block 5 → stripe 1, pos 1 → chunk 1 @ 1 MiB + 0.5 MiB.
        assert_eq!(split(&g, 0, 4096, MIB), vec![piece(0, 0, 4096, 0)]);
        assert_eq!(split(&g, MIB, 4096, MIB), vec![piece(1, 0, 4096, 0)]);
        assert_eq!(split(&g, 4 * MIB, 4096, MIB), vec![piece(0, MIB, 4096, 0)]);
        assert_eq!(
            split(&g, 5 * MIB + MIB / 2, 4096, MIB),
            vec![piece(1, MIB + MIB / 2, 4096, 0)]
        );
        // Offset 64 MiB: block 64 → stripe 16, pos 0 → chunk (16/16)*4 + 0 = 4 @ 0.
        assert_eq!(split(&g, 64 * MIB, 4096, MIB), vec![piece(4, 0, 4096, 0)]);
        // Offset 67 MiB + 4 KiB: block 67 → stripe 16, pos 3 → chunk 7 @ 4 KiB.
        assert_eq!(
            split(&g, 67 * MIB + 4096, 4096, MIB),
            vec![piece(7, 4096, 4096, 0)]
        );
        // 2 MiB from 0.5 MiB crosses three stripe units: chunk 0, 1, 2.
        assert_eq!(
            split(&g, MIB / 2, 2 * MIB, 4 * MIB),
            vec![
                piece(0, MIB / 2, MIB / 2, 0),
                piece(1, 0, MIB, MIB / 2),
                piece(2, 0, MIB / 2, MIB / 2 + MIB),
            ]
        );
        // A stripe unit larger than the split limit is cut further.
        assert_eq!(
            split(&g, 0, MIB, MIB / 2),
            vec![piece(0, 0, MIB / 2, 0), piece(0, MIB / 2, MIB / 2, MIB / 2)]
        );
    }

    #[test]
    fn layout_without_sizes_is_refused() {
        let info = FileInfo::default();
        assert!(Geometry::from_file_info(&info).is_err());
        let info = FileInfo {
            chunk_size: Some(16 << 20),
            segment_size: Some(1 << 30),
            stripe_unit: Some(3000),
            stripe_count: Some(4),
            ..Default::default()
        };
        assert!(Geometry::from_file_info(&info).is_err());
    }
}
