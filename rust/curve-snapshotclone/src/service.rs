//! The snapshot/clone service's HTTP API, as upstream's `SnapshotCloneServiceImpl` serves
//! it (`src/snapshotcloneserver/snapshotclone_service.cpp`): path `/SnapshotCloneService`,
//! any method, everything in the query string (`Action`, `Version`, case-sensitive keys),
//! a JSON body on every answer (`Code` as a string, `Message`, `RequestId`, and the
//! action's fields), HTTP 200 / 400 / 500 by code.
//!
//! The clone and recover actions run the tasks of [`crate::CloneTasks`] with upstream's
//! task rules (idempotent retries, flatten of a lazy clone, cleaning, reference status of
//! a source); tasks are kept in [`crate::tasks::TaskStore`] and picked up again after a
//! restart. A clone's source is a volume or a snapshot's UUID, a recover's a snapshot of
//! its destination; a snapshot is not deleted while a task reads it. The snapshot actions
//! run [`crate::Snapshots`]' tasks (one at a time per volume, resumed after a restart).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use curve_client::{Client, ErrorCode, UserInfo};
use curve_proto::mds::FileStatus;
use serde_json::{Map, Value, json};

use crate::clone::{CloneError, CloneOptions, CloneTasks};
use crate::codes::ServiceCode;
use crate::datastore::{ChunkIndex, DataStore};
use crate::snapshot::{SnapshotFilter, SnapshotOptions, Snapshots};
use crate::snapshots::{Snapshot, SnapshotStatus};
use crate::tasks::{
    CloneStep, Fence, SourceType, StoreError, Task, TaskStatus, TaskStore, TaskType,
};

/// What the service runs on.
pub struct ServiceConfig {
    /// A client of the cluster; the service calls as `root`.
    pub client: Client,
    pub root: UserInfo,
    pub options: CloneOptions,
    pub snapshot: SnapshotOptions,
    /// Where the task and snapshot records are kept.
    pub data_dir: PathBuf,
    /// Where snapshots are dumped (and clones of them read from).
    pub store: DataStore,
    /// Open while this instance may act: the lease of one of several instances
    /// (`curve_lease`), always for a service alone.
    pub fence: Fence,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the snapshot/clone service failed: {0}")]
    Serve(#[from] std::io::Error),
}

struct Inner {
    client: Client,
    root: UserInfo,
    options: CloneOptions,
    tasks: Mutex<TaskStore>,
    snapshots: Arc<Snapshots>,
    fence: Fence,
    /// Held while a volume-source task is recorded, and while a task that no longer reads
    /// its source counts the others before making it Created again (upstream's
    /// `cloneRef_` lock): a task recorded meanwhile would see its BeingCloned undone.
    source_status: tokio::sync::Mutex<()>,
}

impl Inner {
    fn tasks(&self) -> MutexGuard<'_, TaskStore> {
        // A panic while holding the lock leaves the records as the file has them.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clone_tasks(&self) -> CloneTasks<'_> {
        CloneTasks::new(&self.client, self.root.clone(), self.options.clone())
            .fenced(self.fence.clone())
    }

