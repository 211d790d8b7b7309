"""Keep every packet of a test or bench process on 127.0.0.1: call `loopback_only()` before any WebRTC peer starts.

- aioice leaves 127.0.0.1 out of its host candidates, so two local peers would talk over another interface;
- aiortc adds Google's STUN server when a peer connection is given no ICE servers;
- the getstream SDK pings 8.8.8.8, 1.1.1.1 and 208.67.222.222 every second while a call is joined;
- onnxruntime sends a telemetry DNS lookup unless told not to before it is imported: `tests/__init__.py` does that,
  first thing in every test and bench process.
"""

import socket


def loopback_only() -> None:
    import aioice.ice
    from aiortc.rtcicetransport import RTCIceGatherer
    from getstream.video.rtc.network_monitor import NetworkMonitor

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])  # type: ignore[assignment,method-assign]

    async def no_pings(self: NetworkMonitor) -> None:
        return None

    NetworkMonitor.start_monitoring = no_pings  # type: ignore[method-assign]


def point_stream_coordinator_at(url: str) -> None:
    """The getstream SDK's coordinator WebSocket URI is hard-coded to Stream's host: point it at a stand-in."""
    from getstream.video.rtc.coordinator.ws import StreamAPIWS

    StreamAPIWS.__init__.__kwdefaults__["uri"] = url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
