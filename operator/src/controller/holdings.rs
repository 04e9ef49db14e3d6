//! The partition moves of a Partitioned cluster, as its cache pods report them.
//!
//! When the membership changes, partitions move to their new owners with their data: a pod
//! that gains a partition pulls it before it serves it, and a pod that lost one keeps it until
//! every new owner holds it. Only the pods know how far that has come, so the operator asks
//! each of them (`GET /internal/v1/partitions` on the pod's IP and HTTP port, with the peer
//! token from the Secret it generated): each answers the fingerprint of the membership it
//! places keys by, the partitions it holds completely and those it holds at all. What a pod
//! holds but has not completed is moving (gaining or kept).
//!
//! # Why the operator asks rather than the pods reporting
//! Nothing else sees all pods' holdings at once, and a reconcile already lists the pods; the
//! reads are small (two bitmaps of 1024 bits), made all at once with a short timeout each, so
//! an unreachable pod delays a reconcile by at most [`READ_TIMEOUT`] and is reported as
//! unread instead of failing the reconcile.
//!
//! # Assumptions
//! - The operator reaches the pods' HTTP port on their pod IPs (true inside the Kubernetes
//!   cluster wherever no NetworkPolicy enforcement keeps it out; see operator/README.md).
//! - During a peer-token rotation, pods not restarted yet accept only the previous token, so
//!   a refused token is retried once with the previous one, as the pods themselves do.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tidecache_contract::placement::PARTITIONS;

use crate::status::Moves;

/// Where a cache pod publishes its holdings (cache-node's peer route).
pub const PARTITIONS_PATH: &str = "/internal/v1/partitions";
/// How long one pod's answer may take: a pod that does not answer within it is reported as
/// unread, and the reconcile goes on.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer read: two bitmaps and a fingerprint are well under 1 KiB in JSON.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What one pod says it holds (the JSON of `GET /internal/v1/partitions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Holdings {
    /// The fingerprint of the membership the pod places keys by.
    pub fingerprint: u64,
    /// The partitions it owns and holds all the data of, as a bitmap.
    pub complete: [u64; PARTITIONS / 64],
    /// The partitions it holds data of (owned, complete or gaining, and kept), as a bitmap.
    pub held: [u64; PARTITIONS / 64],
}

impl Holdings {
    /// Partitions held but not complete: gaining (owned, data still arriving) or kept (moved
    /// away, kept until the new owners hold them).
    pub fn moving(&self) -> usize {
        self.held
            .iter()
            .zip(self.complete)
            .map(|(held, complete)| (held & !complete).count_ones() as usize)
            .sum()
    }
}

/// Sums up the answers of the pods asked (`None` for a pod that did not answer).
pub fn moves(answers: &[Option<Holdings>]) -> Moves {
    let read: Vec<&Holdings> = answers.iter().flatten().collect();
    Moves {
        moving: read.iter().map(|h| h.moving()).sum(),
        unread: answers.len() - read.len(),
        memberships: read
            .iter()
            .map(|h| h.fingerprint)
            .collect::<BTreeSet<_>>()
            .len(),
    }
}