    /// Changes a task's record; a record that cannot be written is logged (the task goes
    /// on, and is found in its last written state after a restart).
    fn update(&self, uuid: &str, change: impl FnOnce(&mut Task)) {
        let mut tasks = self.tasks();
        if let Some(mut task) = tasks.get(uuid).cloned() {
            change(&mut task);
            if let Err(e) = tasks.put(task) {
                tracing::error!(uuid, "cannot record the clone task: {e}");
            }
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes. Tasks left running by a
/// previous process are finished (a flatten) or marked failed (a clone stopped before its
/// destination existed: CleanCloneTask removes what it left).
pub async fn serve(
    config: ServiceConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let store = TaskStore::open(&config.data_dir)?.fenced(config.fence.clone());
    let snapshots = Snapshots::open(
        config.client.clone(),
        config.root.clone(),
        config.store,
        config.snapshot,
        &config.data_dir,
        config.fence.clone(),
    )?;
    let inner = Arc::new(Inner {
        client: config.client,
        root: config.root,
        options: config.options,
        tasks: Mutex::new(store),
        snapshots,
        fence: config.fence,
        source_status: tokio::sync::Mutex::new(()),
    });
    resume(&inner);
    inner.snapshots.resume();
    let app = axum::Router::new()
        .route("/SnapshotCloneService", axum::routing::any(handle))
        .with_state(Arc::clone(&inner));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn resume(inner: &Arc<Inner>) {
    let unfinished: Vec<Task> = inner
        .tasks()
        .all()
        .into_iter()
        .filter(|t| {
            matches!(
                t.status,
                TaskStatus::Cloning | TaskStatus::Recovering | TaskStatus::Retrying
            )
        })
        .cloned()
        .collect();
    for task in unfinished {
        if task.next_step as u8 >= CloneStep::RecoverChunk as u8 {
            tracing::info!(uuid = task.uuid, "resuming the flatten of {}", task.dest);
            spawn_flatten(Arc::clone(inner), task.uuid.clone());
        } else {
            tracing::warn!(
                uuid = task.uuid,
                "the clone of {} stopped before its destination existed: failed",
                task.dest
            );
            inner.update(&task.uuid, |t| t.status = TaskStatus::Error);
        }
    }
}

type Params = HashMap<String, String>;

/// One answer: a code, the task UUID errors of Clone carry, and the action's fields.
struct Reply {
    code: ServiceCode,
    uuid: Option<String>,
    fields: Map<String, Value>,
}

impl Reply {
    fn ok() -> Self {
        Self::code(ServiceCode::SUCCESS)
    }

    fn code(code: ServiceCode) -> Self {
        Self {
            code,
            uuid: None,
            fields: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.fields.insert(key.into(), value);
        self
    }
}

impl From<ServiceCode> for Reply {
    fn from(code: ServiceCode) -> Self {
        Reply::code(code)
    }
}

async fn handle(State(inner): State<Arc<Inner>>, Query(params): Query<Params>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let action = params.get("Action").cloned().unwrap_or_default();
    // The lease is checked as the request arrives and again once its answer is ready (as
    // the MDS's gate does): an instance stopped in between may have been replaced, and
    // its answer could tell of work the active instance never sees. A stopping service
    // answers -4, which clients take as "ask the next address".
    let reply = if !inner.fence.is_open() {
        Reply::from(ServiceCode::SERVICE_IS_STOP)
    } else {
        match dispatch(&inner, &action, &params).await {
            Ok(reply) => reply,
            Err(reply) => reply,
        }
    };
    let reply = if inner.fence.is_open() {
        reply
    } else {
        Reply::from(ServiceCode::SERVICE_IS_STOP)
    };
    tracing::info!(
        action,
        request_id,
        code = reply.code.code,
        "snapshot/clone service request"
    );
    let mut body = Map::new();
    body.insert("Code".into(), Value::String(reply.code.code.to_string()));
    body.insert("Message".into(), Value::String(reply.code.message.into()));
    body.insert("RequestId".into(), Value::String(request_id));
    if reply.code != ServiceCode::SUCCESS {
        // Upstream's error body always carries a UUID: the task's for Clone, else empty.
        body.insert("UUID".into(), Value::String(reply.uuid.unwrap_or_default()));
    }
    body.extend(reply.fields);
    let status =
        StatusCode::from_u16(reply.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = serde_json::to_string_pretty(&Value::Object(body)).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

type Answer = Result<Reply, Reply>;

/// The values of required parameters, each present and non-empty, or a bad request.
fn required<'p, const N: usize>(
    params: &'p Params,
    keys: [&str; N],
) -> Result<[&'p str; N], Reply> {
    let mut found = [""; N];
    for (slot, key) in found.iter_mut().zip(keys) {
        match params.get(key) {
            Some(v) if !v.is_empty() => *slot = v,
            _ => return Err(ServiceCode::INVALID_REQUEST.into()),
        }
    }
    Ok(found)
}

/// `Limit` (default 10) and `Offset` (default 0), either absent or empty for its
/// default; unparsable is a bad request.
fn page(params: &Params) -> Result<(usize, usize), Reply> {
    let number = |key: &str, default: usize| match params.get(key) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Reply::from(ServiceCode::INVALID_REQUEST)),
    };
    Ok((number("Limit", 10)?, number("Offset", 0)?))
}

/// Upstream's `CheckBoolParamter`.
fn boolean(value: &str) -> Result<bool, Reply> {
    match value {
        "true" | "True" | "TRUE" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "0" => Ok(false),
        _ => Err(ServiceCode::INVALID_REQUEST.into()),
    }
}

/// An optional parameter that, when given, must not be empty.
fn optional<'p>(params: &'p Params, key: &str) -> Result<Option<&'p str>, Reply> {
    match params.get(key) {
        Some(v) if v.is_empty() => Err(ServiceCode::INVALID_REQUEST.into()),
        other => Ok(other.map(String::as_str)),
    }
}

fn int_filter(params: &Params, key: &str) -> Result<Option<u8>, Reply> {
    params
        .get(key)
        .map(|v| {
            v.parse::<u8>()
                .map_err(|_| Reply::from(ServiceCode::INVALID_REQUEST))
        })
        .transpose()
}

async fn dispatch(inner: &Arc<Inner>, action: &str, params: &Params) -> Answer {
    required(params, ["Version"])?;
    match action {
        "Clone" => clone(inner, params).await,
        "Flatten" => flatten(inner, params),
        "GetCloneTasks" => get_clone_tasks(inner, params),
        "GetCloneTaskList" => get_clone_task_list(inner, params),
        "CleanCloneTask" => clean_clone_task(inner, params).await,
        "GetCloneRefStatus" => get_clone_ref_status(inner, params),
        "CreateSnapshot" => create_snapshot(inner, params).await,
        "DeleteSnapshot" => delete_snapshot(inner, params),
        "CancelSnapshot" => {
            let [user, uuid, file] = required(params, ["User", "UUID", "File"])?;
            inner.snapshots.cancel(uuid, user, file)?;
            Ok(Reply::ok())
        }
        "GetFileSnapshotInfo" => get_file_snapshot_info(inner, params),
        "GetFileSnapshotList" => get_file_snapshot_list(inner, params),
        "Recover" => recover(inner, params).await,
        _ => Err(ServiceCode::INVALID_REQUEST.into()),
    }
}

async fn create_snapshot(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user, file, name] = required(params, ["User", "File", "Name"])?;
    let uuid = inner.snapshots.create(file, user, name).await?;
    Ok(Reply::ok().with("UUID", json!(uuid)))
}

fn delete_snapshot(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user, uuid] = required(params, ["User", "UUID"])?;
    let file = params.get("File").map(String::as_str);
    // A clone or recover from the snapshot still reads it until its task ends.
    let in_use =
        |uuid: &str| {
            inner.tasks().all().into_iter().any(|t| {
                t.source == uuid && !matches!(t.status, TaskStatus::Done | TaskStatus::Error)
            })
        };
    inner.snapshots.delete(uuid, user, file, in_use)?;
    Ok(Reply::ok())
}

