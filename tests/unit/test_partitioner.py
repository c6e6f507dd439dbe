import pytest

from eddyline.streams.sdk.partitioner import murmur2, partition_for

# The vectors of Kafka's own UtilsTest.testMurmur2 (clients/src/test/.../UtilsTest.java).
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafkas_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partition_is_positive_modulo() -> None:
    assert all(0 <= partition_for(k, 7) < 7 for k, _ in KAFKA_VECTORS)
    assert partition_for(b"foobar", 3) == (-790332482 & 0x7FFFFFFF) % 3
