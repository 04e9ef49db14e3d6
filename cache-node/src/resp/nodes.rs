//! Where each node of the partitioned topology serves RESP, for `CLUSTER SLOTS`, `SHARDS`,
//! `NODES` and `-MOVED`. The topology knows each node by its HTTP address only; the RESP
//! port is the node's own to tell (in Kubernetes every pod uses the same one, but nodes
//! sharing a host each have their own), so every node is asked once at
//! `GET /internal/v1/node` ([`NODE_PATH`]) when the topology's epoch changes, and a node
//! that did not answer is asked again at most every [`RETRY_AFTER`]. Until a node has
//! answered, this node's own ports stand in for its.
//!
//! The fetch runs in the command that needs the ports, single-flight: a client that asks for
//! `CLUSTER SLOTS` right after a membership change waits up to [`FETCH_TIMEOUT`] once, rather
//! than being sent to ports that are not known yet.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::base::auth::PeerCredential;
use crate::base::node_info::{NODE_PATH, NodeInfo, RespPorts};
use crate::replication::Peer;
use crate::replication::Topology;

/// How long one node may take to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a node that did not answer is not asked again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The largest answer read: a [`NodeInfo`] is well under 1 KiB.
const MAX_ANSWER: usize = 16 * 1024;

/// Why a node's ports could not be learnt.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request could not be built from the address.
    #[error("{address} is not a usable address: {source}")]
    Address {
        /// The node's HTTP address.
        address: String,
        /// Why.
        source: http::Error,
    },
    /// No connection or no answer.
    #[error("{address} did not answer: {source}")]
    Request {
        /// The node's HTTP address.
        address: String,
        /// Why.
        source: hyper_util::client::legacy::Error,
    },
    /// No answer in time.
    #[error("{address} did not answer within {} ms", FETCH_TIMEOUT.as_millis())]
    Timeout {
        /// The node's HTTP address.
        address: String,
    },
    /// An answer other than success (401: the peer tokens differ).
    #[error("{address} answered {status}")]
    Status {
        /// The node's HTTP address.
        address: String,
        /// The status.
        status: StatusCode,
    },
    /// The answer's body could not be read or is not a [`NodeInfo`].
    #[error("{address} sent an answer that is not a node description: {reason}")]
    Answer {
        /// The node's HTTP address.
        address: String,
        /// Why.
        reason: String,
    },
}

/// The RESP ports of the topology's nodes, as far as they answered.
#[derive(Debug)]
pub struct Directory {
    /// This node's ports: its own entry, and the stand-in for nodes not heard from.
    own: RespPorts,
    /// Pooled connections to the peers' HTTP listeners.
    client: Client<HttpConnector, Full<Bytes>>,
    /// The `Authorization` values to present, in order (the current peer token, then the
    /// previous one for a peer that refuses it); empty where peers require none.
    authorizations: Vec<HeaderValue>,
    /// What is known.
    known: RwLock<Known>,
    /// Held while fetching, so that one membership change costs one round of requests.
    fetching: tokio::sync::Mutex<()>,
}

/// The ports learnt for one topology epoch.
#[derive(Debug, Default)]
struct Known {
    /// The epoch they were fetched for; 0 before the first fetch.
    epoch: u64,
    /// By HTTP address.
    ports: HashMap<String, RespPorts>,
    /// Addresses that did not answer in the last round.
    unanswered: Vec<String>,
    /// When the last round ended.
    fetched_at: Option<Instant>,
}