fn snapshot_list(snaps: &[Snapshot], params: &Params) -> Answer {
    let (limit, offset) = page(params)?;
    let items: Vec<Value> = snaps
        .iter()
        .skip(offset)
        .take(limit)
        .map(Snapshot::to_json)
        .collect();
    Ok(Reply::ok()
        .with("TotalCount", json!(snaps.len()))
        .with("Snapshots", Value::Array(items)))
}

fn get_file_snapshot_info(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user] = required(params, ["User"])?;
    page(params)?;
    // Without File, upstream lists the snapshots of the file "": none.
    let file = params.get("File").map_or("", String::as_str);
    let uuid = params.get("UUID").map(String::as_str);
    let snaps = inner.snapshots.file_snapshot_info(file, user, uuid)?;
    snapshot_list(&snaps, params)
}

fn get_file_snapshot_list(inner: &Arc<Inner>, params: &Params) -> Answer {
    page(params)?;
    let get = |key: &str| params.get(key).map(String::as_str);
    let filter = SnapshotFilter {
        user: get("User"),
        file: get("File"),
        uuid: get("UUID"),
        status: get("Status"),
    };
    let snaps = inner.snapshots.list(&filter);
    snapshot_list(&snaps, params)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn clone_error(e: &CloneError) -> ServiceCode {
    ServiceCode::of(e.service_code()).unwrap_or(ServiceCode::INTERNAL_ERROR)
}

/// The status of a clone or recover task at work.
fn working_status(task_type: TaskType) -> TaskStatus {
    match task_type {
        TaskType::Clone => TaskStatus::Cloning,
        TaskType::Recover => TaskStatus::Recovering,
    }
}

/// Recover (upstream's CloneOrRecoverPre for a recover): `Source` must be a done snapshot
/// of `Destination`, the user's, and `Destination` must exist. The volume is made again
/// from the snapshot as a clone is, with the seqNum after the one it replaces, and
/// renamed over it (the volume it replaces goes to the recycle bin).
async fn recover(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user, source, dest, lazy] = required(params, ["User", "Source", "Destination", "Lazy"])?;
    let lazy = boolean(lazy)?;
    let earlier: Vec<Task> = inner
        .tasks()
        .all()
        .into_iter()
        .filter(|t| t.dest == dest && t.task_type == TaskType::Recover)
        .cloned()
        .collect();
    for task in earlier {
        match task.status {
            TaskStatus::Recovering | TaskStatus::Retrying => {
                return if task.user == user && task.source == source && task.lazy == lazy {
                    Ok(Reply::ok().with("UUID", json!(task.uuid)))
                } else {
                    Err(ServiceCode::FILE_EXIST.into())
                };
            }
            TaskStatus::Done | TaskStatus::Error | TaskStatus::MetaInstalled => {}
            _ => return Err(ServiceCode::FILE_EXIST.into()),
        }
    }
    match inner.client.mds().get_file_info(dest, &inner.root).await {
        Ok(_) => {}
        Err(e) if matches!(e.code, ErrorCode::NotExist | ErrorCode::ParamError) => {
            return Err(ServiceCode::FILE_NOT_EXIST.into());
        }
        Err(e) => {
            tracing::warn!("GetFileInfo of the recover destination {dest}: {e}");
            return Err(ServiceCode::INTERNAL_ERROR.into());
        }
    }
    let snap = inner
        .snapshots
        .get(source)
        .filter(|s| s.file == dest && s.status == SnapshotStatus::Done)
        .ok_or_else(|| Reply::from(ServiceCode::INVALID_SNAPSHOT))?;
    if snap.user != user {
        return Err(ServiceCode::INVALID_USER.into());
    }
    start_task(
        inner,
        user,
        source,
        dest,
        lazy,
        None,
        TaskType::Recover,
        SourceType::Snapshot,
    )
    .await
}

