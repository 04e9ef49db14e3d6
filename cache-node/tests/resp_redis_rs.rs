//! redis-rs (the `redis` crate from crates.io, its sync client) running the checks of
//! `tests/resp/scenario.py` against a real cache-node process: authentication, strings,
//! expiry, transactions, pipelines, the key walk and both protocols.

mod resp_support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{
    Commands, Connection, ExistenceCheck, Expiry, ScanOptions, SetExpiry, SetOptions, Value, cmd,
};
use resp_support::Server;

const TOKEN: &str = "resp-redis-rs-token";

fn connect(url: &str) -> redis::RedisResult<Connection> {
    redis::Client::open(url)?.get_connection()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn redis_rs_runs_the_scenario() {
    let node = Server::cache_node(&[&format!("--auth-token={TOKEN}")]);
    let url = |password: &str, query: &str| {
        format!("redis://:{password}@127.0.0.1:{}/?{query}", node.port)
    };

    // Authentication: refused without the token, accepted with it (user "default" implied).
    let mut anonymous = connect(&format!("redis://127.0.0.1:{}/", node.port)).expect("connect");
    let error = anonymous.get::<_, Option<String>>("k").unwrap_err();
    assert_eq!(error.code(), Some("NOAUTH"), "{error}");
    for protocol in ["resp2", "resp3"] {
        // redis-rs reports the -WRONGPASS of AUTH (RESP2) as its AuthenticationFailed, and
        // that of HELLO (RESP3) as the server's error.
        let error = connect(&url("wrong", &format!("protocol={protocol}"))).err();
        assert!(
            error.as_ref().is_some_and(|e| {
                e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS")
            }),
            "{protocol}: {error:?}"
        );
    }

    let mut r = connect(&url(TOKEN, "protocol=resp3")).expect("connect");
    assert_eq!(cmd("PING").query::<String>(&mut r).unwrap(), "PONG");
    let () = r.client_setname("scenario").unwrap();
    assert_eq!(
        r.client_getname::<Option<String>>().unwrap().as_deref(),
        Some("scenario")
    );
    assert_eq!(cmd("ECHO").arg("hi").query::<String>(&mut r).unwrap(), "hi");

    // Strings.
    let nx = SetOptions::default().conditional_set(ExistenceCheck::NX);
    let xx = SetOptions::default().conditional_set(ExistenceCheck::XX);
    let () = r.set("greeting", "hello").unwrap();
    assert_eq!(r.get::<_, String>("greeting").unwrap(), "hello");
    assert_eq!(
        r.set_options::<_, _, Option<String>>("greeting", "again", nx)
            .unwrap(),
        None
    );
    assert_eq!(
        r.set_options::<_, _, Option<String>>("missing", "x", xx)
            .unwrap(),
        None
    );
    let get = SetOptions::default().get(true);
    assert_eq!(
        r.set_options::<_, _, String>("greeting", "world", get)
            .unwrap(),
        "hello"
    );
    assert_eq!(r.getset::<_, _, String>("greeting", "hi").unwrap(), "world");
    assert_eq!(r.append::<_, _, i64>("greeting", "!").unwrap(), 3);
    assert_eq!(r.strlen::<_, i64>("greeting").unwrap(), 3);
    assert_eq!(r.getrange::<_, String>("greeting", 0, 1).unwrap(), "hi");
    assert_eq!(r.setrange::<_, _, i64>("greeting", 1, "o").unwrap(), 3);
    assert_eq!(r.get::<_, String>("greeting").unwrap(), "ho!");
    assert_eq!(r.incr::<_, _, i64>("counter", 1).unwrap(), 1);
    assert_eq!(r.incr::<_, _, i64>("counter", 41).unwrap(), 42);
    assert_eq!(r.decr::<_, _, i64>("counter", 1).unwrap(), 41);
    assert_eq!(r.decr::<_, _, i64>("counter", 40).unwrap(), 1);
    assert_eq!(r.incr::<_, _, f64>("float", 2.5).unwrap(), 2.5);
    let error = cmd("INCR")
        .arg("greeting")
        .query::<i64>(&mut r)
        .unwrap_err();
    assert_eq!(
        error.detail(),
        Some("value is not an integer or out of range"),
        "{error}"
    );
    let () = r.mset(&[("a", "1"), ("b", "2")]).unwrap();
    assert_eq!(
        r.mget::<_, Vec<Option<String>>>(&["a", "b", "nope"])
            .unwrap(),
        [Some("1".into()), Some("2".into()), None]
    );
    assert!(!r.mset_nx::<_, _, bool>(&[("a", "3"), ("c", "3")]).unwrap());
    assert!(r.set_nx::<_, _, bool>("c", "3").unwrap());
    assert_eq!(r.get_del::<_, String>("c").unwrap(), "3");
    assert_eq!(r.exists::<_, i64>(&["a", "b", "c"]).unwrap(), 2);
    assert_eq!(
        cmd("TYPE").arg("a").query::<String>(&mut r).unwrap(),
        "string"
    );
    assert_eq!(
        cmd("TYPE").arg("c").query::<String>(&mut r).unwrap(),
        "none"
    );
    assert_eq!(r.del::<_, i64>(&["a", "b", "c"]).unwrap(), 2);

    // Expiry.
    let ex = SetOptions::default().with_expiration(SetExpiry::EX(100));
    assert_eq!(
        r.set_options::<_, _, String>("session", "s", ex).unwrap(),
        "OK"
    );
    assert!((99..=100).contains(&r.ttl::<_, i64>("session").unwrap()));
    assert!((99_000..=100_000).contains(&r.pttl::<_, i64>("session").unwrap()));
    let expire = |r: &mut Connection, seconds: i64, option: &str| -> bool {
        let mut expire = cmd("EXPIRE");
        expire.arg("session").arg(seconds).arg(option);
        expire.query(r).unwrap()
    };
    assert!(expire(&mut r, 200, "GT"));
    assert!(!expire(&mut r, 300, "LT"));
    let at = r.expire_time::<_, i64>("session").unwrap() as f64;
    assert!((at - (now() + 200.0)).abs() < 3.0, "EXPIRETIME {at}");
    assert!(r.persist::<_, bool>("session").unwrap());
    assert_eq!(r.ttl::<_, i64>("session").unwrap(), -1);
    assert_eq!(r.ttl::<_, i64>("nope").unwrap(), -2);
    assert_eq!(
        r.get_ex::<_, String>("session", Expiry::PX(1500)).unwrap(),
        "s"
    );
    assert!((1_000..=1_500).contains(&r.pttl::<_, i64>("session").unwrap()));
    let () = r.set_ex("short", "v", 1).unwrap();
    let () = r.pset_ex("short2", "v", 300).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        r.mget::<_, Vec<Option<String>>>(&["short", "short2", "session"])
            .unwrap(),
        [None, None, None]
    );
    let exat = SetOptions::default().with_expiration(SetExpiry::EXAT(now() as u64 + 100));
    assert_eq!(
        r.set_options::<_, _, String>("gone", "v", exat).unwrap(),
        "OK"
    );
    assert!(r.expire::<_, bool>("gone", -1).unwrap());
    assert!(!r.exists::<_, bool>("gone").unwrap());

    // Transactions.
    let () = r.set("balance", "10").unwrap();
    let (set, withdrawals): (String, i64) = redis::transaction(&mut r, &["balance"], |r, tx| {
        let current: i64 = r.get("balance")?;
        tx.set("balance", current - 3)
            .incr("withdrawals", 1)
            .query(r)
    })
    .unwrap();
    assert_eq!((set.as_str(), withdrawals), ("OK", 1));
    assert_eq!(r.get::<_, String>("balance").unwrap(), "7");
    let mut other = connect(&url(TOKEN, "protocol=resp3")).expect("connect");
    let () = cmd("WATCH").arg("balance").query(&mut r).unwrap();
    let () = other.set("balance", "100").unwrap();
    // A transaction whose EXEC answered a null array: redis::transaction would retry it.
    let aborted: Option<(String,)> = redis::pipe()
        .atomic()
        .set("balance", "0")
        .query(&mut r)
        .unwrap();
    assert_eq!(aborted, None, "EXEC ran although a watched key changed");
    assert_eq!(r.get::<_, String>("balance").unwrap(), "100");

    // Pipelines without a transaction: 1000 commands, replies in order.
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.set(format!("p:{i}"), i).get(format!("p:{i}"));
    }
    let replies: Vec<String> = pipe.query(&mut r).unwrap();
    let expected: Vec<String> = (0..500)
        .flat_map(|i| ["OK".to_string(), i.to_string()])
        .collect();
    assert_eq!(replies, expected);

    // The key walk.
    let walk = ScanOptions::default().with_pattern("p:*").with_count(50);
    let walked: HashSet<String> = r
        .scan_options::<String>(walk)
        .unwrap()
        .map(|key| key.unwrap())
        .collect();
    assert_eq!(walked, (0..500).map(|i| format!("p:{i}")).collect());
    assert_eq!(r.keys::<_, Vec<String>>("p:1*").unwrap().len(), 111);
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut r).unwrap(), 505);
    assert!(
        cmd("RANDOMKEY")
            .query::<Option<String>>(&mut r)
            .unwrap()
            .is_some()
    );
    let info: String = cmd("INFO").arg("server").query(&mut r).unwrap();
    assert!(info.contains("redis_version:"), "{info}");
    let config: HashMap<String, String> = cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut r)
        .unwrap();
    assert_eq!(config["maxmemory-policy"], "allkeys-lru");
    assert_eq!(cmd("SELECT").arg(0).query::<String>(&mut r).unwrap(), "OK");

    // RESP2 (the connections above negotiated RESP3, with HELLO 3 AUTH).
    let mut r2 = connect(&url(TOKEN, "protocol=resp2")).expect("connect");
    assert_eq!(r2.get::<_, String>("p:7").unwrap(), "7");
    assert_eq!(r2.get::<_, Value>("nope").unwrap(), Value::Nil);
    let databases: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query(&mut r2)
        .unwrap();
    assert_eq!(databases, ["databases", "1"]);
    assert_eq!(r2.ttl::<_, i64>("p:7").unwrap(), -1);
}
