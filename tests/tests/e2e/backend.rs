//! A CacheCluster with a PostgreSQL table behind it (`e2e-backend/orders`), reaching a real
//! PostgreSQL server started for the test on the pod network's gateway: the connection URL
//! comes from a Secret, a row is read through every pod, a write through one pod is in the
//! table when acknowledged, and a row changed with `psql` is served by every pod soon after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cache_node_testkit::Postgres;
use tidecache_e2e::http;

use crate::suite::Env;
use crate::support::{Target, TestResult, apply, get, pod_addr, put, wait_for};

/// The scenario's own namespace (created and deleted by the suite).
pub const NAMESPACE: &str = "e2e-backend";
const ORDERS: Target = Target {
    namespace: NAMESPACE,
    name: "orders",
};
const SECRET: &str = "orders-db";
/// How long a row changed with `psql` may take to show on every pod.
const REFRESH_BOUND: Duration = Duration::from_secs(5);

/// Read-through, write-through and refresh on a 2-pod cluster in front of one table.
pub async fn backend_postgres(env: &Env) -> TestResult {
    let gateway = env.cluster.network().gateway();
    let postgres = tokio::task::spawn_blocking(move || Postgres::start_on(&[gateway]))
        .await
        .map_err(|e| format!("starting PostgreSQL: {e}"))?;
    postgres.psql(
        "CREATE TABLE orders (id text PRIMARY KEY, doc jsonb NOT NULL, expires_at timestamptz)",
    );
    postgres.psql(
        r#"INSERT INTO orders VALUES ('order-1', '{"state": "open"}', now() + interval '1 hour')"#,
    );
    apply(
        env,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {SECRET}\n  namespace: {NAMESPACE}\n\
             stringData:\n  url: {url}\n---\n\
             apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {name}\n  \
             namespace: {NAMESPACE}\nspec:\n  replicas: 2\n  backend:\n    postgres:\n      \
             connectionSecret:\n        name: {SECRET}\n        key: url\n      table: orders\n      \
             keyColumn: id\n      valueColumn: doc\n      expiryColumn: expires_at\n      \
             mode: WriteThrough\n",
            url = postgres.url_at(gateway),
            name = ORDERS.name,
        ),
    )
    .await?;
    let pods = ORDERS.wait_settled(env, 2).await?;
    let addrs: BTreeMap<String, std::net::SocketAddr> = pods
        .iter()
        .map(|(name, pod)| Ok((name.clone(), pod_addr(pod)?)))
        .collect::<TestResult<_>>()?;

    // Read-through: the row, on every pod.
    for (name, addr) in &addrs {
        let (status, body) = get(*addr, "order-1").await?;
        if status != 200 || body != r#"{"state": "open"}"# {
            return Err(format!("order-1 read through {name}: {status} {body}"));
        }
    }
    // Write-through: in the table once acknowledged, with its expiry.
    let (first, first_addr) = addrs.iter().next().ok_or("no pod")?;
    put(*first_addr, "order-2", r#"{"state": "taken"}"#).await?;
    let row = postgres
        .psql("SELECT doc::text || ' ' || (expires_at > now()) FROM orders WHERE id = 'order-2'");
    if row != r#"{"state": "taken"} true"# {
        return Err(format!(
            "order-2 written through {first}: the table holds {row:?}"
        ));
    }
    // A value the jsonb column cannot hold is refused, naming the column.
    let refused = http::request(
        *first_addr,
        "PUT",
        "/v1/keys/order-3",
        b"not json",
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("PUT order-3: {e}"))?;
    if refused.status != 422 || !refused.text().contains("column doc is jsonb") {
        return Err(format!(
            "PUT of a non-JSON value: {} {}",
            refused.status,
            refused.text()
        ));
    }
    // Refresh: a row changed with psql is served by every pod within the bound.
    let started = Instant::now();
    postgres.psql(r#"UPDATE orders SET doc = '{"state": "shipped"}' WHERE id = 'order-1'"#);
    for (name, addr) in &addrs {
        wait_for(
            &format!("the shipped order-1 on {name}"),
            REFRESH_BOUND,
            async || {
                let (status, body) = get(*addr, "order-1").await?;
                if status == 200 && body == r#"{"state": "shipped"}"# {
                    Ok(Some(()))
                } else {
                    Err(format!("{status} {body}"))
                }
            },
        )
        .await?;
    }
    eprintln!(
        "e2e backend: a row updated with psql was served by both pods after {:?}",
        started.elapsed()
    );
    Ok(())
}