async fn clone(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user, source, dest, lazy] = required(params, ["User", "Source", "Destination", "Lazy"])?;
    let lazy = boolean(lazy)?;
    let poolset = optional(params, "Poolset")?.map(str::to_owned);
    // Upstream's CloneOrRecoverPre: a retry of a running clone is the same task; another
    // task on the destination makes it taken, unless that one's file is gone.
    let earlier: Vec<Task> = inner
        .tasks()
        .all()
        .into_iter()
        .filter(|t| t.dest == dest && t.task_type == TaskType::Clone)
        .cloned()
        .collect();
    let mut finished = Vec::new();
    for task in earlier {
        match task.status {
            TaskStatus::Cloning | TaskStatus::Retrying => {
                return if task.user == user && task.source == source && task.lazy == lazy {
                    Ok(Reply::ok().with("UUID", json!(task.uuid)))
                } else {
                    Err(ServiceCode::FILE_EXIST.into())
                };
            }
            TaskStatus::Done | TaskStatus::Error | TaskStatus::MetaInstalled => finished.push(task),
            _ => return Err(ServiceCode::FILE_EXIST.into()),
        }
    }
    match inner.client.mds().get_file_info(dest, &inner.root).await {
        Ok(info) => {
            // The destination exists: it is this retry's clone if an earlier task made it.
            return match finished
                .iter()
                .find(|t| t.dest_id.is_some() && t.dest_id == info.id)
            {
                Some(task) => Ok(Reply::ok().with("UUID", json!(task.uuid))),
                None => Err(ServiceCode::FILE_EXIST.into()),
            };
        }
        Err(e) if e.code == ErrorCode::NotExist => {}
        Err(e) => {
            tracing::warn!("GetFileInfo of the clone destination {dest}: {e}");
            return Err(ServiceCode::INTERNAL_ERROR.into());
        }
    }
    // Upstream's CloneOrRecoverPre: the source is a snapshot if one has that UUID, else a
    // volume. A snapshot must be done and the user's.
    let source_type = if let Some(snap) = inner.snapshots.get(source) {
        if snap.status != SnapshotStatus::Done {
            return Err(ServiceCode::INVALID_SNAPSHOT.into());
        }
        if snap.user != user {
            return Err(ServiceCode::INVALID_USER.into());
        }
        SourceType::Snapshot
    } else {
        match inner.client.mds().get_file_info(source, &inner.root).await {
            Ok(_) => {}
            Err(e) if matches!(e.code, ErrorCode::NotExist | ErrorCode::ParamError) => {
                return Err(ServiceCode::FILE_NOT_EXIST.into());
            }
            Err(e) => {
                tracing::warn!("GetFileInfo of the clone source {source}: {e}");
                return Err(ServiceCode::INTERNAL_ERROR.into());
            }
        }
        SourceType::File
    };
    start_task(
        inner,
        user,
        source,
        dest,
        lazy,
        poolset,
        TaskType::Clone,
        source_type,
    )
    .await
}

