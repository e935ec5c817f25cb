//! What a client's calls and open files share: the configuration, the transport, the MDS
//! client and the copyset cache. It owns no fds and no files, so an open file can hold it
//! (an `Arc`) without reaching up into the facade that hands out fds.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::conf::ClientConfig;
use crate::error::{Error, Result};
use crate::mds::{ClientEndpoint, MdsClient};
use crate::metacache::CopysetCache;
use crate::metrics::IoMetrics;
use crate::transport::{BaiduStdTransport, GrpcTransport, Protocol, RoutedTransport, Transport};

pub struct Context {
    pub conf: Arc<ClientConfig>,
    pub transport: Arc<dyn Transport>,
    pub mds: Arc<MdsClient>,
    pub copysets: CopysetCache,
    /// The IO metrics of every file this client opened, summed as they are recorded.
    pub metrics: IoMetrics,
    /// Held open so the port reported to the MDS stays ours (`mds.registerToMDS`) for as
    /// long as any file of this client is open.
    _registration: Option<TcpListener>,
}

impl Context {
    /// The transports client.conf selects (`mds.transport`, `chunkserver.transport`).
    pub fn new(config: ClientConfig) -> Result<Context> {
        let connect_timeout = Duration::from_millis(config.rpc_connect_timeout_ms);
        let over = |protocol: Protocol, channels: usize| -> Arc<dyn Transport> {
            match protocol {
                Protocol::BaiduStd => Arc::new(BaiduStdTransport::new(
                    connect_timeout,
                    config.max_body_size,
                )),
                Protocol::Grpc => Arc::new(GrpcTransport::new(connect_timeout, channels)),
            }
        };
        let transport = RoutedTransport::new(
            over(config.mds_transport, 1),
            over(
                config.chunkserver_transport,
                config.channels_per_chunkserver as usize,
            ),
            config.chunkserver_transport,
        );
        Self::with_transport(config, Arc::new(transport))
    }

    /// A context over another transport (a fake in tests).
    pub fn with_transport(config: ClientConfig, transport: Arc<dyn Transport>) -> Result<Context> {
        let conf = Arc::new(config);
        let (registration, endpoint) = if conf.mds_register_to_mds {
            // A port unique to this client, so the MDS tells its file records apart from
            // other clients' on the same host.
            let l = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| Error::failed(format!("cannot reserve a client port: {e}")))?;
            let port = l
                .local_addr()
                .map_err(|e| Error::failed(format!("cannot read the client port: {e}")))?
                .port();
            (
                Some(l),
                Some(ClientEndpoint {
                    ip: "127.0.0.1".to_string(),
                    port: u32::from(port),
                }),
            )
        } else {
            (None, None)
        };
        let mds = Arc::new(MdsClient::new(transport.clone(), conf.clone(), endpoint));
        let copysets = CopysetCache::new(mds.clone(), transport.clone(), &conf);
        Ok(Context {
            conf,
            transport,
            mds,
            copysets,
            metrics: IoMetrics::default(),
            _registration: registration,
        })
    }

    /// Wall time one user IO may spend waiting and retrying (`chunkserver.maxRetryTimeMS`).
    pub fn io_budget(&self) -> Duration {
        Duration::from_millis(self.conf.chunkserver_max_retry_time_ms)
    }

    /// Largest chunk sub-request in bytes.
    pub fn split_size(&self) -> u64 {
        u64::from(self.conf.file_io_split_max_size_kb) * 1024
    }
}
