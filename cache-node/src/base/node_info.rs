//! What a node tells its peers about itself at [`NODE_PATH`]: its identity and the ports its
//! Redis protocol front end listens on. `CLUSTER SLOTS` and `-MOVED` name each node by its
//! RESP port, and only the node itself knows it: in Kubernetes every pod uses the same one,
//! but nodes sharing a host (local clusters, tests) each have their own. The HTTP front end
//! serves this, the RESP front end reads it from every peer; both are above `base`.

use serde::{Deserialize, Serialize};

/// The internal route that answers a [`NodeInfo`].
pub const NODE_PATH: &str = "/internal/v1/node";

/// The ports a node serves RESP on; `None` where it has no such listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RespPorts {
    /// `--resp-listen`'s port.
    pub resp_port: Option<u16>,
    /// `--resp-tls-listen`'s port.
    pub resp_tls_port: Option<u16>,
}

impl RespPorts {
    /// The port a client connected over TLS (`tls`) or not is sent to, as Redis names the
    /// TLS port to a TLS client.
    pub fn for_client(&self, tls: bool) -> Option<u16> {
        if tls {
            self.resp_tls_port
        } else {
            self.resp_port
        }
    }
}

/// The answer of [`NODE_PATH`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's identity for placement (its member id); `None` while its discovery does
    /// not list it.
    pub id: Option<String>,
    /// Its RESP ports.
    #[serde(flatten)]
    pub ports: RespPorts,
}