/// Records a new clone or recover task and runs it: a lazy one answers once its
/// destination exists (stage 1), one that is not answers at once and is flattened in the
/// background.
#[allow(clippy::too_many_arguments)]
async fn start_task(
    inner: &Arc<Inner>,
    user: &str,
    source: &str,
    dest: &str,
    lazy: bool,
    poolset: Option<String>,
    task_type: TaskType,
    source_type: SourceType,
) -> Answer {
    let uuid = uuid::Uuid::new_v4().to_string();
    let task = Task {
        uuid: uuid.clone(),
        user: user.into(),
        source: source.into(),
        dest: dest.into(),
        temp: format!("{}/{uuid}", inner.options.temp_dir.trim_end_matches('/')),
        task_type,
        status: working_status(task_type),
        lazy,
        next_step: CloneStep::CreateCloneFile,
        time_us: now_us(),
        source_type,
        dest_id: None,
    };
    // The record first, as upstream: a restart must know the source may be BeingCloned.
    {
        let _source = inner.source_status.lock().await;
        inner.tasks().put(task.clone()).map_err(|e| {
            tracing::error!("cannot record the clone task: {e}");
            Reply::from(ServiceCode::INTERNAL_ERROR)
        })?;
    }
    if lazy {
        // A lazy clone answers once its destination exists (stage 1).
        match stage1(inner, &task, poolset.as_deref()).await {
            Ok(()) => {
                inner.update(&uuid, |t| t.status = TaskStatus::MetaInstalled);
                Ok(Reply::ok().with("UUID", json!(uuid)))
            }
            Err(code) => Err(Reply {
                code,
                uuid: Some(uuid),
                fields: Map::new(),
            }),
        }
    } else {
        let inner = Arc::clone(inner);
        let background = task.clone();
        tokio::spawn(async move {
            if stage1(&inner, &background, poolset.as_deref())
                .await
                .is_ok()
            {
                flatten_task(&inner, &background.uuid).await;
            }
        });
        Ok(Reply::ok().with("UUID", json!(uuid)))
    }
}

