"""REDIS_URL: one Redis or a Redis Cluster, and clear errors for anything else."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster

from huddle.config import Settings
from signaling.redis_client import ClusterUrl, check_url, connect, is_cluster, parse_cluster_url


def test_cluster_url_lists_its_seeds() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/") == ClusterUrl(
        [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    )
    assert parse_cluster_url("redis+cluster://ada:s%40cret@h:7000") == ClusterUrl(
        [("h", 7000)], "ada", "s@cret"
    )
    assert parse_cluster_url("redis+cluster://secret@h:7000") == ClusterUrl(
        [("h", 7000)], None, "secret"
    )
    assert parse_cluster_url("redis+cluster://[::1]:7000").seeds == [("::1", 7000)]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "host:port"),
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://h:0", "host:port"),
        ("redis+cluster://h:70000", "host:port"),
        ("redis+cluster://h:\u00b2", "host:port"),  # a digit to str.isdigit(), not to int()
        ("redis+cluster://h:7000,", "host:port"),
        ("redis+cluster://h:7000/0", "no path"),
        ("redis+cluster://h:7000?ssl=1", "no path"),
        ("http://h:7000", "must start with"),
        ("h:7000", "must start with"),
    ],
)
def test_bad_urls_are_refused_with_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_url(url)
    with pytest.raises(ValidationError, match=says):
        Settings(redis_url=url)


def test_one_redis_or_a_cluster_client() -> None:
    assert not isinstance(connect("unix:///tmp/x.sock"), RedisCluster)
    assert isinstance(connect("redis+cluster://127.0.0.1:7000"), RedisCluster)
    assert Settings(redis_url="redis+cluster://127.0.0.1:7000").redis_url


def test_is_cluster_says_what_isinstance_says() -> None:
    class Subclassed(RedisCluster):
        pass

    for client in (
        connect("redis://127.0.0.1:1"),
        connect("unix:///tmp/x.sock"),
        redis.Redis(),
        connect("redis+cluster://127.0.0.1:7000"),
        Subclassed(host="127.0.0.1", port=7000),
    ):
        assert is_cluster(client) == isinstance(client, RedisCluster), type(client)
        assert is_cluster(client) == isinstance(client, RedisCluster), "asked again"
