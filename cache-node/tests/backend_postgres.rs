//! PostgreSQL behind the cache (docs/backend.md), against a real server: each mode end to
//! end over HTTP and RESP, single-flight misses counted by `pg_stat_statements`, a row
//! changed with `psql` seen through the cache, the database killed and restarted under
//! load, and write-behind across a `kill -9` of cache-node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster, Postgres};
use http::{Method, StatusCode};

/// How long a row changed by another application may take to show through the cache in
/// these tests (the bound measured is printed; docs/backend.md gives the figures).
const REFRESH_BOUND: Duration = Duration::from_secs(2);

const SELECT: &str = "SELECT \"key\", \"value\" FROM items";

fn items_table(postgres: &Postgres) {
    postgres
        .psql("CREATE TABLE items (key text PRIMARY KEY, value text CHECK (value <> 'forbidden'))");
}

fn node(postgres: &Postgres, mode: &str, extra: &[&str]) -> Cluster {
    node_at(&postgres.url(), mode, extra)
}

/// One node in front of the `items` table of the database at `url`.
fn node_at(url: &str, mode: &str, extra: &[&str]) -> Cluster {
    let mut builder = Cluster::builder(1)
        .independent()
        .memory_only()
        .resp()
        .flag("--backend=postgres")
        .flag(&format!("--backend-url={url}"))
        .flag("--backend-table=items")
        .flag(&format!("--backend-mode={mode}"))
        .flag("--backend-timeout=2s");
    for flag in extra {
        builder = builder.flag(flag);
    }
    builder.start()
}

/// Waits until the node's listener is connected and has checked what the cache held then
/// (the check after every connection makes its own queries).
async fn listening(client: &Client, cluster: &Cluster) {
    let address = cluster.address(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .metric(address, "tidecache_backend_listener_connected")
        .await
        < 1.0
        || client
            .metric(address, "tidecache_backend_revalidations_total")
            .await
            < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the listener did not connect:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn redis(cluster: &Cluster) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}", cluster.resp_port(0)))
        .expect("a redis URL")
        .get_connection()
        .expect("a RESP connection")
}

