//! The tonic face of the namespace: decodes nothing itself, runs each call of
//! [`Namespace`] on a blocking thread (redb commits fsync) and turns refusals into
//! `statusCode`s. Every Curve outcome is an `Ok` gRPC response; gRPC errors are never used,
//! because Curve clients read only `statusCode`.

use std::sync::Arc;

use curve_proto::mds::curve_fs_service_server::CurveFsService;
use curve_proto::mds::{
    ChangeOwnerRequest, ChangeOwnerResponse, CloseFileRequest, CloseFileResponse,
    CreateCloneFileRequest, CreateCloneFileResponse, CreateFileRequest, CreateFileResponse,
    DeAllocateSegmentRequest, DeAllocateSegmentResponse, DeleteFileRequest, DeleteFileResponse,
    ExtendFileRequest, ExtendFileResponse, GetFileInfoRequest, GetFileInfoResponse,
    GetOrAllocateSegmentRequest, GetOrAllocateSegmentResponse, IncreaseFileEpochRequest,
    IncreaseFileEpochResponse, ListDirRequest, ListDirResponse, OpenFileRequest, OpenFileResponse,
    ReFreshSessionRequest, ReFreshSessionResponse, RecoverFileRequest, RecoverFileResponse,
    RenameFileRequest, RenameFileResponse, SetCloneFileStatusRequest, SetCloneFileStatusResponse,
    StatusCode,
};
use curve_proto::mds::{
    CheckSnapShotStatusRequest, CheckSnapShotStatusResponse, CreateSnapShotRequest,
    CreateSnapShotResponse, DeleteSnapShotRequest, DeleteSnapShotResponse, FileStatus,
    ListSnapShotFileInfoRequest, ListSnapShotFileInfoResponse,
};
use tonic::{Request, Response, Status};

use crate::clean::Cleaner;
use crate::namespace::{Namespace, NsResult};

pub(crate) struct CurveFsServiceImpl {
    pub ns: Arc<Namespace>,
    pub cleaner: Arc<Cleaner>,
}

type Answer<T> = Result<Response<T>, Status>;

impl CurveFsServiceImpl {
    async fn run<T, F>(&self, method: &'static str, f: F) -> Result<T, StatusCode>
    where
        T: Send + 'static,
        F: FnOnce(&Namespace) -> NsResult<T> + Send + 'static,
    {
        // One event per call, off unless asked for (`CURVEFS_LOG=info,curve_mds::rpc=trace`):
        // benches/bench_scale.py counts RefreshSession calls with it.
        tracing::trace!(target: "curve_mds::rpc", method);
        let ns = Arc::clone(&self.ns);
        let outcome = match tokio::task::spawn_blocking(move || f(&ns)).await {
            Ok(result) => result.map_err(|r| r.0),
            Err(e) => {
                tracing::error!("{method} failed: {e}");
                Err(StatusCode::KInternalError)
            }
        };
        if let Err(code) = outcome {
            tracing::debug!("{method}: {}", code.as_str_name());
        }
        outcome
    }
}

fn code<T>(outcome: &Result<T, StatusCode>) -> i32 {
    match outcome {
        Ok(_) => StatusCode::KOk as i32,
        Err(c) => *c as i32,
    }
}

#[tonic::async_trait]
impl CurveFsService for CurveFsServiceImpl {
    async fn create_file(&self, request: Request<CreateFileRequest>) -> Answer<CreateFileResponse> {
        let req = request.into_inner();
        let outcome = self.run("CreateFile", move |ns| ns.create_file(&req)).await;
        Ok(Response::new(CreateFileResponse {
            status_code: code(&outcome),
        }))
    }

    async fn delete_file(&self, request: Request<DeleteFileRequest>) -> Answer<DeleteFileResponse> {
        let req = request.into_inner();
        let outcome = self.run("DeleteFile", move |ns| ns.delete_file(&req)).await;
        Ok(Response::new(DeleteFileResponse {
            status_code: code(&outcome),
        }))
    }

    async fn recover_file(
        &self,
        request: Request<RecoverFileRequest>,
    ) -> Answer<RecoverFileResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("RecoverFile", move |ns| ns.recover_file(&req))
            .await;
        Ok(Response::new(RecoverFileResponse {
            status_code: code(&outcome),
        }))
    }

