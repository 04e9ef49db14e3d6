//! Bearer-token authentication across three `cache-node` processes: clients without the token
//! are refused and change nothing, probes stay open, and replication between the nodes
//! carries the peers' own token (an `ack=all` write reaches every node; the testkit gives
//! replicated nodes a `--peer-token`, see `replication_peers.rs` for what it opens).

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};

const TOKEN: &str = "s3cret-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_with_the_token_are_served_and_peers_present_it() {
    // The token comes from the environment in Kubernetes; the flag is the same setting.
    let cluster = Cluster::builder(3).auth_token(TOKEN).start();
    let client = Client::default();
    let bearer = format!("Bearer {TOKEN}");

    let refused = client
        .put(cluster.address(0), "k", "v", &[("tidecache-ack", "all")])
        .await
        .expect("answer");
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.header("www-authenticate"),
        "Bearer realm=\"tidecache\""
    );
    assert!(
        refused.text().contains("\"error\":\"unauthorized\""),
        "{}",
        refused.text()
    );

    let wrong = client
        .put(
            cluster.address(0),
            "k",
            "v",
            &[("authorization", "Bearer nope")],
        )
        .await
        .expect("answer");
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let stored = client
        .put(
            cluster.address(0),
            "k",
            "v",
            &[("authorization", &bearer), ("tidecache-ack", "all")],
        )
        .await
        .expect("answer");
    // CREATED, not replaced: the refused writes stored nothing.
    assert_eq!(stored.status, StatusCode::CREATED, "{stored:?}");
    assert_eq!(
        stored.header("tidecache-acked"),
        "3",
        "peers accepted the token"
    );

    for node in 0..3 {
        let open = client
            .send(Method::GET, cluster.address(node), "/v1/keys/k", &[], "")
            .await
            .expect("answer");
        assert_eq!(open.status, StatusCode::UNAUTHORIZED, "node {node}");
        let read = client
            .send(
                Method::GET,
                cluster.address(node),
                "/v1/keys/k",
                &[("authorization", &bearer)],
                "",
            )
            .await
            .expect("answer");
        assert_eq!(read.status, StatusCode::OK, "node {node}");
        assert_eq!(&read.body[..], b"v");
        for path in ["/readyz", "/healthz", "/metrics"] {
            let probe = client
                .send(Method::GET, cluster.address(node), path, &[], "")
                .await
                .expect("answer");
            assert_eq!(probe.status, StatusCode::OK, "{path} stays open");
        }
    }

    let internal = client
        .send(
            Method::POST,
            cluster.address(1),
            "/internal/v1/replicate",
            &[],
            "",
        )
        .await
        .expect("answer");
    assert_eq!(
        internal.status,
        StatusCode::UNAUTHORIZED,
        "internal routes need a token too (the peers')"
    );
}
