"""A WHIP session's id is its windows' session id: one pod still refuses a second live session of a participant
(409); two pods (agent replicas, which share nothing) accept one each, kept apart by their session ids."""

from __future__ import annotations

import aiohttp
from whip_testing import FreezingTrack, RawPeer, ServerFactory, post, stream_url


async def test_one_participant_on_two_pods_gets_two_sessions_kept_apart(whip_server: ServerFactory) -> None:
    pod_a, url_a, _ = await whip_server()
    pod_b, url_b, _ = await whip_server()
    first, refused, other_pod = (RawPeer(FreezingTrack(0)) for _ in range(3))
    try:
        async with aiohttp.ClientSession() as http:
            await first.connect(http, stream_url(url_a, participant_id="p1"))
            again = await post(http, stream_url(url_a, participant_id="p1"), await refused.offer())
            assert again.status == 409 and "already has a live session" in again.text
            await other_pod.connect(http, stream_url(url_b, participant_id="p1"))
        (a,), (b,) = pod_a.registry.sessions(), pod_b.registry.sessions()
        assert a.stream.key == b.stream.key == "call-1/p1" and a.stream.role == "patient"
        assert (a.stream.session_id, b.stream.session_id) == (a.id, b.id) and a.id != b.id
        assert str(first.location).endswith(f"/whip/{a.id}") and str(other_pod.location).endswith(f"/whip/{b.id}")
    finally:
        for peer in (first, refused, other_pod):
            await peer.pc.close()
