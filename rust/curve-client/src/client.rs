//! The facade the Python binding holds: one method per SDK call.

use std::sync::Arc;

pub use curve_proto::mds::FileInfo;

use crate::conf::ClientConfig;
use crate::error::{Error, ErrorCode, Result};

#[derive(Debug, Clone, Default)]
pub struct UserInfo {
    pub owner: String,
    pub password: String,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub stripe_unit: u64,
    pub stripe_count: u64,
    pub poolset: String,
}

struct Inner {
    _config: Arc<ClientConfig>,
}

#[derive(Clone)]
pub struct Client {
    _inner: Arc<Inner>,
}

fn todo_err() -> Error {
    Error::new(ErrorCode::NotSupport, "not implemented yet")
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client> {
        Ok(Client {
            _inner: Arc::new(Inner {
                _config: Arc::new(config),
            }),
        })
    }
    pub async fn create(
        &self,
        _path: &str,
        _user: &UserInfo,
        _size: u64,
        _opts: &CreateOptions,
    ) -> Result<()> {
        Err(todo_err())
    }
    pub async fn mkdir(&self, _path: &str, _user: &UserInfo) -> Result<()> {
        Err(todo_err())
    }
    pub async fn stat(&self, _path: &str, _user: &UserInfo) -> Result<FileInfo> {
        Err(todo_err())
    }
    pub async fn extend(&self, _path: &str, _user: &UserInfo, _new_size: u64) -> Result<()> {
        Err(todo_err())
    }
    pub async fn unlink(&self, _path: &str, _user: &UserInfo) -> Result<()> {
        Err(todo_err())
    }
    pub async fn delete_force(&self, _path: &str, _user: &UserInfo) -> Result<()> {
        Err(todo_err())
    }
    pub async fn recover(&self, _path: &str, _user: &UserInfo, _file_id: u64) -> Result<()> {
        Err(todo_err())
    }
    pub async fn rename(&self, _user: &UserInfo, _old: &str, _new: &str) -> Result<()> {
        Err(todo_err())
    }
    pub async fn list_dir(&self, _path: &str, _user: &UserInfo) -> Result<Vec<FileInfo>> {
        Err(todo_err())
    }
    pub async fn change_owner(
        &self,
        _path: &str,
        _new_owner: &str,
        _user: &UserInfo,
    ) -> Result<()> {
        Err(todo_err())
    }
    pub async fn cluster_id(&self) -> Result<String> {
        Err(todo_err())
    }
    pub async fn list_poolsets(&self) -> Result<Vec<String>> {
        Err(todo_err())
    }
    pub async fn open(&self, _path: &str, _user: &UserInfo) -> Result<i32> {
        Err(todo_err())
    }
    pub async fn close(&self, _fd: i32) -> Result<()> {
        Err(todo_err())
    }
    pub async fn read(&self, _fd: i32, _offset: u64, _buf: &mut [u8]) -> Result<()> {
        Err(todo_err())
    }
    pub async fn write(&self, _fd: i32, _offset: u64, _data: &[u8]) -> Result<()> {
        Err(todo_err())
    }
    pub fn shutdown(&self) {}
}