/// Stage 1 of a clone task: the destination exists as a lazy clone. Records the result.
async fn stage1(inner: &Arc<Inner>, task: &Task, poolset: Option<&str>) -> Result<(), ServiceCode> {
    let made = match task.source_type {
        SourceType::File => {
            inner
                .clone_tasks()
                .lazy_clone_through(
                    &task.temp,
                    &task.source,
                    &task.dest,
                    Some(&task.user),
                    poolset,
                )
                .await
        }
        SourceType::Snapshot => match snapshot_source(inner, &task.source).await {
            Ok((snap, index)) => {
                let tasks = inner.clone_tasks();
                match task.task_type {
                    TaskType::Clone => {
                        tasks
                            .lazy_clone_snapshot_through(
                                &task.temp, &snap, &index, &task.dest, &task.user, poolset,
                            )
                            .await
                    }
                    TaskType::Recover => {
                        tasks
                            .lazy_recover_through(&task.temp, &snap, &index, &task.dest, &task.user)
                            .await
                    }
                }
            }
            Err(e) => Err(e),
        },
    };
    match made {
        Ok(info) => {
            inner.update(&task.uuid, |t| {
                t.dest_id = info.id;
                t.next_step = CloneStep::RecoverChunk;
            });
            Ok(())
        }
        Err(e) => {
            tracing::warn!(uuid = task.uuid, "clone of {} failed: {e}", task.dest);
            inner.update(&task.uuid, |t| t.status = TaskStatus::Error);
            // Upstream's HandleCloneError: the source is no longer read by this task; a
            // failure to say so is only logged (CleanCloneTask says it again).
            if let Err(e) = release_source(inner, task).await {
                tracing::warn!(uuid = task.uuid, "cannot make {} Created: {e}", task.source);
            }
            Err(clone_error(&e))
        }
    }
}

/// Upstream's end of a task on a volume source (HandleCloneError, HandleCloneSuccess,
/// the clean of a failed task): unless another task still works on or lazily reads from
/// `task`'s source, the source goes from BeingCloned back to Created, so that it can be
/// renamed, snapshotted and have its segments freed again. A source already gone is fine.
async fn release_source(inner: &Arc<Inner>, task: &Task) -> Result<(), curve_client::Error> {
    if task.source_type != SourceType::File {
        return Ok(());
    }
    let _source = inner.source_status.lock().await;
    let referenced = inner.tasks().all().into_iter().any(|t| {
        t.uuid != task.uuid
            && t.source == task.source
            && t.source_type == SourceType::File
            && matches!(
                t.status,
                TaskStatus::Cloning
                    | TaskStatus::Recovering
                    | TaskStatus::Retrying
                    | TaskStatus::MetaInstalled
            )
    });
    if referenced || !inner.fence.is_open() {
        return Ok(());
    }
    match inner
        .client
        .set_clone_file_status(&task.source, &inner.root, None, FileStatus::KFileCreated)
        .await
    {
        Err(e) if e.code != ErrorCode::NotExist => Err(e),
        _ => Ok(()),
    }
}

/// The snapshot a clone task reads, and its chunk index.
async fn snapshot_source(
    inner: &Arc<Inner>,
    uuid: &str,
) -> Result<(Snapshot, ChunkIndex), CloneError> {
    let gone = || CloneError::FileNotExist(format!("snapshot {uuid}"));
    let snap = inner.snapshots.get(uuid).ok_or_else(gone)?;
    let index = inner
        .snapshots
        .data_store()
        .chunk_index(&snap.file, snap.seq_num)
        .await
        .map_err(|e| CloneError::Internal {
            step: "the snapshot's chunk index",
            source: curve_client::Error::new(ErrorCode::Failed, e.to_string()),
        })?
        .ok_or_else(gone)?;
    Ok((snap, index))
}

