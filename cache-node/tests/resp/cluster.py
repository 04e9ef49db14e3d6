"""redis-py's cluster client (RedisCluster) against a partitioned cache-node cluster in
--resp-cluster-mode, given the RESP port of one node only: it learns the slots from
CLUSTER SLOTS, writes 1000 keys (each to its slot's primary, following -MOVED where its map
is wrong) and reads every one of them back, then runs a multi-key command within one hash
tag and checks that one across slots is refused. Exits non-zero on the first difference.

Usage: cluster.py PORT
"""

import sys

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


if __name__ == "__main__":
    main(int(sys.argv[1]))
