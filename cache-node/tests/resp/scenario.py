"""A redis-py session against cache-node's RESP port: authentication, strings, expiry,
transactions, pipelines, the key walk and RESP3. Exits non-zero (an AssertionError) on the
first reply that differs from what Redis answers.

Usage: scenario.py PORT PASSWORD
"""

import sys
import time

import redis


def main(port: int, password: str) -> None:
    # Authentication: refused without the token, accepted with it (user "default" implied).
    anonymous = redis.Redis(port=port)
    try:
        anonymous.get("k")
        raise AssertionError("a command without AUTH was accepted")
    except redis.AuthenticationError:
        pass
    try:
        redis.Redis(port=port, password="wrong").ping()
        raise AssertionError("a wrong password was accepted")
    except redis.AuthenticationError:
        pass

    r = redis.Redis(port=port, password=password, decode_responses=True)
    assert r.ping() is True
    r.client_setname("scenario")
    assert r.client_getname() == "scenario"
    assert r.echo("hi") == "hi"

    # Strings.
    assert r.set("greeting", "hello") is True
    assert r.get("greeting") == "hello"
    assert r.set("greeting", "again", nx=True) is None
    assert r.set("missing", "x", xx=True) is None
    assert r.set("greeting", "world", get=True) == "hello"
    assert r.getset("greeting", "hi") == "world"
    assert r.append("greeting", "!") == 3
    assert r.strlen("greeting") == 3
    assert r.getrange("greeting", 0, 1) == "hi"
    assert r.setrange("greeting", 1, "o") == 3
    assert r.get("greeting") == "ho!"
    assert r.incr("counter") == 1
    assert r.incrby("counter", 41) == 42
    assert r.decr("counter") == 41
    assert r.decrby("counter", 40) == 1
    assert r.incrbyfloat("float", 2.5) == 2.5
    try:
        r.incr("greeting")
        raise AssertionError("INCR of a non-number was accepted")
    except redis.ResponseError as error:
        assert str(error) == "value is not an integer or out of range", error
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "nope") == ["1", "2", None]
    assert r.msetnx({"a": "3", "c": "3"}) is False
    assert r.setnx("c", "3") is True
    assert r.getdel("c") == "3"
    assert r.exists("a", "b", "c") == 2
    assert r.type("a") == "string"
    assert r.type("c") == "none"
    assert r.delete("a", "b", "c") == 2

    # Expiry.
    assert r.set("session", "s", ex=100) is True
    assert 99 <= r.ttl("session") <= 100
    assert 99_000 <= r.pttl("session") <= 100_000
    assert r.expire("session", 200, gt=True) is True
    assert r.expire("session", 300, lt=True) is False
    assert abs(r.expiretime("session") - (time.time() + 200)) < 3
    assert r.persist("session") is True
    assert r.ttl("session") == -1
    assert r.ttl("nope") == -2
    assert r.getex("session", px=1500) == "s"
    assert 1_000 <= r.pttl("session") <= 1_500
    assert r.setex("short", 1, "v") is True
    assert r.psetex("short2", 300, "v") is True
    time.sleep(1.6)
    assert r.get("short") is None and r.get("short2") is None and r.get("session") is None
    assert r.set("gone", "v", exat=int(time.time()) + 100) is True
    assert r.expire("gone", -1) is True
    assert r.exists("gone") == 0

    # Transactions.
    r.set("balance", "10")
    with r.pipeline(transaction=True) as tx:
        tx.watch("balance")
        current = int(tx.get("balance"))
        tx.multi()
        tx.set("balance", str(current - 3))
        tx.incr("withdrawals")
        assert tx.execute() == [True, 1]
    assert r.get("balance") == "7"
    other = redis.Redis(port=port, password=password, decode_responses=True)
    with r.pipeline(transaction=True) as tx:
        tx.watch("balance")
        other.set("balance", "100")
        tx.multi()
        tx.set("balance", "0")
        try:
            tx.execute()
            raise AssertionError("EXEC ran although a watched key changed")
        except redis.WatchError:
            pass
    assert r.get("balance") == "100"

    # Pipelines without a transaction: 1000 commands, replies in order.
    with r.pipeline(transaction=False) as pipe:
        for i in range(500):
            pipe.set(f"p:{i}", i)
            pipe.get(f"p:{i}")
        replies = pipe.execute()
    assert replies == [x for i in range(500) for x in (True, str(i))]

    # The key walk.
    walked = set(r.scan_iter(match="p:*", count=50))
    assert walked == {f"p:{i}" for i in range(500)}, len(walked)
    assert len(r.keys("p:1*")) == 111
    assert r.dbsize() == 500 + 5
    assert r.randomkey() is not None
    info = r.info()
    assert info["redis_version"] and info["connected_clients"] >= 2
    assert r.info("keyspace")["db0"]["keys"] == 505
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    assert r.execute_command("SELECT", 0) in (True, "OK")

    # RESP3.
    r3 = redis.Redis(port=port, password=password, protocol=3, decode_responses=True)
    assert r3.get("p:7") == "7"
    assert r3.get("nope") is None
    assert r3.config_get("databases") == {"databases": "1"}
    assert r3.ttl("p:7") == -1
    print("scenario passed")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
