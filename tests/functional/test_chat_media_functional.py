"""Files in chat end to end: upload, send as a message, the recipient sees and downloads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import RequestError
from huddle.media_client import MediaClient, MediaRequestError
from tests.helpers import Node, eventually, make_token
from tests.media_files import audio_duration, jpeg, wav, webm


async def chat(node: Node, identity: str) -> ChatClient:
    client = ChatClient(await node.client(identity))
    await client.sync()
    return client


async def test_image_and_voice_note_travel_through_chat(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    picture = jpeg((800, 600))
    async with MediaClient(node.url, make_token("alice")) as media:
        image = await media.upload(picture, name="beach.jpg")
        voice = await media.upload(wav(seconds=1.5), name="note.wav")
    sent = await alice.send(to="bob", kind="image", media=image["id"], text="look")
    await alice.send(sent.conv, kind="voice", media=voice["id"])
    await eventually(lambda: len(bob.messages(sent.conv)) == 2)
    shown, note = bob.messages(sent.conv)
    assert shown.media is not None and note.media is not None
    assert (shown.media.id, shown.media.name, shown.media.mime) == (
        image["id"],
        "beach.jpg",
        "image/jpeg",
    )
    assert (shown.media.width, shown.media.height, shown.media.size) == (800, 600, len(picture))
    assert shown.media.thumbnail
    assert note.media.mime.startswith("audio/") and note.media.duration_ms is not None
    assert 1400 <= note.media.duration_ms <= 1600
    assert note.media.waveform

    # The file's name is searchable beside the caption.
    found = await bob.request(w.ChatSearch(id="", query="beach"))
    assert [h.message.seq for h in found.hits] == [shown.seq]

    # Shared in the conversation: bob may download it; eve, in no such conversation, may not.
    async with MediaClient(node.url, make_token("bob")) as as_bob:
        assert await as_bob.download(image["id"]) == picture
    async with MediaClient(node.url, make_token("eve")) as as_eve:
        with pytest.raises(MediaRequestError) as info:
            await as_eve.download(image["id"])
        assert info.value.status == 404


async def test_chromium_voice_note_in_webm_is_a_voice_message(node: Node, tmp_path: Path) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    recorded = webm(tmp_path / "note.webm", seconds=1.0)  # Opus in WebM, no video track
    async with MediaClient(node.url, make_token("alice")) as media:
        uploaded = await media.upload(recorded, name="note.webm")
        sent = await alice.send(to="bob", kind="voice", media=uploaded["id"])  # audio/* only
        assert uploaded["mime"] == "audio/webm" and uploaded["kind"] == "audio"
        normalized = await media.download(f"/v1/media/{uploaded['id']}/voice")
    assert 0.9 <= audio_duration(normalized) <= 1.1  # the Ogg/Opus version
    await eventually(lambda: len(bob.messages(sent.conv)) == 1)
    (note,) = bob.messages(sent.conv)
    assert note.kind == "voice" and note.media is not None
    assert note.media.mime == "audio/webm" and note.media.waveform
    assert note.media.duration_ms is not None and 900 <= note.media.duration_ms <= 1100


@pytest.mark.redis_cluster
async def test_files_one_may_not_see_cannot_be_sent(node: Node) -> None:
    alice, eve = await chat(node, "alice"), await chat(node, "eve")
    async with MediaClient(node.url, make_token("alice")) as media:
        image = await media.upload(jpeg(), name="private.jpg")
    with pytest.raises(RequestError) as info:
        await eve.send(to="alice", kind="image", media=image["id"])
    assert info.value.code == "unknown_media"
    with pytest.raises(RequestError) as info:
        await alice.send(to="eve", kind="voice", media=image["id"])
    assert info.value.code == "bad_message_content"
    with pytest.raises(RequestError) as info:
        await alice.send(to="eve", kind="file", media="no-such-file-0123456789")
    assert info.value.code == "unknown_media"
    assert await alice.conversations() == []  # refused sends made no conversation
    found = await alice.request(w.ChatSearch(id="", query="private"))
    assert found.hits == []
