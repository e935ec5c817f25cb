//! The local cluster's `client.conf`, written from the client core's own key table and
//! defaults (`curve_client::conf`), so the two cannot disagree.
//!
//! The file holds every upstream key the core reads at the core's default, the keys
//! upstream's client requires but the core has no use for (so a stock libcurve accepts the
//! file too), and curvefs's own keys only where the caller sets them: a conf for the
//! default wire holds upstream's keys alone. Whatever the caller overrides (tests shorten
//! timeouts, choose the wire) replaces the default; a key neither table knows is refused.

use std::io::Write as _;
use std::path::PathBuf;

use curve_client::conf::{CURVEFS_KEYS, ClientConfig, KEYS};

use crate::{ClusterLayout, Error};

/// Name of the generated conf inside a cluster's data directory.
pub const CLIENT_CONF_FILE: &str = "client.conf";

/// Name of a chunkserver's own client conf inside its data directory: what its origin
/// reader (clone chunks) builds its client from (upstream's `cs_client.conf`).
pub const CHUNKSERVER_CLIENT_CONF_FILE: &str = "cs_client.conf";

/// Keys upstream's client requires that the core does not read, with the values of
/// upstream's sample conf. `global.logPath` is set to the cluster's `logs/` folder.
const UPSTREAM_ONLY: &[(&str, &str)] = &[
    ("schedule.queueCapacity", "1000000"),
    ("schedule.threadpoolSize", "2"),
    ("isolation.taskQueueCapacity", "1000000"),
    ("isolation.taskThreadPoolSize", "1"),
    ("global.logLevel", "0"),
    ("global.logPath", ""),
];

impl ClusterLayout {
    /// The text of this cluster's client.conf, with `overrides` (client.conf keys and
    /// their values) in place of the defaults. Checked by the core's own parser.
    pub fn client_conf(&self, overrides: &[(String, String)]) -> Result<String, Error> {
        let defaults = ClientConfig {
            mds_addrs: self
                .mds_ports
                .iter()
                .map(|p| self.client_addr_string(*p))
                .collect(),
            ..ClientConfig::default()
        };
        let log_path = self.dir.join("logs").display().to_string();
        let mut pairs: Vec<(String, String)> = KEYS
            .iter()
            .filter(|(_, key)| !CURVEFS_KEYS.contains(key))
            .map(|(_, key)| (key.to_string(), defaults.value(key).unwrap_or_default()))
            .collect();
        pairs.extend(UPSTREAM_ONLY.iter().map(|(key, value)| {
            let value = if *key == "global.logPath" {
                log_path.clone()
            } else {
                value.to_string()
            };
            (key.to_string(), value)
        }));
        for (key, value) in overrides {
            let known =
                KEYS.iter().any(|(_, k)| k == key) || UPSTREAM_ONLY.iter().any(|(k, _)| k == key);
            if !known {
                return Err(Error::ClientConf(format!(
                    "{key:?} is not a client.conf key curvefs or upstream reads"
                )));
            }
            if value.contains(['\n', '#']) {
                return Err(Error::ClientConf(format!(
                    "the value of {key} holds a newline or '#': {value:?}"
                )));
            }
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(pair) => pair.1 = value.clone(),
                None => pairs.push((key.clone(), value.clone())),
            }
        }
        let mut text = String::from("# client.conf for the curvefs local cluster in this folder\n");
        for (key, value) in &pairs {
            text.push_str(&format!("{key}={value}\n"));
        }
        ClientConfig::parse(&text).map_err(|e| Error::ClientConf(e.message))?;
        Ok(text)
    }

    /// Writes [`client_conf`](Self::client_conf) to `<dir>/client.conf` (replacing the
    /// file whole, so a client reading it meanwhile sees the old or the new one) and
    /// returns its path.
    pub fn write_client_conf(&self, overrides: &[(String, String)]) -> Result<PathBuf, Error> {
        let text = self.client_conf(overrides)?;
        write_whole(&self.dir.join(CLIENT_CONF_FILE), &text)
    }

    /// Where chunkserver `id`'s own client conf lives (see
    /// [`CHUNKSERVER_CLIENT_CONF_FILE`]).
    pub fn chunkserver_client_conf_path(&self, id: u32) -> PathBuf {
        self.chunkserver_data_dir(id)
            .join(CHUNKSERVER_CLIENT_CONF_FILE)
    }

    /// Writes chunkserver `id`'s client conf: the cluster's client.conf at its defaults.
    pub fn write_chunkserver_client_conf(&self, id: u32) -> Result<PathBuf, Error> {
        let text = self.client_conf(&[])?;
        let path = self.chunkserver_client_conf_path(id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        write_whole(&path, &text)
    }
}

