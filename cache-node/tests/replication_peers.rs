//! Peers are not clients, across real `cache-node` processes: the internal routes take only
//! the peers' own token (and the key routes never take it), records a peer sends are held to
//! the receiving node's own limits and clock, a far-future version held from before that
//! rule gives way to the next write instead of pinning the key, and a rotation of the peer
//! token during a rolling restart never cuts replication.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};
use tidecache_contract::disk::{
    Area, ClusterRoot, ObjectName, RecordRef, SegmentWriter, Version, WriterOptions, segment_header,
};

const CLIENT_TOKEN: &str = "client-s3cret";

/// The internal routes, each with the content type and body of a request it answers 200 to
/// (a batch's body is filled in by `internal_body`: an empty segment).
const INTERNAL: [(Method, &str, &str, &str); 3] = [
    (Method::GET, "/internal/v1/digests", "text/plain", ""),
    (
        Method::POST,
        "/internal/v1/fetch",
        "application/json",
        r#"{"before":0,"ranges":[]}"#,
    ),
    (
        Method::POST,
        "/internal/v1/replicate",
        "application/vnd.tidecache.segment",
        "",
    ),
];

fn internal_body(path: &str, body: &str) -> Vec<u8> {
    if path.ends_with("replicate") {
        segment_header().to_vec()
    } else {
        body.as_bytes().to_vec()
    }
}

/// A hybrid-clock value at `offset` from now (wall-clock milliseconds in the upper 48 bits).
fn hlc_from_now(offset: Duration, ahead: bool) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let at = if ahead { now + offset } else { now - offset };
    u64::try_from(at.as_millis()).expect("fits") << 16
}

