"""redis-py's cluster client (RedisCluster) against a partitioned cache-node cluster in
--resp-cluster-mode, given the RESP port of one node only: it learns the slots from
CLUSTER SLOTS, writes 1000 keys (each to its slot's primary, following -MOVED where its map
is wrong) and reads every one of them back, then runs a multi-key command within one hash
tag and checks that one across slots is refused. Exits non-zero on the first difference.

With "moves", it instead writes KEYS keys, prints "ready" and then, until a line "stop"
arrives on its standard input, rewrites every key with the round's value and reads every one
back, while the test changes the membership under it: every read must return the value just
written, through whatever -MOVED and -ASK redirects the move causes. Each round starts by
re-reading CLUSTER SLOTS, as clients with a periodic topology refresh do: redis-py alone
re-reads it only after -MOVED, and a former primary that is still an owner serves without
one, so it would never go to the new owner while that one still receives its data. It prints
how many rounds it ran and how many redirects of each kind it followed.

Usage: cluster.py PORT | cluster.py moves PORT KEYS
"""

import sys
import threading

import redis
from redis.cluster import RedisCluster


def main(port: int) -> None:
    cluster = RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
    # Every node is the primary of some slots and a replica of others; redis-py keeps one
    # role per node (the last it read), so the roles it reports mean nothing here.
    nodes = {node.name for node in cluster.get_nodes()}
    assert len(nodes) == 3, f"the client found {len(nodes)} nodes: {nodes}"

    keys = [f"key-{i}" for i in range(1000)]
    for key in keys:
        assert cluster.set(key, f"value of {key}") is True, key
    for key in keys:
        assert cluster.get(key) == f"value of {key}", key
    # The keys went to every node, each to its slot's primary.
    served = {cluster.get_node_from_key(key).name for key in keys}
    assert served == nodes, f"{served} != {nodes}"

    assert cluster.mset({"{user:1}name": "ada", "{user:1}lang": "en"}) is True
    assert cluster.mget("{user:1}name", "{user:1}lang") == ["ada", "en"]
    primary = cluster.get_node_from_key("key-0")
    try:
        cluster.execute_command("MSET", "key-0", "1", "key-1", "2", target_nodes=primary)
        raise AssertionError("an MSET across slots was accepted")
    except redis.ResponseError as error:
        assert str(error) == "Keys in request don't hash to the same slot", str(error)
    assert cluster.keyslot("{user:1}name") == cluster.cluster_keyslot("{user:1}name")
    print("scenario passed")


def count_redirects() -> dict:
    """Counts the -MOVED and -ASK replies the client parses (MovedError is an AskError and
    shares its constructor), by wrapping that constructor: the client handles them itself."""
    counts = {"MovedError": 0, "AskError": 0}
    init = redis.exceptions.AskError.__init__

    def counting(self, *args, **kwargs):
        counts[type(self).__name__] = counts.get(type(self).__name__, 0) + 1
        init(self, *args, **kwargs)

    redis.exceptions.AskError.__init__ = counting
    return counts


def moves(port: int, count: int) -> None:
    redirects = count_redirects()
    cluster = RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
    keys = [f"key-{i}" for i in range(count)]

    def round_trip(round: int) -> None:
        cluster.nodes_manager.initialize()
        for key in keys:
            assert cluster.set(key, f"{key} r{round}") is True, (key, round)
        for key in keys:
            got = cluster.get(key)
            assert got == f"{key} r{round}", f"{key} in round {round}: {got!r}"

    round_trip(0)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    rounds = 1
    while not stop.is_set():
        round_trip(rounds)
        rounds += 1
    print(
        f"scenario passed after {rounds} rounds, {redirects['MovedError']} MOVED and "
        f"{redirects['AskError']} ASK followed",
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1] == "moves":
        moves(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(int(sys.argv[1]))