    async fn get_file_info(
        &self,
        request: Request<GetFileInfoRequest>,
    ) -> Answer<GetFileInfoResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("GetFileInfo", move |ns| ns.get_file_info(&req))
            .await;
        Ok(Response::new(GetFileInfoResponse {
            status_code: code(&outcome),
            file_info: outcome.ok(),
        }))
    }

    async fn get_or_allocate_segment(
        &self,
        request: Request<GetOrAllocateSegmentRequest>,
    ) -> Answer<GetOrAllocateSegmentResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("GetOrAllocateSegment", move |ns| {
                ns.get_or_allocate_segment(&req)
            })
            .await;
        Ok(Response::new(GetOrAllocateSegmentResponse {
            status_code: code(&outcome),
            page_file_segment: outcome.ok(),
        }))
    }

    async fn de_allocate_segment(
        &self,
        request: Request<DeAllocateSegmentRequest>,
    ) -> Answer<DeAllocateSegmentResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("DeAllocateSegment", move |ns| ns.de_allocate_segment(&req))
            .await;
        Ok(Response::new(DeAllocateSegmentResponse {
            status_code: code(&outcome),
        }))
    }

    async fn rename_file(&self, request: Request<RenameFileRequest>) -> Answer<RenameFileResponse> {
        let req = request.into_inner();
        let outcome = self.run("RenameFile", move |ns| ns.rename_file(&req)).await;
        Ok(Response::new(RenameFileResponse {
            status_code: code(&outcome),
        }))
    }

    async fn extend_file(&self, request: Request<ExtendFileRequest>) -> Answer<ExtendFileResponse> {
        let req = request.into_inner();
        let outcome = self.run("ExtendFile", move |ns| ns.extend_file(&req)).await;
        Ok(Response::new(ExtendFileResponse {
            status_code: code(&outcome),
        }))
    }

    async fn change_owner(
        &self,
        request: Request<ChangeOwnerRequest>,
    ) -> Answer<ChangeOwnerResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("ChangeOwner", move |ns| ns.change_owner(&req))
            .await;
        Ok(Response::new(ChangeOwnerResponse {
            status_code: code(&outcome),
        }))
    }

    async fn list_dir(&self, request: Request<ListDirRequest>) -> Answer<ListDirResponse> {
        let req = request.into_inner();
        let outcome = self.run("ListDir", move |ns| ns.list_dir(&req)).await;
        Ok(Response::new(ListDirResponse {
            status_code: code(&outcome),
            file_info: outcome.unwrap_or_default(),
        }))
    }

    async fn open_file(&self, request: Request<OpenFileRequest>) -> Answer<OpenFileResponse> {
        let req = request.into_inner();
        let outcome = self.run("OpenFile", move |ns| ns.open_file(&req)).await;
        let status_code = code(&outcome);
        let (proto_session, file_info, clone_source_segment) = match outcome {
            Ok((session, info, segments)) => (Some(session), Some(info), segments),
            Err(_) => (None, None, None),
        };
        Ok(Response::new(OpenFileResponse {
            status_code,
            proto_session,
            file_info,
            clone_source_segment,
        }))
    }

    async fn close_file(&self, request: Request<CloseFileRequest>) -> Answer<CloseFileResponse> {
        let peer = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let outcome = self
            .run("CloseFile", move |ns| ns.close_file(&req, peer))
            .await;
        Ok(Response::new(CloseFileResponse {
            status_code: code(&outcome),
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<ReFreshSessionRequest>,
    ) -> Answer<ReFreshSessionResponse> {
        let peer = request.remote_addr().map(|a| a.ip());
        let req = request.into_inner();
        let session_id = req.session_id.clone();
        let outcome = self
            .run("RefreshSession", move |ns| ns.refresh_session(&req, peer))
            .await;
        Ok(Response::new(ReFreshSessionResponse {
            status_code: code(&outcome),
            session_id,
            file_info: outcome.ok(),
            proto_session: None,
        }))
    }

    async fn increase_file_epoch(
        &self,
        request: Request<IncreaseFileEpochRequest>,
    ) -> Answer<IncreaseFileEpochResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("IncreaseFileEpoch", move |ns| ns.increase_file_epoch(&req))
            .await;
        let status_code = code(&outcome);
        let (file_info, cs_locs) = match outcome {
            Ok((info, locs)) => (Some(info), locs),
            Err(_) => (None, Vec::new()),
        };
        Ok(Response::new(IncreaseFileEpochResponse {
            status_code,
            file_info,
            cs_locs,
        }))
    }

    async fn create_clone_file(
        &self,
        request: Request<CreateCloneFileRequest>,
    ) -> Answer<CreateCloneFileResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("CreateCloneFile", move |ns| ns.create_clone_file(&req))
            .await;
        Ok(Response::new(CreateCloneFileResponse {
            status_code: code(&outcome),
            file_info: outcome.ok(),
        }))
    }

    async fn set_clone_file_status(
        &self,
        request: Request<SetCloneFileStatusRequest>,
    ) -> Answer<SetCloneFileStatusResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("SetCloneFileStatus", move |ns| {
                ns.set_clone_file_status(&req)
            })
            .await;
        Ok(Response::new(SetCloneFileStatusResponse {
            status_code: code(&outcome),
        }))
    }

    async fn create_snap_shot(
        &self,
        request: Request<CreateSnapShotRequest>,
    ) -> Answer<CreateSnapShotResponse> {
        let req = request.into_inner();
        let ns = Arc::clone(&self.ns);
        tracing::trace!(target: "curve_mds::rpc", method = "CreateSnapShot");
        let outcome = tokio::task::spawn_blocking(move || ns.create_snapshot(&req))
            .await
            .unwrap_or_else(|e| {
                tracing::error!("CreateSnapShot failed: {e}");
                Err((StatusCode::KInternalError.into(), None))
            });
        let (status_code, snap_shot_file_info) = match outcome {
            Ok(info) => (StatusCode::KOk as i32, Some(info)),
            Err((refusal, existing)) => (refusal.0 as i32, existing.map(|b| *b)),
        };
        Ok(Response::new(CreateSnapShotResponse {
            status_code,
            snap_shot_file_info,
        }))
    }

    async fn list_snap_shot(
        &self,
        request: Request<ListSnapShotFileInfoRequest>,
    ) -> Answer<ListSnapShotFileInfoResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("ListSnapShot", move |ns| ns.list_snapshots(&req))
            .await;
        Ok(Response::new(ListSnapShotFileInfoResponse {
            status_code: code(&outcome),
            file_info: outcome.unwrap_or_default(),
        }))
    }

    async fn delete_snap_shot(
        &self,
        request: Request<DeleteSnapShotRequest>,
    ) -> Answer<DeleteSnapShotResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("DeleteSnapShot", move |ns| ns.delete_snapshot(&req))
            .await;
        let status_code = code(&outcome);
        if let Ok(plan) = outcome {
            self.cleaner.submit(plan);
        }
        Ok(Response::new(DeleteSnapShotResponse { status_code }))
    }

    async fn check_snap_shot_status(
        &self,
        request: Request<CheckSnapShotStatusRequest>,
    ) -> Answer<CheckSnapShotStatusResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("CheckSnapShotStatus", move |ns| ns.snapshot_status(&req))
            .await;
        let answer = match outcome {
            Err(StatusCode::KSnapshotFileNotExists) => CheckSnapShotStatusResponse {
                status_code: StatusCode::KSnapshotFileNotExists as i32,
                file_status: None,
                progress: Some(100),
            },
            Err(c) => CheckSnapShotStatusResponse {
                status_code: c as i32,
                file_status: None,
                progress: None,
            },
            Ok((file, seq, status)) => {
                let (status_code, progress) = if status == FileStatus::KFileDeleting {
                    // As upstream: a deleting snapshot without a clean task is an error.
                    match self.cleaner.progress(file, seq) {
                        Some(p) => (StatusCode::KOk, p.percent),
                        None => (StatusCode::KSnapshotFileDeleteError, 0),
                    }
                } else {
                    (StatusCode::KOk, 0)
                };
                CheckSnapShotStatusResponse {
                    status_code: status_code as i32,
                    file_status: Some(status as i32),
                    progress: Some(progress),
                }
            }
        };
        Ok(Response::new(answer))
    }

    async fn get_snap_shot_file_segment(
        &self,
        request: Request<GetOrAllocateSegmentRequest>,
    ) -> Answer<GetOrAllocateSegmentResponse> {
        let req = request.into_inner();
        let outcome = self
            .run("GetSnapShotFileSegment", move |ns| {
                ns.snapshot_segment(&req)
            })
            .await;
        Ok(Response::new(GetOrAllocateSegmentResponse {
            status_code: code(&outcome),
            page_file_segment: outcome.ok(),
        }))
    }
}