fn expiry_in(lifetime: Duration) -> i64 {
    let at = SystemTime::now() + lifetime;
    i64::try_from(
        at.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("fits")
}

/// A batch as peers send it: the segment header, then the encoded records.
fn batch(records: &[RecordRef<'_>]) -> Vec<u8> {
    let mut out = segment_header().to_vec();
    for record in records {
        record.encode(&mut out).expect("encodable");
    }
    out
}

fn record<'a>(key: &'a [u8], value: &'a [u8], hlc: u64, expiry: Option<i64>) -> RecordRef<'a> {
    RecordRef {
        key,
        version: Version { hlc, node: 0x77 },
        expiry_unix_nanos: expiry,
        value: Some(value),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_never_opens_the_internal_routes_nor_the_peer_token_a_key_route() {
    let cluster = Cluster::builder(2).auth_token(CLIENT_TOKEN).start();
    let client = Client::default();
    let peer = cluster.peer_auth();
    let address = cluster.address(1);
    for (method, path, content_type, body) in INTERNAL {
        let body = internal_body(path, body);
        for refused in [
            Some(format!("Bearer {CLIENT_TOKEN}")),
            Some(format!("BEARER {CLIENT_TOKEN}")),
            None,
            Some("Bearer wrong".to_string()),
        ] {
            let headers: Vec<(&str, &str)> = refused
                .iter()
                .map(|value| ("authorization", value.as_str()))
                .chain([("content-type", content_type)])
                .collect();
            let reply = client
                .send(method.clone(), address, path, &headers, body.clone())
                .await
                .expect("answer");
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {refused:?}: {}",
                reply.text()
            );
            assert!(reply.text().contains("peer"), "{}", reply.text());
        }
        let admitted = client
            .send(
                method.clone(),
                address,
                path,
                &[("authorization", &peer), ("content-type", content_type)],
                body,
            )
            .await
            .expect("answer");
        assert_eq!(
            admitted.status,
            StatusCode::OK,
            "{method} {path}: {admitted:?}"
        );
    }

    // The peer token opens no key route: nothing is stored with it.
    let with_peer = [("authorization", peer.as_str())];
    let put = client
        .put(address, "k", "from-a-peer", &with_peer)
        .await
        .expect("answer");
    assert_eq!(put.status, StatusCode::UNAUTHORIZED, "{put:?}");
    for (method, path, body) in [
        (Method::GET, "/v1/keys/k", ""),
        (
            Method::POST,
            "/v1/batch/put",
            r#"{"entries":[{"key":"k","value":"x"}]}"#,
        ),
    ] {
        let reply = client
            .send(method.clone(), address, path, &with_peer, body)
            .await
            .expect("answer");
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // The scheme is case-insensitive for clients too; CREATED shows nothing was stored before.
    let upper = format!("BEARER {CLIENT_TOKEN}");
    let stored = client
        .put(
            address,
            "k",
            "v",
            &[("authorization", &upper), ("tidecache-ack", "all")],
        )
        .await
        .expect("answer");
    assert_eq!(stored.status, StatusCode::CREATED, "{stored:?}");
    assert_eq!(
        stored.header("tidecache-acked"),
        "2",
        "peers take the peer token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_beyond_the_receivers_limits_or_clock_are_refused_and_nothing_is_stored() {
    let cluster = Cluster::builder(2)
        .flag("--max-key-bytes=64")
        .flag("--max-ttl=1h")
        .flag("--default-ttl=10m")
        .start();
    let client = Client::default();
    let peer = cluster.peer_auth();
    let address = cluster.address(1);
    let now = hlc_from_now(Duration::ZERO, true);
    let hour = Some(expiry_in(Duration::from_secs(3_000)));
    let long_key = vec![b'k'; 4_096];
    let large_value = vec![b'v'; 4 << 20];
    let cases: [(&str, RecordRef<'_>, &str, &str); 6] = [
        (
            "key_length",
            record(&long_key, b"v", now, hour),
            "--max-key-bytes of 64",
            "a 4 KiB key",
        ),
        (
            "value_size",
            record(b"big", &large_value, now, hour),
            "--max-value-bytes of 1048576",
            "a 4 MiB value",
        ),
        (
            "lifetime",
            record(b"forever", b"v", now, None),
            "--max-ttl",
            "no expiry under --max-ttl",
        ),
        (
            "lifetime",
            record(
                b"year",
                b"v",
                now,
                Some(expiry_in(Duration::from_secs(365 * 86_400))),
            ),
            "--max-ttl",
            "a year under --max-ttl=1h",
        ),
        (
            "future_version",
            record(b"pinned", b"forged", u64::MAX, hour),
            "ahead of this node's clock",
            "version 2^64-1",
        ),
        (
            "future_version",
            record(
                b"ahead",
                b"v",
                hlc_from_now(Duration::from_secs(120), true),
                hour,
            ),
            "ahead of this node's clock",
            "a version two minutes ahead",
        ),
    ];
    let mut expected: std::collections::HashMap<&str, f64> = Default::default();
    for (reason, bad, message, what) in cases {
        // A valid record in the same batch: a batch is applied whole or not at all.
        let good = record(b"companion", b"ok", now, hour);
        let reply = client
            .send(
                Method::POST,
                address,
                "/internal/v1/replicate",
                &[("authorization", &peer)],
                batch(&[good, bad]),
            )
            .await
            .expect("answer");
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            reply.text()
        );
        let text = reply.text();
        assert!(text.contains("record_refused"), "{what}: {text}");
        assert!(text.contains(message), "{what}: {text}");
        *expected.entry(reason).or_default() += 1.0;
        let sample = format!("tidecache_replication_refused_records_total{{reason=\"{reason}\"}}");
        assert_eq!(
            client.metric(address, &sample).await,
            expected[reason],
            "{what} is counted"
        );
    }
    for key in ["companion", "big", "forever", "year", "pinned", "ahead"] {
        assert_eq!(
            client.get(address, key).await.expect("get"),
            None,
            "{key}: nothing of a refused batch is stored"
        );
    }
    let long_key_path = format!("/v1/keys/{}", "k".repeat(4_096));
    let missing = client
        .send(Method::GET, address, &long_key_path, &[], "")
        .await
        .expect("answer");
    assert_ne!(missing.status, StatusCode::OK);

    // The clock did not move: a local write still gets a present-day version.
    let put = client.put(address, "after", "v", &[]).await.expect("put");
    assert_eq!(put.status, StatusCode::CREATED);
    let etag = put.header("etag");
    let hlc: u64 = etag
        .trim_matches('"')
        .split('-')
        .next()
        .and_then(|hlc| hlc.parse().ok())
        .unwrap_or_else(|| panic!("ETag {etag}"));
    assert!(
        hlc < hlc_from_now(Duration::from_secs(5), true),
        "the local clock was dragged ahead: {etag}"
    );

    // The same records within the limits are applied.
    let good = record(b"companion", b"ok", now, hour);
    let reply = client
        .send(
            Method::POST,
            address,
            "/internal/v1/replicate",
            &[("authorization", &peer)],
            batch(&[good]),
        )
        .await
        .expect("answer");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        client
            .get(address, "companion")
            .await
            .expect("get")
            .as_deref(),
        Some("ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_version_held_from_before_gives_way_to_the_next_write() {
    // The issue's state: a key held with version 2^64-1 (accepted before records were
    // checked), here on the shared volume, so that every node loads it at start.
    let volume = tempfile::tempdir().expect("volume");
    let root = ClusterRoot::new(
        volume.path(),
        &ObjectName::new("default").expect("name"),
        &ObjectName::new("tidecache").expect("name"),
    );
    let forger = ObjectName::new("cache-9").expect("name");
    let mut writer =
        SegmentWriter::open(&root, Area::Persistent, &forger, WriterOptions::default())
            .expect("segment");
    writer
        .append(RecordRef {
            key: b"pinned",
            version: Version {
                hlc: u64::MAX,
                node: 0x99,
            },
            expiry_unix_nanos: None,
            value: Some(b"forged"),
        })
        .expect("append");
    writer.sync_data().expect("sync");
    drop(writer);

    let cluster = Cluster::builder(2).data_dir(volume.path()).start();
    let client = Client::default();
    for node in 0..2 {
        assert_eq!(
            client
                .get(cluster.address(node), "pinned")
                .await
                .expect("get")
                .as_deref(),
            Some("forged"),
            "node {node} loaded the forged record"
        );
    }
    let put = client
        .put(
            cluster.address(0),
            "pinned",
            "real",
            &[("tidecache-ack", "all")],
        )
        .await
        .expect("put");
    assert!(put.status.is_success(), "{put:?}");
    assert_eq!(put.header("tidecache-acked"), "2");
    // Acknowledged by both, so both serve it: the forged version no longer wins.
    for node in 0..2 {
        assert_eq!(
            client
                .get(cluster.address(node), "pinned")
                .await
                .expect("get")
                .as_deref(),
            Some("real"),
            "node {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_peer_token_never_cuts_replication_during_the_rolling_restart() {
    let mut cluster = Cluster::builder(2).peer_token("token-a").start();
    let client = Client::default();
    // The operator rotates: the Secret's token becomes B, the previous A. Node 0 restarts
    // first and presents B to node 1, which knows only A.
    cluster.rotate_peer_token("token-b", Some("token-a"));
    cluster.stop(0);
    cluster.start_nodes([0]);
    for (writer, key) in [(0, "from-new"), (1, "from-old")] {
        let put = client
            .put(
                cluster.address(writer),
                key,
                "v",
                &[("tidecache-ack", "all")],
            )
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED, "{key}: {put:?}");
        assert_eq!(
            put.header("tidecache-acked"),
            "2",
            "{key} reached both nodes"
        );
    }
    cluster.stop(1);
    cluster.start_nodes([1]);
    let put = client
        .put(
            cluster.address(0),
            "rolled",
            "v",
            &[("tidecache-ack", "all")],
        )
        .await
        .expect("put");
    assert_eq!(put.header("tidecache-acked"), "2");
    // After the roll, both tokens open the internal routes; anything else does not.
    for (token, status) in [
        ("token-b", StatusCode::OK),
        ("token-a", StatusCode::OK),
        ("token-c", StatusCode::UNAUTHORIZED),
    ] {
        let reply = client
            .send(
                Method::GET,
                cluster.address(1),
                "/internal/v1/digests",
                &[("authorization", &format!("Bearer {token}"))],
                "",
            )
            .await
            .expect("answer");
        assert_eq!(reply.status, status, "{token}");
    }
    for node in 0..2 {
        for key in ["from-new", "from-old", "rolled"] {
            assert_eq!(
                client
                    .get(cluster.address(node), key)
                    .await
                    .expect("get")
                    .as_deref(),
                Some("v"),
                "{key} on node {node}"
            );
        }
    }
}