/// Why a pod's holdings could not be read; logged, and counted as unread in status.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No answer within [`READ_TIMEOUT`].
    #[error("GET {url}: no answer within {READ_TIMEOUT:?}")]
    Timeout {
        /// What was asked.
        url: String,
    },
    /// The request could not be sent or its answer not received.
    #[error("GET {url}")]
    Request {
        /// What was asked.
        url: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The request could not be built (a token that is not a valid header value).
    #[error("GET {url}: cannot build the request")]
    Build {
        /// What was asked.
        url: String,
        /// Why.
        #[source]
        source: http::Error,
    },
    /// The pod answered with another status than 200 (401: a token it does not accept; 404:
    /// a pod not in partitioned mode).
    #[error("GET {url}: status {status}")]
    Status {
        /// What was asked.
        url: String,
        /// The status the pod answered.
        status: http::StatusCode,
    },
    /// The answer's body could not be read or was longer than expected.
    #[error("GET {url}: reading the answer: {message}")]
    Body {
        /// What was asked.
        url: String,
        /// The body error.
        message: String,
    },
    /// The answer is not holdings.
    #[error("GET {url}: the answer is not holdings")]
    Parse {
        /// What was asked.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads cache pods' holdings over keep-alive connections shared by every reconcile.
#[derive(Clone)]
pub struct HoldingsReader {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// The pods' HTTP port (injectable so that tests can serve holdings on a free port).
    port: u16,
}

impl HoldingsReader {
    /// A reader of the pods' holdings on `port`.
    pub fn new(port: u16) -> HoldingsReader {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(READ_TIMEOUT));
        HoldingsReader {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            port,
        }
    }

    /// The holdings of the pod at `ip`, asked with `token`, then with `previous` if the pod
    /// refuses `token` (a pod not restarted since a rotation).
    ///
    /// # Errors
    /// A [`ReadError`] saying what failed.
    pub async fn read(
        &self,
        ip: IpAddr,
        token: &[u8],
        previous: &[u8],
    ) -> Result<Holdings, ReadError> {
        match self.read_with(ip, token).await {
            Err(ReadError::Status { status, .. })
                if status == http::StatusCode::UNAUTHORIZED && previous != token =>
            {
                self.read_with(ip, previous).await
            }
            result => result,
        }
    }

    async fn read_with(&self, ip: IpAddr, token: &[u8]) -> Result<Holdings, ReadError> {
        let url = format!("http://{}{PARTITIONS_PATH}", SocketAddr::new(ip, self.port));
        let mut authorization = b"Bearer ".to_vec();
        authorization.extend_from_slice(token);
        let request = http::Request::get(&url)
            .header(http::header::AUTHORIZATION, authorization)
            .body(Empty::new())
            .map_err(|source| ReadError::Build {
                url: url.clone(),
                source,
            })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| ReadError::Request {
                        url: url.clone(),
                        source,
                    })?;
            let status = response.status();
            if status != http::StatusCode::OK {
                return Err(ReadError::Status {
                    url: url.clone(),
                    status,
                });
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| ReadError::Body {
                    url: url.clone(),
                    message: error.to_string(),
                })?
                .to_bytes();
            serde_json::from_slice::<Holdings>(&body).map_err(|source| ReadError::Parse {
                url: url.clone(),
                source,
            })
        };
        tokio::time::timeout(READ_TIMEOUT, exchange)
            .await
            .map_err(|_elapsed| ReadError::Timeout { url: url.clone() })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdings(fingerprint: u64, complete: &[usize], held: &[usize]) -> Holdings {
        let bitmap = |partitions: &[usize]| {
            let mut words = [0_u64; PARTITIONS / 64];
            for &p in partitions {
                words[p / 64] |= 1 << (p % 64);
            }
            words
        };
        Holdings {
            fingerprint,
            complete: bitmap(complete),
            held: bitmap(held),
        }
    }

    #[test]
    fn moving_is_what_a_pod_holds_but_has_not_completed_summed_over_the_pods() {
        // One pod gaining 2 (held, not complete), one keeping 1 that moved away.
        let gaining = holdings(7, &[1, 2], &[1, 2, 64, 1023]);
        let keeping = holdings(7, &[64, 1023], &[3, 64, 1023]);
        assert_eq!((gaining.moving(), keeping.moving()), (2, 1));
        let summed = moves(&[Some(gaining), Some(keeping), None]);
        assert_eq!(
            summed,
            Moves {
                moving: 3,
                unread: 1,
                memberships: 1
            }
        );
        assert!(summed.unsettled());
        let settled = moves(&[Some(holdings(7, &[1], &[1])), Some(holdings(7, &[2], &[2]))]);
        assert!(!settled.unsettled());
        let disagreeing = moves(&[Some(holdings(7, &[1], &[1])), Some(holdings(8, &[2], &[2]))]);
        assert_eq!((disagreeing.moving, disagreeing.memberships), (0, 2));
        assert!(disagreeing.unsettled());
    }

    #[test]
    fn the_pods_json_is_read_as_holdings() {
        let json = format!(
            r#"{{"fingerprint":18446744073709551615,"complete":{c},"held":{h}}}"#,
            c = serde_json::to_string(&[1_u64; 16]).expect("json"),
            h = serde_json::to_string(&[3_u64; 16]).expect("json"),
        );
        let read: Holdings = serde_json::from_str(&json).expect("holdings");
        assert_eq!(read.fingerprint, u64::MAX);
        assert_eq!(read.moving(), 16);
    }
}