fn row(postgres: &Postgres, key: &str) -> Option<String> {
    let value = postgres.psql(&format!(
        "SELECT coalesce((SELECT value FROM items WHERE key = '{key}'), '<none>')"
    ));
    (value != "<none>").then_some(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_through_loads_a_miss_once_and_serves_it_from_the_cache() {
    let postgres = Postgres::start();
    items_table(&postgres);
    postgres.psql("INSERT INTO items VALUES ('apple', 'red'), ('pear', 'green')");
    let cluster = node(&postgres, "read-through", &[]);
    let client = Client::default();
    let address = cluster.address(0);
    listening(&client, &cluster).await;
    let before = postgres.calls(SELECT);
    assert_eq!(
        client.get(address, "apple").await.unwrap().as_deref(),
        Some("red")
    );
    assert_eq!(
        client.get(address, "apple").await.unwrap().as_deref(),
        Some("red")
    );
    assert_eq!(
        postgres.calls(SELECT) - before,
        1,
        "the second read is a hit"
    );
    assert_eq!(
        client.get(address, "plum").await.unwrap(),
        None,
        "no row, no entry"
    );
    // RESP reads the same entries; MGET's misses are one query.
    let mut conn = redis(&cluster);
    let got: Option<String> = redis::cmd("GET").arg("pear").query(&mut conn).unwrap();
    assert_eq!(got.as_deref(), Some("green"));
    let before = postgres.calls(SELECT);
    let keys: Vec<String> = (0..20).map(|i| format!("absent-{i}")).collect();
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
    assert!(got.iter().all(Option::is_none));
    assert_eq!(
        postgres.calls(SELECT) - before,
        1,
        "20 misses of one MGET, one query"
    );
    // A write in read-through mode stays in the cache: the table is the other
    // applications'.
    let reply = client.put(address, "apple", "green", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(row(&postgres, "apple").as_deref(), Some("red"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_misses_of_one_key_make_one_query() {
    let postgres = Postgres::start();
    items_table(&postgres);
    postgres.psql("INSERT INTO items SELECT 'k' || i, 'v' || i FROM generate_series(1, 100) i");
    let cluster = node(&postgres, "read-through", &[]);
    let client = Client::default();
    let address = cluster.address(0).to_string();
    listening(&client, &cluster).await;
    let before = postgres.calls(SELECT);
    let reads: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let address = address.clone();
            tokio::spawn(async move { client.get(&address, "k7").await })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().unwrap().as_deref(), Some("v7"));
    }
    assert_eq!(
        postgres.calls(SELECT) - before,
        1,
        "200 concurrent misses, one query"
    );
    // A batch read's misses: one query for the slice.
    let before = postgres.calls(SELECT);
    let keys: Vec<String> = (20..70).map(|i| format!("\"k{i}\"")).collect();
    let body = format!("{{\"keys\":[{}]}}", keys.join(","));
    let reply = client
        .send(
            Method::POST,
            &address,
            "/v1/batch/get",
            &[("content-type", "application/json")],
            body,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text().matches("\"found\":true").count(), 50);
    assert_eq!(
        postgres.calls(SELECT) - before,
        1,
        "50 misses of one batch, one query"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_commits_before_acknowledging_and_a_refusal_changes_nothing() {
    let postgres = Postgres::start();
    items_table(&postgres);
    postgres.psql("INSERT INTO items VALUES ('order-1', 'open')");
    let cluster = node(&postgres, "write-through", &[]);
    let client = Client::default();
    let address = cluster.address(0);
    let reply = client.put(address, "order-2", "open", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(
        row(&postgres, "order-2").as_deref(),
        Some("open"),
        "in the table once acknowledged"
    );
    // The database refuses (a CHECK constraint): the client hears it, nothing changed.
    let reply = client
        .put(address, "order-2", "forbidden", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert!(
        reply.text().contains("backend postgres refused"),
        "{}",
        reply.text()
    );
    assert_eq!(
        client.get(address, "order-2").await.unwrap().as_deref(),
        Some("open")
    );
    assert_eq!(row(&postgres, "order-2").as_deref(), Some("open"));
    // If-Match on a key the cache has not loaded yet is decided by the row.
    let reply = client
        .send(Method::GET, address, "/v1/keys/order-1", &[], "")
        .await
        .unwrap();
    let etag = reply.header("etag");
    let reply = client
        .put(address, "order-1", "taken", &[("if-match", &etag)])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    let reply = client
        .put(address, "order-1", "taken-again", &[("if-match", &etag)])
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::PRECONDITION_FAILED,
        "the second taker loses"
    );
    assert_eq!(row(&postgres, "order-1").as_deref(), Some("taken"));
    // A delete deletes the row; a value that is not text for a text column is refused.
    let reply = client.delete(address, "order-2", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(row(&postgres, "order-2"), None);
    let reply = client
        .send(
            Method::PUT,
            address,
            "/v1/keys/binary",
            &[],
            vec![0xffu8, 0, 1],
        )
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("column value is text"),
        "{}",
        reply.text()
    );
    // Concurrent read-modify-writes of one key through the cache: every INCR counted once,
    // in the cache and in the table.
    let port = cluster.resp_port(0);
    let writers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                for _ in 0..25 {
                    let _: i64 = redis::cmd("INCR").arg("counter").query(&mut conn).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(
        client.get(address, "counter").await.unwrap().as_deref(),
        Some("200")
    );
    assert_eq!(row(&postgres, "counter").as_deref(), Some("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_changed_with_psql_is_seen_through_the_cache_within_the_bound() {
    let postgres = Postgres::start();
    items_table(&postgres);
    postgres.psql("INSERT INTO items VALUES ('price', '10'), ('gone', 'soon'), ('t', '1')");
    let cluster = node(&postgres, "write-through", &[]);
    let client = Client::default();
    let address = cluster.address(0);
    listening(&client, &cluster).await;
    for key in ["price", "gone", "t"] {
        assert!(client.get(address, key).await.unwrap().is_some());
    }
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let value = format!("{}", 11 + round);
        let started = Instant::now();
        postgres.psql(&format!(
            "UPDATE items SET value = '{value}' WHERE key = 'price'"
        ));
        let seen = client
            .eventually(address, "price", REFRESH_BOUND, |v| {
                v == Some(value.as_str())
            })
            .await;
        assert_eq!(seen.as_deref(), Some(value.as_str()), "round {round}");
        worst = worst.max(started.elapsed());
    }
    println!("a row updated with psql was served by the cache after at most {worst:?}");
    postgres.psql("DELETE FROM items WHERE key = 'gone'");
    assert_eq!(
        client
            .eventually(address, "gone", REFRESH_BOUND, |v| v.is_none())
            .await,
        None
    );
    postgres.psql("TRUNCATE items");
    assert_eq!(
        client
            .eventually(address, "t", REFRESH_BOUND, |v| v.is_none())
            .await,
        None
    );
    // The cache's own writes are not notified back to it (the trigger skips its sessions).
    let notified = client
        .metric(address, "tidecache_backend_notifications_total")
        .await;
    client.put(address, "own", "write", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client
            .metric(address, "tidecache_backend_notifications_total")
            .await,
        notified
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_down_serves_hits_and_refuses_misses_and_writes_naming_the_backend() {
    let mut postgres = Postgres::start();
    items_table(&postgres);
    postgres.psql("INSERT INTO items VALUES ('cached', 'yes'), ('later', 'x')");
    let cluster = node(&postgres, "write-through", &[]);
    let client = Client::default();
    let address = cluster.address(0);
    assert_eq!(
        client.get(address, "cached").await.unwrap().as_deref(),
        Some("yes")
    );
    postgres.kill();
    assert_eq!(
        client.get(address, "cached").await.unwrap().as_deref(),
        Some("yes"),
        "a hit"
    );
    let reply = client
        .send(Method::GET, address, "/v1/keys/later", &[], "")
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("backend_unavailable"),
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("the backend postgres is unavailable"),
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("retry-after"), "1");
    let reply = client.put(address, "cached", "changed", &[]).await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(
        client.get(address, "cached").await.unwrap().as_deref(),
        Some("yes"),
        "unchanged"
    );
    let mut conn = redis(&cluster);
    let refused: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("later").query(&mut conn);
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("backend postgres is unavailable"), "{error}");
    // Back up: misses load again, writes commit again, and the listener reconnects.
    postgres.restart();
    let seen = client
        .eventually(address, "later", Duration::from_secs(10), |v| {
            v == Some("x")
        })
        .await;
    assert_eq!(seen.as_deref(), Some("x"));
    let reply = client.put(address, "cached", "changed", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(row(&postgres, "cached").as_deref(), Some("changed"));
    listening(&client, &cluster).await;
    postgres.psql("UPDATE items SET value = 'from-psql' WHERE key = 'later'");
    let seen = client
        .eventually(address, "later", REFRESH_BOUND, |v| v == Some("from-psql"))
        .await;
    assert_eq!(seen.as_deref(), Some("from-psql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_and_restarted_under_write_through_load_keeps_every_acknowledged_write() {
    let mut postgres = Postgres::start();
    items_table(&postgres);
    let cluster = node(&postgres, "write-through", &[]);
    let client = Client::default();
    let address = cluster.address(0).to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            let address = address.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w{w}-{}", i % 50);
                    let value = format!("{i}");
                    match client.put(&address, &key, &value, &[]).await {
                        Ok(reply) if reply.status.is_success() => {
                            acknowledged.push((i, key, value));
                        }
                        Ok(reply) => {
                            assert_eq!(
                                reply.status,
                                StatusCode::SERVICE_UNAVAILABLE,
                                "{}",
                                reply.text()
                            );
                            assert!(
                                reply.text().contains("backend postgres"),
                                "{}",
                                reply.text()
                            );
                            refused.push(i);
                        }
                        Err(error) => panic!("{error}"),
                    }
                    i += 1;
                }
                (acknowledged, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    postgres.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    postgres.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut last = std::collections::BTreeMap::new();
    let (mut acknowledged, mut refused) = (0, 0);
    for writer in writers {
        let (writes, refusals) = writer.await.unwrap();
        let (Some(first_refused), Some(last_refused)) = (refusals.first(), refusals.last()) else {
            panic!("no write was refused while the database was down for 1.5 s");
        };
        assert!(
            writes.first().is_some_and(|(i, ..)| i < first_refused),
            "acknowledged before"
        );
        assert!(
            writes.last().is_some_and(|(i, ..)| i > last_refused),
            "acknowledged after"
        );
        acknowledged += writes.len();
        refused += refusals.len();
        for (_, key, value) in writes {
            last.insert(key, value);
        }
    }
    println!("{acknowledged} writes acknowledged, {refused} refused while PostgreSQL was down");
    // Each key's last acknowledged value is in the table and in the cache (a write refused
    // after it could not have changed either).
    for (key, value) in &last {
        assert_eq!(
            row(&postgres, key).as_deref(),
            Some(value.as_str()),
            "{key} in the table"
        );
        assert_eq!(
            client.get(&address, key).await.unwrap().as_deref(),
            Some(value.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_behind_across_a_kill_9_of_cache_node_loses_nothing_acknowledged() {
    let mut postgres = Postgres::start();
    items_table(&postgres);
    let queue = tempfile::tempdir().unwrap();
    let queue_flag = format!("--backend-queue-dir={}", queue.path().display());
    let mut cluster = node(
        &postgres,
        "write-behind",
        &[&queue_flag, "--backend-queue-max-entries=600"],
    );
    let client = Client::default();
    let address = cluster.address(0).to_string();
    // Flushed while the database is up.
    let reply = client.put(&address, "early", "1", &[]).await.unwrap();
    assert!(reply.status.is_success(), "{}", reply.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while row(&postgres, "early").is_none() {
        assert!(
            Instant::now() < deadline,
            "not flushed:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The database goes away; writes are still acknowledged, from the queue on disk.
    postgres.stop();
    for i in 0..500 {
        let reply = client
            .put(&address, &format!("k{}", i % 100), &format!("{i}"), &[])
            .await
            .unwrap();
        assert!(reply.status.is_success(), "{}", reply.text());
    }
    let reply = client.delete(&address, "early", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(
        client.get(&address, "early").await.unwrap(),
        None,
        "the queued delete answers, not the table's row"
    );
    assert_eq!(
        client
            .metric(&address, "tidecache_backend_write_behind_queue_entries")
            .await,
        501.0
    );
    assert!(
        client
            .metric(&address, "tidecache_backend_write_behind_lag_seconds")
            .await
            >= 0.0
    );
    // At the bound, writes are refused with the reason.
    for i in 0..99 {
        client
            .put(&address, &format!("fill{i}"), "x", &[])
            .await
            .unwrap();
    }
    let reply = client
        .put(&address, "one-too-many", "x", &[])
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("backend_queue_full"),
        "{}",
        reply.text()
    );
    // kill -9, then the database and the node come back: every acknowledged write reaches
    // the table, in order per key.
    cluster.kill(0);
    // Back with an empty cache and the database still down: reads answer from the queue.
    cluster.start_nodes([0]);
    assert_eq!(
        client.get(&address, "k7").await.unwrap().as_deref(),
        Some("407")
    );
    assert_eq!(client.get(&address, "early").await.unwrap(), None);
    postgres.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let flushed =
            postgres.psql("SELECT count(*) FROM items WHERE key LIKE 'k%' OR key LIKE 'fill%'");
        if flushed == "199" && row(&postgres, "early").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{flushed} rows flushed:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for k in 0..100 {
        assert_eq!(
            row(&postgres, &format!("k{k}")),
            Some(format!("{}", 400 + k)),
            "k{k}'s last write"
        );
    }
    assert_eq!(
        row(&postgres, "one-too-many"),
        None,
        "refused, never acknowledged"
    );
    assert_eq!(
        client
            .metric(&address, "tidecache_backend_write_behind_queue_entries")
            .await,
        0.0
    );
}

/// A CA and a server certificate for 127.0.0.1 it issued, in PEM.
fn authority() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("parameters")
        .signed_by(&key, &issuer)
        .expect("certificate");
    (issuer.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_to_the_database_is_verified_against_the_ca_file() {
    let (ca, cert, key) = authority();
    let (other_ca, _, _) = authority();
    let postgres = Postgres::start_tls(&cert, &key);
    items_table(&postgres);
    postgres.psql("INSERT INTO items VALUES ('secure', 'yes')");
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("ca.pem"), ca).unwrap();
    std::fs::write(files.path().join("other.pem"), other_ca).unwrap();
    let url = format!("{}?sslmode=require", postgres.url());
    let start = |ca_file: &str| {
        let ca_flag = format!("--backend-ca-file={}", files.path().join(ca_file).display());
        node_at(&url, "read-through", &[&ca_flag])
    };
    let client = Client::default();
    let trusted = start("ca.pem");
    assert_eq!(
        client
            .get(trusted.address(0), "secure")
            .await
            .unwrap()
            .as_deref(),
        Some("yes")
    );
    let encrypted = postgres.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND application_name = 'tidecache'",
    );
    assert_ne!(encrypted, "0", "the pool's sessions use TLS");
    // A server certificate the CA file does not vouch for: no connection, and misses say so.
    let distrusted = start("other.pem");
    let reply = client
        .send(
            Method::GET,
            distrusted.address(0),
            "/v1/keys/secure",
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("the backend postgres is unavailable"),
        "{}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_made_while_the_listener_was_disconnected_is_found_when_it_reconnects() {
    let postgres = Postgres::start();
    items_table(&postgres);
    postgres.psql("INSERT INTO items VALUES ('missed', 'before')");
    let cluster = node(&postgres, "read-through", &[]);
    let client = Client::default();
    let address = cluster.address(0);
    listening(&client, &cluster).await;
    assert_eq!(
        client.get(address, "missed").await.unwrap().as_deref(),
        Some("before")
    );
    let notified = client
        .metric(address, "tidecache_backend_notifications_total")
        .await;
    // Hold the advisory lock under which a connecting listener installs its trigger, so that
    // it cannot listen again yet; end its session; change the row: the notification reaches
    // no one.
    let (holder, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .expect("a session of the test");
    tokio::spawn(connection);
    let channel = format!("tidecache_{:08x}", crc32c::crc32c(b"items"));
    let lock = i64::from(crc32c::crc32c(channel.as_bytes()));
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .expect("the listener's lock");
    postgres.psql(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE application_name = 'tidecache-listener'",
    );
    postgres.psql("UPDATE items SET value = 'after' WHERE key = 'missed'");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.get(address, "missed").await.unwrap().as_deref(),
        Some("before"),
        "no one heard the change"
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("unlocked");
    let seen = client
        .eventually(address, "missed", Duration::from_secs(10), |v| {
            v == Some("after")
        })
        .await;
    assert_eq!(
        seen.as_deref(),
        Some("after"),
        "checked against the table on reconnecting"
    );
    assert_eq!(
        client
            .metric(address, "tidecache_backend_notifications_total")
            .await,
        notified,
        "found by the check after reconnecting, not by a notification"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_and_restarted_under_write_behind_load_refuses_nothing_and_loses_nothing() {
    let mut postgres = Postgres::start();
    items_table(&postgres);
    let queue = tempfile::tempdir().unwrap();
    let queue_flag = format!("--backend-queue-dir={}", queue.path().display());
    let cluster = node(&postgres, "write-behind", &[&queue_flag]);
    let client = Client::default();
    let address = cluster.address(0).to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, address, stop) = (client.clone(), address.clone(), stop.clone());
            tokio::spawn(async move {
                let mut last = std::collections::BTreeMap::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (key, value) = (format!("b{w}-{}", i % 50), format!("{i}"));
                    let reply = client.put(&address, &key, &value, &[]).await.unwrap();
                    assert!(reply.status.is_success(), "write {i}: {}", reply.text());
                    last.insert(key, value);
                    i += 1;
                }
                last
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    postgres.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    postgres.restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut last = std::collections::BTreeMap::new();
    for writer in writers {
        last.extend(writer.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .metric(&address, "tidecache_backend_write_behind_queue_entries")
        .await
        > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the queue did not drain:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, value) in &last {
        assert_eq!(
            row(&postgres, key).as_deref(),
            Some(value.as_str()),
            "{key}'s last write"
        );
    }
}