impl Directory {
    /// A directory for a node serving RESP on `own`, presenting `credential` to its peers.
    pub fn new(own: RespPorts, credential: Option<&PeerCredential>) -> Directory {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(FETCH_TIMEOUT));
        Directory {
            own,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector),
            authorizations: credential.map_or_else(Vec::new, PeerCredential::header_values),
            known: RwLock::new(Known::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// This node's own ports.
    pub fn own(&self) -> RespPorts {
        self.own
    }

    /// Learns the ports of `topology`'s nodes, unless they are known for its epoch already:
    /// all of them after an epoch change, else those that did not answer last time (at most
    /// every [`RETRY_AFTER`]). A node that does not answer keeps what was known of it.
    pub async fn refresh(&self, topology: &Topology) {
        if self.is_current(topology) {
            return;
        }
        let _fetching = self.fetching.lock().await;
        if self.is_current(topology) {
            return;
        }
        let wanted: Vec<&Peer> = {
            let known = self.read();
            topology
                .nodes
                .iter()
                .filter(|peer| !peer.is_local())
                .filter(|peer| {
                    known.epoch != topology.epoch
                        || known.unanswered.iter().any(|a| a == peer.address())
                })
                .collect()
        };
        let answers =
            futures::future::join_all(wanted.iter().map(|peer| self.fetch(peer.address()))).await;
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known.unanswered.clear();
        for (peer, answer) in wanted.iter().zip(answers) {
            match answer {
                Ok(info) => {
                    known.ports.insert(peer.address().to_string(), info.ports);
                }
                Err(error) => {
                    tracing::warn!(%error, "the RESP ports of a peer are not known; CLUSTER SLOTS and MOVED name this node's ports for it until it answers");
                    known.unanswered.push(peer.address().to_string());
                }
            }
        }
        known
            .ports
            .retain(|address, _| topology.nodes.iter().any(|p| p.address() == address));
        known.epoch = topology.epoch;
        known.fetched_at = Some(Instant::now());
    }

    /// The ports `peer` serves RESP on: this node's own for this node and for a node not
    /// heard from yet.
    pub fn ports(&self, peer: &Peer) -> RespPorts {
        if peer.is_local() {
            return self.own;
        }
        self.read()
            .ports
            .get(peer.address())
            .copied()
            .unwrap_or(self.own)
    }

    /// Whether what is known is for `topology`'s epoch and needs no retry yet.
    fn is_current(&self, topology: &Topology) -> bool {
        let known = self.read();
        known.epoch == topology.epoch
            && (known.unanswered.is_empty()
                || known
                    .fetched_at
                    .is_some_and(|at| at.elapsed() < RETRY_AFTER))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the node at `address` (`host:port` of its HTTP listener) for its [`NodeInfo`],
    /// with the current peer token and, if it answers 401, with the previous one.
    async fn fetch(&self, address: &str) -> Result<NodeInfo, FetchError> {
        let attempts: Vec<Option<&HeaderValue>> = if self.authorizations.is_empty() {
            vec![None]
        } else {
            self.authorizations.iter().map(Some).collect()
        };
        let mut last = None;
        for authorization in attempts {
            match self.fetch_once(address, authorization).await {
                Err(FetchError::Status { status, .. }) if status == StatusCode::UNAUTHORIZED => {
                    last = Some(FetchError::Status {
                        address: address.to_string(),
                        status,
                    });
                }
                outcome => return outcome,
            }
        }
        Err(last.unwrap_or(FetchError::Status {
            address: address.to_string(),
            status: StatusCode::UNAUTHORIZED,
        }))
    }

    async fn fetch_once(
        &self,
        address: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<NodeInfo, FetchError> {
        let mut request = http::Request::get(format!("http://{address}{NODE_PATH}"));
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let request =
            request
                .body(Full::new(Bytes::new()))
                .map_err(|source| FetchError::Address {
                    address: address.to_string(),
                    source,
                })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| FetchError::Request {
                        address: address.to_string(),
                        source,
                    })?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    address: address.to_string(),
                    status,
                });
            }
            let answer_error = |reason: String| FetchError::Answer {
                address: address.to_string(),
                reason,
            };
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|error| answer_error(error.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|error| answer_error(error.to_string()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout {
                address: address.to_string(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use tidecache_contract::placement::{Assignment, Member};

    use super::*;

    #[tokio::test]
    async fn a_node_that_does_not_answer_is_named_by_this_nodes_ports_and_asked_again() {
        // Port 1 on loopback refuses connections at once.
        let peers = vec![Peer::new("127.0.0.1:1"), Peer::new("127.0.0.1:2").local()];
        let topology = Topology {
            assignment: Assignment::compute(
                peers.iter().map(|peer| Member::new(peer.id(), None)),
                2,
            ),
            nodes: peers.clone(),
            local: Some(1),
            epoch: 1,
            fingerprint: 0,
        };
        let own = RespPorts {
            resp_port: Some(6379),
            resp_tls_port: None,
        };
        let directory = Directory::new(own, None);
        directory.refresh(&topology).await;
        assert_eq!(directory.ports(&peers[0]), own);
        assert_eq!(directory.ports(&peers[1]), own);
        assert!(directory.is_current(&topology), "not asked again at once");
        assert_eq!(directory.read().unanswered, ["127.0.0.1:1"]);
        tokio::time::sleep(RETRY_AFTER).await;
        assert!(
            !directory.is_current(&topology),
            "asked again after a while"
        );
        let next = Topology {
            epoch: 2,
            ..topology
        };
        assert!(!directory.is_current(&next), "asked again on a new epoch");
    }
}
