//! The last expiry a node can store, over real processes and sockets: records keep expiries
//! as 64-bit Unix nanoseconds (on disk and between peers), which end at
//! 2262-04-11T23:47:16.854775807Z. Every later expiry is refused at the edge, over HTTP with
//! 400 and over RESP with `-ERR`, the same with and without a data volume, and nothing is
//! stored; the last accepted one keeps its expiry across a restart and on a replica.

mod resp_support;

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};
use resp_support::{Server, Value};

/// The last whole second that can be stored, as an HTTP date (unix 9223372036).
const LAST_SECOND: &str = "Fri, 11 Apr 2262 23:47:16 GMT";

/// Expiries after it, as HTTP dates: its next second, the issue's two examples.
const TOO_LATE: [&str; 3] = [
    "Fri, 11 Apr 2262 23:47:17 GMT",
    "Mon, 01 Jan 2300 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
];

/// Asserts a 400 `expiry_out_of_range` whose message names the last accepted instant.
fn assert_out_of_range(reply: &cache_node_testkit::Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {reply:?}");
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON error");
    assert_eq!(body["error"], "expiry_out_of_range", "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(LAST_SECOND), "{what}: {message}");
}

/// Every HTTP way of asking for a too-late expiry, on the node at `address`: refused, and the
/// key stays absent.
async fn http_refuses_too_late_expiries(client: &Client, address: &str) {
    for date in TOO_LATE {
        let reply = client
            .put(address, "late", "v", &[("expires", date)])
            .await
            .expect("answer");
        assert_out_of_range(&reply, date);
    }
    // 8e9 s is about 253 years from now.
    let reply = client
        .put(address, "late?ttl=8000000000", "v", &[])
        .await
        .expect("answer");
    assert_out_of_range(&reply, "ttl=8000000000");
    let reply = client
        .send(
            Method::POST,
            address,
            "/v1/batch/put",
            &[("content-type", "application/json")],
            r#"{"entries":[{"key":"late","value":"dg==","ttl":"8000000000"}]}"#,
        )
        .await
        .expect("answer");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert!(reply.text().contains("2262"), "{}", reply.text());
    assert_eq!(
        client.get(address, "late").await,
        Ok(None),
        "nothing stored"
    );

    let reply = client
        .put(address, "last", "v", &[("expires", LAST_SECOND)])
        .await
        .expect("answer");
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(reply.header("expires"), LAST_SECOND);
}

fn error_text(value: Value) -> String {
    match value {
        Value::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Every RESP way of asking for a too-late expiry: `-ERR` naming the last instant, and the
/// key is neither created nor given another expiry.
fn resp_refuses_too_late_expiries(server: &Server) {
    let mut conn = server.connect();
    for command in [
        &["SET", "late", "v", "EXAT", "9223372037"][..],
        &["SET", "late", "v", "PXAT", "9223372036855"],
        &["SET", "late", "v", "EX", "8000000000"],
        &["SET", "late", "v", "PX", "8000000000000"],
        &["SETEX", "late", "8000000000", "v"],
        &["PSETEX", "late", "8000000000000", "v"],
    ] {
        let error = error_text(conn.cmd(command));
        assert!(
            error.starts_with("ERR ") && error.contains("2262-04-11T23:47:16.854"),
            "{command:?}: {error}"
        );
    }
    assert_eq!(conn.cmd(&["EXISTS", "late"]), Value::Integer(0));
    assert_eq!(conn.cmd(&["SET", "kept", "v"]), Value::Simple("OK".into()));
    for command in [
        &["EXPIRE", "kept", "8000000000"][..],
        &["PEXPIRE", "kept", "8000000000000"],
        &["EXPIREAT", "kept", "9223372037"],
        &["PEXPIREAT", "kept", "9223372036855"],
        &["GETEX", "kept", "EXAT", "9223372037"],
        &["GETEX", "kept", "PX", "8000000000000"],
    ] {
        let error = error_text(conn.cmd(command));
        assert!(
            error.contains("2262-04-11T23:47:16.854"),
            "{command:?}: {error}"
        );
    }
    assert_eq!(
        conn.cmd(&["TTL", "kept"]),
        Value::Integer(-1),
        "no expiry given"
    );
    assert_eq!(
        conn.cmd(&["SET", "edge", "v", "PXAT", "9223372036854"]),
        Value::Simple("OK".into())
    );
    assert_eq!(
        conn.cmd(&["PEXPIRETIME", "edge"]),
        Value::Integer(9_223_372_036_854)
    );
}

#[tokio::test]
async fn too_late_expiries_are_refused_alike_with_and_without_a_volume() {
    let volume = tempfile::tempdir().expect("tempdir");
    let data_dir = format!("--data-dir={}", volume.path().display());
    let memory_only = Server::cache_node(&[]);
    let persisted = Server::cache_node(&[&data_dir, "--node-id=persisted", "--fsync=always"]);
    let client = Client::default();
    for server in [&memory_only, &persisted] {
        server.wait_loaded();
        let address = format!("127.0.0.1:{}", server.http_port);
        http_refuses_too_late_expiries(&client, &address).await;
        resp_refuses_too_late_expiries(server);
    }
}

#[tokio::test]
async fn the_last_expiry_survives_a_restart_and_reaches_the_replica() {
    let mut cluster = Cluster::start(2, &["--fsync=always", "--ack=all"]);
    let client = Client::default();
    let reply = client
        .put(cluster.address(0), "edge", "v", &[("expires", LAST_SECOND)])
        .await
        .expect("answer");
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    for date in TOO_LATE {
        let reply = client
            .put(cluster.address(0), "late", "v", &[("expires", date)])
            .await
            .expect("answer");
        assert_out_of_range(&reply, date);
    }

    let addresses = [0, 1].map(|i| cluster.address(i).to_string());
    // A client of its own each time: the pooled connection to a stopped node is dead.
    let expires_on = |i: usize| {
        let address = addresses[i].clone();
        async move {
            let reply = Client::default()
                .send(Method::GET, &address, "/v1/keys/edge", &[], "")
                .await
                .expect("answer");
            assert_eq!(reply.status, StatusCode::OK, "node {address}: {reply:?}");
            reply.header("expires")
        }
    };
    assert_eq!(expires_on(1).await, LAST_SECOND, "on the replica");
    assert_eq!(
        client.get(cluster.address(1), "late").await,
        Ok(None),
        "no refused write reached the replica"
    );
    // Both stop, so that what they serve after the restart comes from the volume.
    for i in [0, 1] {
        let status = cluster.stop(i);
        assert!(status.success(), "{}", cluster.log(i));
    }
    cluster.start_nodes([0, 1]);
    assert_eq!(expires_on(0).await, LAST_SECOND, "after a restart");
    assert_eq!(expires_on(1).await, LAST_SECOND, "after a restart");
    assert_eq!(
        Client::default().get(cluster.address(0), "late").await,
        Ok(None)
    );
}
