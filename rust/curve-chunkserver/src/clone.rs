//! Clone chunks at the datastore level: the page bitmap that says which pages the clone
//! wrote itself (upstream's `Bitmap`, one bit per block), and the record that keeps it on
//! disk beside the chunk file with the chunk's origin location (whose format is
//! `curve_client::location`'s, shared with the clone task).
//!
//! Nothing here reads an origin or knows of RPCs; `origin.rs` reads, `store.rs` keeps
//! the records, the services decide.

use std::io;

pub(crate) use curve_client::location::{CurveOrigin, OriginKind, curve_location, parse_location};

/// One bit per block of a chunk, set once the clone wrote (or pasted) that block. Bit
/// `i` is bit `i % 8` of byte `i / 8`, least significant first, as upstream's bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    bits: u32,
    bytes: Vec<u8>,
}

impl Bitmap {
    pub fn new(bits: u32) -> Self {
        Bitmap {
            bits,
            bytes: vec![0; bits.div_ceil(8) as usize],
        }
    }

    /// From the bytes a record or a peer holds; `None` if they are not `bits` long or set
    /// bits past the end.
    pub fn from_bytes(bits: u32, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != bits.div_ceil(8) as usize {
            return None;
        }
        let map = Bitmap {
            bits,
            bytes: bytes.to_vec(),
        };
        let spare = (bits..map.bytes.len() as u32 * 8).any(|i| map.get(i));
        (!spare).then_some(map)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn get(&self, i: u32) -> bool {
        self.bytes
            .get((i / 8) as usize)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Sets bits `[first, last]`; whether any was clear.
    pub fn set_range(&mut self, first: u32, last: u32) -> bool {
        let mut changed = false;
        for i in first..=last.min(self.bits.saturating_sub(1)) {
            if let Some(b) = self.bytes.get_mut((i / 8) as usize) {
                changed |= *b & (1 << (i % 8)) == 0;
                *b |= 1 << (i % 8);
            }
        }
        changed
    }

    /// Whether every bit of `[first, last]` is set.
    pub fn all_set(&self, first: u32, last: u32) -> bool {
        (first..=last).all(|i| self.get(i))
    }

    pub fn full(&self) -> bool {
        self.all_set(0, self.bits.saturating_sub(1))
    }

    /// Runs `[first, last]` of equal bits within `[from, to]`, with their value, in order
    /// (upstream's `Divide`).
    pub fn runs(&self, from: u32, to: u32) -> Vec<(u32, u32, bool)> {
        let mut runs: Vec<(u32, u32, bool)> = Vec::new();
        for i in from..=to {
            let v = self.get(i);
            match runs.last_mut() {
                Some((_, last, value)) if *value == v => *last = i,
                _ => runs.push((i, i, v)),
            }
        }
        runs
    }
}

/// What makes a chunk a clone chunk; `None` in its place is a plain chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloneMeta {
    pub location: String,
    /// CreateCloneChunk's `correctedSn` (0 for a chunk a write created).
    pub corrected_sn: u64,
    pub bitmap: Bitmap,
}

/// First bytes of a clone record, and its version.
const MAGIC: &[u8; 8] = b"CVFSCLN1";
/// Longest location kept (upstream's `global.location_limit`).
pub(crate) const LOCATION_LIMIT: usize = 3000;

impl CloneMeta {
    /// The record: `MAGIC`, `correctedSn` (u64), bits (u32), location length (u32), all
    /// little-endian, the location, then the bitmap's bytes. Written whole through a
    /// rename (store.rs), so it is never torn; read back only at this exact length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.location.len() + self.bitmap.bytes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.corrected_sn.to_le_bytes());
        out.extend_from_slice(&self.bitmap.bits.to_le_bytes());
        out.extend_from_slice(&(self.location.len() as u32).to_le_bytes());
        out.extend_from_slice(self.location.as_bytes());
        out.extend_from_slice(&self.bitmap.bytes);
        out
    }

    /// A record this chunkserver wrote for chunks of `bits` blocks. Anything else is an
    /// error, never a plain chunk: that would serve zeros for the origin's bytes.
    pub fn decode(bytes: &[u8], bits: u32) -> io::Result<Self> {
        let bad =
            |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("clone record: {why}"));
        let u32_at = |at: usize| -> io::Result<u32> {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| bad("short"))
        };
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(bad("unknown format"));
        }
        let corrected_sn = bytes
            .get(8..16)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad("short"))?;
        let recorded_bits = u32_at(16)?;
        if recorded_bits != bits {
            return Err(bad(&format!(
                "{recorded_bits} pages recorded, chunks here have {bits}"
            )));
        }
        let location_len = u32_at(20)? as usize;
        let location_end = 24 + location_len;
        let location = bytes
            .get(24..location_end)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad("location"))?;
        let map = bytes.get(location_end..).ok_or_else(|| bad("short"))?;
        let bitmap = Bitmap::from_bytes(bits, map).ok_or_else(|| bad("bitmap length"))?;
        Ok(CloneMeta {
            location: location.to_string(),
            corrected_sn,
            bitmap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_runs_and_fullness() {
        let mut map = Bitmap::new(10);
        assert_eq!(map.as_bytes().len(), 2);
        assert!(map.set_range(2, 4));
        assert!(!map.set_range(3, 4));
        assert_eq!(
            map.runs(0, 9),
            vec![(0, 1, false), (2, 4, true), (5, 9, false)]
        );
        assert!(map.all_set(2, 4) && !map.all_set(1, 4));
        assert!(!map.full());
        map.set_range(0, 9);
        assert!(map.full());
        // Bits past the end in a record are refused, as is a wrong length.
        assert!(Bitmap::from_bytes(10, &[0xff, 0x04]).is_none());
        assert!(Bitmap::from_bytes(10, &[0xff]).is_none());
        assert_eq!(Bitmap::from_bytes(10, &[0xff, 0x03]), Some(map));
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error() -> io::Result<()> {
        let mut bitmap = Bitmap::new(1024);
        bitmap.set_range(7, 300);
        let meta = CloneMeta {
            location: curve_location("/src", 4 << 20),
            corrected_sn: 3,
            bitmap,
        };
        let bytes = meta.encode();
        assert_eq!(CloneMeta::decode(&bytes, 1024)?, meta);
        assert!(CloneMeta::decode(&bytes, 4096).is_err());
        for cut in [0, 7, 8, 20, 24, bytes.len() - 1] {
            assert!(
                CloneMeta::decode(&bytes[..cut], 1024).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CloneMeta::decode(&longer, 1024).is_err());
        Ok(())
    }
}