/// Stage 2 of a clone task (its flatten), recorded as it ends.
async fn flatten_task(inner: &Arc<Inner>, uuid: &str) {
    let Some(task) = inner.tasks().get(uuid).cloned() else {
        return;
    };
    let dest = task.dest.clone();
    let flattened = match task.source_type {
        SourceType::File => inner.clone_tasks().flatten(&dest).await,
        SourceType::Snapshot => match snapshot_source(inner, &task.source).await {
            Ok((snap, index)) => {
                inner
                    .clone_tasks()
                    .flatten_snapshot(&dest, &snap, &index)
                    .await
            }
            Err(e) => Err(e),
        },
    };
    let finished = match flattened {
        Ok(()) => {
            inner.update(uuid, |t| t.next_step = CloneStep::End);
            // Upstream's HandleCloneSuccess: a task done with its source whose status
            // cannot be set back ends in error.
            release_source(inner, &task).await.map_err(|e| {
                tracing::warn!(uuid, "cannot make {} Created: {e}", task.source);
            })
        }
        Err(e) => {
            // The source stays BeingCloned: the destination still reads from it (upstream
            // retries a lazy task's flatten, keeping its reference, for the same reason).
            tracing::warn!(uuid, "flatten of {dest} failed: {e}");
            Err(())
        }
    };
    inner.update(uuid, |t| {
        t.status = if finished.is_ok() {
            TaskStatus::Done
        } else {
            TaskStatus::Error
        };
    });
}

fn spawn_flatten(inner: Arc<Inner>, uuid: String) {
    tokio::spawn(async move { flatten_task(&inner, &uuid).await });
}

fn flatten(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [_user, uuid] = required(params, ["User", "UUID"])?;
    // Upstream's FlattenPre does not look at the user.
    let status = inner
        .tasks()
        .get(uuid)
        .map(|t| t.status)
        .ok_or_else(|| Reply::from(ServiceCode::FILE_NOT_EXIST))?;
    match status {
        TaskStatus::Done | TaskStatus::Cloning | TaskStatus::Recovering => Ok(Reply::ok()),
        TaskStatus::MetaInstalled => {
            inner.update(uuid, |t| t.status = working_status(t.task_type));
            spawn_flatten(Arc::clone(inner), uuid.to_owned());
            Ok(Reply::ok())
        }
        _ => Err(ServiceCode::FILE_STATUS_INVALID.into()),
    }
}

fn task_list(tasks: Vec<Task>, params: &Params) -> Answer {
    let (limit, offset) = page(params)?;
    let total = tasks.len();
    let infos: Vec<Value> = tasks
        .iter()
        .skip(offset)
        .take(limit)
        .map(Task::to_json)
        .collect();
    Ok(Reply::ok()
        .with("TotalCount", json!(total))
        .with("TaskInfos", Value::Array(infos)))
}

fn get_clone_tasks(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user] = required(params, ["User"])?;
    page(params)?;
    let uuid = params.get("UUID");
    let file = params.get("File");
    let tasks: Vec<Task> = inner.tasks().all().into_iter().cloned().collect();
    let chosen: Vec<Task> = if let Some(uuid) = uuid {
        let task = tasks
            .into_iter()
            .find(|t| &t.uuid == uuid)
            .ok_or_else(|| Reply::from(ServiceCode::FILE_NOT_EXIST))?;
        if task.user != user {
            return Err(ServiceCode::INVALID_USER.into());
        }
        vec![task]
    } else {
        tasks
            .into_iter()
            .filter(|t| t.user == user && file.is_none_or(|f| &t.dest == f))
            .collect()
    };
    task_list(chosen, params)
}