/// Replaces `path` with `text` whole, so a reader sees the old file or the new one.
fn write_whole(path: &std::path::Path, text: &str) -> Result<PathBuf, Error> {
    let path = path.to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Write { path, source });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    fn layout() -> ClusterLayout {
        ClusterLayout::parse(
            Path::new("/data"),
            r#"{"mds_ports": [6700, 6701], "chunkservers": [{"id": 1, "port": 8201}]}"#,
        )
        .unwrap()
    }

    fn pairs(text: &str) -> HashMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_conf_holds_the_cores_defaults_and_upstreams_required_keys() {
        let text = layout().client_conf(&[]).unwrap();
        let kv = pairs(&text);
        assert_eq!(kv["mds.listen.addr"], "127.0.0.1:6700,127.0.0.1:6701");
        assert_eq!(kv["global.logPath"], "/data/logs");
        assert_eq!(kv["schedule.threadpoolSize"], "2");
        let core = ClientConfig::default();
        for (_, key) in KEYS {
            if *key == "mds.listen.addr" {
                continue;
            }
            if CURVEFS_KEYS.contains(key) {
                assert!(!kv.contains_key(*key), "{key} written at its default");
            } else {
                assert_eq!(kv[*key], core.value(key).unwrap(), "{key}");
            }
        }
        let parsed = ClientConfig::parse(&text).unwrap();
        assert_eq!(
            parsed,
            ClientConfig {
                mds_addrs: vec!["127.0.0.1:6700".into(), "127.0.0.1:6701".into()],
                ..core
            }
        );
    }

    #[test]
    fn overrides_replace_defaults_and_curvefs_keys_appear_when_set() {
        let o = |k: &str, v: &str| (k.to_string(), v.to_string());
        let text = layout()
            .client_conf(&[
                o("mds.rpcTimeoutMS", "1234"),
                o("chunkserver.transport", "grpc"),
                o("global.logLevel", "2"),
            ])
            .unwrap();
        let kv = pairs(&text);
        assert_eq!(kv["mds.rpcTimeoutMS"], "1234");
        assert_eq!(kv["chunkserver.transport"], "grpc");
        assert_eq!(kv["global.logLevel"], "2");
        assert_eq!(text.matches("mds.rpcTimeoutMS=").count(), 1);
        let c = ClientConfig::parse(&text).unwrap();
        assert_eq!(c.mds_rpc_timeout_ms, 1234);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let o = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let e = layout()
            .client_conf(&o("mds.rpcTimeoutMs", "1"))
            .unwrap_err();
        assert!(e.to_string().contains("mds.rpcTimeoutMs"), "{e}");
        let e = layout()
            .client_conf(&o("mds.rpcTimeoutMS", "soon"))
            .unwrap_err();
        assert!(e.to_string().contains("mds.rpcTimeoutMS"), "{e}");
        let e = layout()
            .client_conf(&o("mds.rpcTimeoutMS", "1\nmds.listen.addr=x"))
            .unwrap_err();
        assert!(e.to_string().contains("newline"), "{e}");
    }

    #[test]
    fn each_chunkserver_gets_a_client_conf_in_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"mds_ports": [6700], "chunkservers": [{"id": 1, "port": 8201}]}"#;
        let l = ClusterLayout::parse(dir.path(), text).unwrap();
        let path = l.write_chunkserver_client_conf(1).unwrap();
        assert_eq!(
            path,
            dir.path()
                .join("chunkserver-1")
                .join(CHUNKSERVER_CLIENT_CONF_FILE)
        );
        assert_eq!(path, l.chunkserver_client_conf_path(1));
        let conf = ClientConfig::from_file(&path).unwrap();
        assert_eq!(conf.mds_addrs, vec!["127.0.0.1:6700".to_string()]);
        // The chunkserver's origin reader is given that conf.
        let config = l.chunkserver_config(1).unwrap();
        let origin = format!("{:?}", config.origin);
        assert!(
            origin.contains("cs_client.conf") && origin.contains("root"),
            "{origin}"
        );
    }

    #[test]
    fn the_conf_is_written_into_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"mds_ports": [6700], "chunkservers": [{"id": 1, "port": 8201}]}"#;
        let l = ClusterLayout::parse(dir.path(), text).unwrap();
        let path = l.write_client_conf(&[]).unwrap();
        assert_eq!(path, dir.path().join(CLIENT_CONF_FILE));
        assert!(
            ClientConfig::from_file(&path)
                .unwrap()
                .mds_addrs
                .contains(&"127.0.0.1:6700".to_string())
        );
    }
}
