"""The candidate's audio on a real network: the receive buffer aiortc builds for every audio track (both legs), and the
TLS context the libraries' HTTPS clients share at a join. Figures (latency and continuity under network profiles, the
join stall) are in the bench (`python -m bench.latency network|joinstall`, BENCHMARKS.md); these are the behaviours.
"""

import httpx
from aiortc import rtcrtpreceiver
from aiortc.rtp import RtpPacket

import interview  # noqa: F401  (puts its buffer in place, as the service does at import)


def packet(sequence_number: int, timestamp: int) -> RtpPacket:
    """An RTP packet as aiortc's receiver hands it to the buffer: its payload depayloaded into `_data`."""
    rtp = RtpPacket(
        sequence_number=sequence_number % 65536, timestamp=timestamp % 2**32, payload=bytes([sequence_number % 256])
    )
    rtp._data = rtp.payload  # type: ignore[attr-defined]
    return rtp


def opus(sequence_number: int) -> RtpPacket:
    """One 20 ms Opus packet: one frame per packet, timestamps 960 apart at 48 kHz."""
    return packet(sequence_number, 960 * sequence_number)


class Receiver:
    """Packets in, as a network delivers them; frames out, as aiortc's receiver hands them to the decoder."""

    def __init__(self) -> None:
        self.buffer = rtcrtpreceiver.JitterBuffer(capacity=16, prefetch=4)  # exactly how aiortc's receiver builds it
        self.decoded: list[int] = []

    def arrive(self, *sequence_numbers: int) -> None:
        for number in sequence_numbers:
            _, frame = self.buffer.add(opus(number))
            if frame is not None:
                self.decoded.append(frame.timestamp // 960)

    @property
    def waiting(self) -> int:
        return sum(packet is not None for packet in self.buffer._packets)


def test_in_order_each_frame_goes_as_the_next_packet_arrives_one_frame_held_not_four():
    receiver = Receiver()
    receiver.arrive(*range(100, 110))
    assert receiver.decoded == list(range(100, 109))  # aiortc's own holds 4 frames (80 ms): it would have 100..105
    assert receiver.waiting == 1


def test_a_lost_packet_is_skipped_once_the_next_arrives_and_the_buffer_stays_one_frame_deep():
    receiver = Receiver()
    receiver.arrive(100, 101, 103, 104, 105)  # 102 lost
    assert receiver.decoded == [100, 101, 103, 104]  # 101 goes when 103 arrives: no wait for 102
    for later in range(106, 140):  # aiortc's own stops at the hole until 16 are queued, then stays ~14 deep (#543)
        receiver.arrive(later)
        assert receiver.waiting == 1 and receiver.decoded[-1] == later - 1


def test_a_late_packet_after_its_turn_is_dropped_not_played_out_of_order():
    receiver = Receiver()
    receiver.arrive(100, 101, 103, 104, 102, 105)  # 102 lands after 103 went to the decoder
    assert receiver.decoded == [100, 101, 103, 104]
    assert receiver.waiting == 1


def test_a_packet_reordered_by_one_is_played_in_order():
    receiver = Receiver()
    receiver.arrive(100, 101, 103, 102, 104, 105)  # 103 overtook 102
    assert receiver.decoded == [100, 101, 102, 103, 104]


def test_sequence_numbers_wrap_around():
    receiver = Receiver()
    receiver.arrive(65533, 65534, 65535, 65536, 65538, 65539)  # 65536 is 0 on the wire; 65537 (1) lost
    assert receiver.decoded == [65533, 65534, 65535, 65536, 65538]


def test_video_keeps_aiortcs_buffer_behaviour():
    buffer = rtcrtpreceiver.JitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(1, 3000)) == (False, None) and buffer.add(packet(2, 3000)) == (False, None)
    _, frame = buffer.add(packet(3, 6000))
    assert frame is not None and frame.data == b"\x01\x02" and frame.timestamp == 3000  # a whole two-packet frame


def test_the_https_clients_built_at_each_join_share_one_tls_context():
    """getstream builds about five httpx clients per join: each used to load certifi's CA bundle on the event loop."""
    clients = [httpx.AsyncClient(), httpx.AsyncClient(), httpx.Client(), httpx.AsyncClient(proxy="http://127.0.0.1:9")]
    contexts = {id(client._transport._pool._ssl_context) for client in clients}
    assert len(contexts) == 1
