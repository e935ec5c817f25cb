//! What the client reports about a file: the MDS's `FileInfo` with every field the
//! SDK shows, absent ones read as upstream's C struct reads them (0 or "").

use curve_proto::mds::FileInfo;

/// `curve.mds.FileType` values.
pub mod file_type {
    pub const DIRECTORY: i32 = 0;
    pub const PAGEFILE: i32 = 1;
    pub const APPENDFILE: i32 = 2;
    pub const APPENDECFILE: i32 = 3;
    pub const SNAPSHOT_PAGEFILE: i32 = 4;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStat {
    pub id: u64,
    pub parent_id: u64,
    pub name: String,
    pub owner: String,
    /// A `curve.mds.FileType` value (see [`file_type`]).
    pub file_type: i32,
    /// A `curve.mds.FileStatus` value: 0 Created, 1 Deleting, 2 Cloning,
    /// 3 CloneMetaInstalled, 4 Cloned, 5 BeingCloned.
    pub status: i32,
    pub length: u64,
    /// Creation time, µs since the Unix epoch.
    pub ctime_us: u64,
    pub seq_num: u64,
    pub stripe_unit: u64,
    pub stripe_count: u64,
    /// IO alignment; 4096 when the MDS does not say.
    pub block_size: u32,
    pub poolset: String,
    /// A lazy clone's source volume (`FileInfo.cloneSource`); "" for none.
    pub clone_source: String,
    /// The source's length when the clone was made (`FileInfo.cloneLength`); 0 for none.
    pub clone_length: u64,
}

impl From<&FileInfo> for FileStat {
    fn from(f: &FileInfo) -> Self {
        FileStat {
            id: f.id.unwrap_or(0),
            parent_id: f.parent_id.unwrap_or(0),
            name: f.file_name.clone().unwrap_or_default(),
            owner: f.owner.clone().unwrap_or_default(),
            file_type: f.file_type.unwrap_or(0),
            status: f.file_status.unwrap_or(0),
            length: f.length.unwrap_or(0),
            ctime_us: f.ctime.unwrap_or(0),
            seq_num: f.seq_num.unwrap_or(0),
            stripe_unit: f.stripe_unit.unwrap_or(0),
            stripe_count: f.stripe_count.unwrap_or(0),
            block_size: f.blocksize.filter(|b| *b > 0).unwrap_or(4096),
            poolset: f.poolset.clone().unwrap_or_default(),
            clone_source: f.clone_source.clone().unwrap_or_default(),
            clone_length: f.clone_length.unwrap_or(0),
        }
    }
}