fn get_clone_task_list(inner: &Arc<Inner>, params: &Params) -> Answer {
    page(params)?;
    let status = int_filter(params, "Status")?;
    let kind = int_filter(params, "Type")?;
    let matches = |t: &Task| {
        params.get("User").is_none_or(|v| &t.user == v)
            && params.get("UUID").is_none_or(|v| &t.uuid == v)
            && params.get("Source").is_none_or(|v| &t.source == v)
            && params.get("Destination").is_none_or(|v| &t.dest == v)
            && status.is_none_or(|s| t.status as u8 == s)
            && kind.is_none_or(|k| t.task_type as u8 == k)
    };
    let tasks: Vec<Task> = inner
        .tasks()
        .all()
        .into_iter()
        .filter(|t| matches(t))
        .cloned()
        .collect();
    task_list(tasks, params)
}

async fn clean_clone_task(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [user, uuid] = required(params, ["User", "UUID"])?;
    let Some(task) = inner.tasks().get(uuid).cloned() else {
        // Unknown: already cleaned, and the call is idempotent.
        return Ok(Reply::ok());
    };
    if task.user != user {
        return Err(ServiceCode::INVALID_USER.into());
    }
    match task.status {
        TaskStatus::Done => {}
        TaskStatus::Error => {
            inner.update(uuid, |t| t.status = TaskStatus::ErrorCleaning);
            // Upstream's clean of a failed task says again that its source is no longer
            // read, in case the failure could not; not after a failed flatten, whose
            // destination still reads it.
            if (task.next_step as u8) < CloneStep::RecoverChunk as u8
                && let Err(e) = release_source(inner, &task).await
            {
                tracing::warn!(uuid, "cannot make {} Created: {e}", task.source);
                inner.update(uuid, |t| t.status = TaskStatus::Error);
                return Err(ServiceCode::INTERNAL_ERROR.into());
            }
            // What a failed clone left: its temporary file (the destination of a clone
            // that failed in its flatten stays, as upstream leaves it).
            match inner.client.unlink(&task.temp, &inner.root).await {
                Ok(()) => {}
                Err(e) if e.code == ErrorCode::NotExist => {}
                Err(e) => {
                    tracing::warn!(uuid, "cannot remove {}: {e}", task.temp);
                    inner.update(uuid, |t| t.status = TaskStatus::Error);
                    return Err(ServiceCode::INTERNAL_ERROR.into());
                }
            }
        }
        TaskStatus::Cleaning | TaskStatus::ErrorCleaning => return Ok(Reply::ok()),
        _ => return Err(ServiceCode::CANNOT_CLEAN_CLONE_UNFINISHED.into()),
    }
    inner.tasks().remove(uuid).map_err(|e| {
        tracing::error!(uuid, "cannot remove the clone task's record: {e}");
        Reply::from(ServiceCode::INTERNAL_ERROR)
    })?;
    Ok(Reply::ok())
}

fn get_clone_ref_status(inner: &Arc<Inner>, params: &Params) -> Answer {
    let [_user, source] = required(params, ["User", "Source"])?;
    // Upstream's GetCloneRefStatus: 0 no reference, 1 a task still works on the source,
    // 2 lazy clones (metaInstalled) that may still read it, listed for the caller to check.
    let mut ref_status = 0;
    let mut check = Vec::new();
    for task in inner.tasks().all() {
        if task.source != source {
            continue;
        }
        match task.status {
            TaskStatus::Done | TaskStatus::Error => {}
            TaskStatus::MetaInstalled => {
                ref_status = 2;
                check.push(json!({
                    "User": task.user,
                    "File": task.dest,
                    "Inode": task.dest_id.unwrap_or(0),
                }));
            }
            _ => {
                return Ok(Reply::ok()
                    .with("RefStatus", json!(1))
                    .with("TotalCount", json!(0)));
            }
        }
    }
    let mut reply = Reply::ok()
        .with("RefStatus", json!(ref_status))
        .with("TotalCount", json!(check.len()));
    if ref_status == 2 {
        reply = reply.with("CloneFileInfo", Value::Array(check));
    }
    Ok(reply)
}
