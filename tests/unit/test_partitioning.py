"""Our murmur2 must pick the partitions the Java client and aiokafka's producer pick, or a person's
events published by the outbox relay would land beside, not after, those sent with producer.send."""

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import murmur2


@given(st.binary(max_size=200))
def test_murmur2_equals_the_clients(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


def test_murmur2_known_values() -> None:
    # From the Java client's own tests (org.apache.kafka.common.utils.UtilsTest.testMurmur2).
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             b"abc": 479470107}  # fmt: skip
    for key, signed in cases.items():
        assert murmur2(key) == signed & 0xFFFFFFFF, key
