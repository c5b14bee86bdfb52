"""The Wyoming server end to end over loopback, driven by the wyoming package's own client.

Every result is compared with what drsn_asr.transcribe gives for the same samples, so the tests hold for the
untrained placeholder (threshold 0: whatever keyword leads fires) as well as for a trained model; the checks
that need a trained model skip themselves while the default model is the placeholder.
"""

import asyncio
import importlib.resources
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # wyoming imports audioop, deprecated since 3.11
    pytest.importorskip("wyoming.audio")

from wyoming.asr import Transcribe, Transcript  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.event import async_read_event  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.ping import Ping, Pong  # noqa: E402
from wyoming.wake import Detect, Detection, NotDetected  # noqa: E402

import drsn_asr  # noqa: E402
from drsn_asr.runtime.audio import read_audio, resample  # noqa: E402
from drsn_asr.runtime.checkpoint import LoadedModel  # noqa: E402
from drsn_asr.runtime.config import FeatureConfig, ModelConfig  # noqa: E402
from drsn_asr.runtime.model import KeywordNet  # noqa: E402
from drsn_asr.runtime import server as server_module  # noqa: E402
from drsn_asr.runtime.server import KeywordServer, pcm_to_float32  # noqa: E402
from drsn_asr.tools.bench import _server_client  # noqa: E402

RATE = 16000
CHUNK_SAMPLES = 1024  # what Home Assistant sends
TIMEOUT_S = 25.0
# two excerpts of the shipped street recording, each holding one word at 10 dB SNR (see street_demo.json), with
# half a second or more of street before it: a stream that starts abruptly in loud noise can fire on that onset
EXCERPTS = {"four": (2.9, 4.6), "zero": (13.6, 15.6)}


@pytest.fixture(scope="module")
def model():
    return drsn_asr.load_model(device="cpu")


@pytest.fixture(scope="module")
def clips():
    """{word: int16 mono 16 kHz samples} cut from drsn_asr/assets/street_demo.flac."""
    resource = importlib.resources.files("drsn_asr") / "assets" / "street_demo.flac"
    with importlib.resources.as_file(resource) as path:
        x = read_audio(path)
    return {w: np.round(x[int(a * RATE) : int(b * RATE)] * 32767).astype(np.int16) for w, (a, b) in EXCERPTS.items()}


@pytest.fixture(scope="module")
def reference(model, clips):
    """What the library itself finds in each clip at threshold 0: [(label, end in ms)]."""
    return {w: [(d.label, round(d.end_s * 1000)) for d in drsn_asr.transcribe(x, model=model, threshold=0.0)]
            for w, x in clips.items()}


def _untrained(model) -> bool:
    return model.training.get("note") == "untrained placeholder"


def _serve(model, scenario, with_server=False, **options):
    """Run `scenario(port)` (with `with_server`: `scenario(port, server)`) against a server started in-process on a
    free loopback port."""

    async def main():
        server = KeywordServer(model, **options)
        await server.start("tcp://127.0.0.1:0")
        try:
            args = (server.address[1], server) if with_server else (server.address[1],)
            return await asyncio.wait_for(scenario(*args), TIMEOUT_S)
        finally:
            await server.stop()

    return asyncio.run(main())


async def _send_audio(client, samples: np.ndarray, rate=RATE, width=2, channels=1, chunk_frames=CHUNK_SAMPLES):
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    data = samples.tobytes()
    step = chunk_frames * width * channels
    for i in range(0, len(data), step):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=data[i : i + step]).event())
        await asyncio.sleep(0)  # let other clients interleave
    await client.write_event(AudioStop().event())


async def _read_until(client, *types):
    """Events up to and including the first of `types`."""
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"connection closed before {types}; got {[e.type for e in events]}"
        events.append(event)
        if event.type in types:
            return events


async def _results(client, detected_before=False):
    """After audio-stop: the detections still to come, then not-detected if the stream had none.

    A ping marks the end: the server answers events in order, so its pong comes after all of them.
    """
    await client.write_event(Ping(text="end").event())
    got, not_detected = [], False
    for event in await _read_until(client, "pong"):
        if Detection.is_type(event.type):
            got.append((Detection.from_event(event).name, Detection.from_event(event).timestamp))
        elif NotDetected.is_type(event.type):
            not_detected = True
        else:
            assert Pong.is_type(event.type), event
    assert not_detected == (not got and not detected_before), "not-detected comes exactly when nothing was"
    return got


async def _wake(port, samples, names=None, **fmt):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Detect(names=names).event())
        await _send_audio(client, samples, **fmt)
        return await _results(client)


async def _transcribe(port, samples, **fmt) -> str:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await _send_audio(client, samples, **fmt)
        events = await _read_until(client, "transcript")
        assert [e.type for e in events] == ["transcript"]
        return Transcript.from_event(events[-1]).text


def test_describe_lists_commands_as_wake_words_and_an_asr_program(model):
    async def scenario(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await client.read_event())
            await client.write_event(Ping(text="hi").event())
            pong = Pong.from_event(await client.read_event())
            return info, pong

    info, pong = _serve(model, scenario)
    assert pong.text == "hi"
    (wake,) = info.wake
    keywords = [label for label in model.labels if not label.startswith("_")]
    assert [m.name for m in wake.models] == keywords
    for m in wake.models:
        assert m.languages == ["en"] and m.attribution.name == "drsn-asr" and m.version and m.installed
    (asr,) = info.asr
    assert asr.attribution.name == "drsn-asr" and [m.name for m in asr.models] == ["default"]
    assert asr.models[0].languages == ["en"]


def test_wake_flow_streams_detections_with_timestamps_inside_the_audio(model, clips, reference):
    x = clips["four"]

    async def scenario(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Detect().event())
            await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            for i in range(0, len(x), CHUNK_SAMPLES):
                await client.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=x[i : i + CHUNK_SAMPLES].tobytes()).event())
            first = Detection.from_event((await _read_until(client, "detection"))[-1])  # before audio-stop
            await client.write_event(AudioStop().event())
            return [(first.name, first.timestamp), *await _results(client, detected_before=True)]

    got = _serve(model, scenario, threshold=0.0)
    assert got, "threshold 0 must produce detections"
    for name, timestamp in got:
        assert 0 <= timestamp <= len(x) * 1000 / RATE
        assert name in model.labels
    assert got == reference["four"]


def test_wake_flow_restricted_to_asked_names_and_not_detected(model, clips):
    wanted = ["seven", "nine"]
    got = _serve(model, lambda port: _wake(port, clips["zero"], names=wanted), threshold=0.0)
    assert all(name in wanted for name, _ in got)  # empty (not-detected was received) is fine too
    silence = np.zeros(RATE, np.int16)
    assert _serve(model, lambda port: _wake(port, silence)) == []  # default threshold: nothing in silence


def test_trained_model_wakes_on_the_right_words(model, clips):
    if _untrained(model):
        pytest.skip("the default model is the untrained placeholder")

    async def scenario(port):
        return [await _wake(port, clips[w]) for w in EXCERPTS], await _wake(port, clips["four"], names=["zero"])

    per_clip, restricted = _serve(model, scenario)
    assert [[name for name, _ in got] for got in per_clip] == [[w] for w in EXCERPTS]
    assert restricted == []


def test_asr_flow_transcript_is_the_recognized_commands(model, clips, reference):
    text = _serve(model, lambda port: _transcribe(port, clips["four"]), threshold=0.0)
    assert text == " ".join(label for label, _ in reference["four"])
    if not _untrained(model):
        assert _serve(model, lambda port: _transcribe(port, clips["zero"])) == "zero"


class LoudIsYes(KeywordNet):
    """A network whose output we control: 'yes' while the window is loud, '_silence_' otherwise."""

    def forward(self, logmel):
        loud = (logmel.exp().sum(dim=1).mean(dim=1).log() > 1.7).float()
        logits = torch.zeros(len(logmel), 4)
        logits[:, 0], logits[:, 3] = 10 * loud, 10 * (1 - loud)
        return logits


def _bursts(starts_s, total_s=4.0, amplitude=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(total_s * RATE)) * 0.001
    for s in starts_s:
        a = int(s * RATE)
        x[a : a + int(0.4 * RATE)] += rng.standard_normal(int(0.4 * RATE)) * amplitude
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def loud():
    return LoadedModel(LoudIsYes(ModelConfig(), FeatureConfig(), 4).eval(), ["yes", "no", "_unknown_", "_silence_"],
                       FeatureConfig(), {}, "loud")


def test_two_clients_at_once_get_their_own_results(model, loud, clips, reference):
    a, b = _bursts([0.5, 2.5], seed=1), _bursts([1.4], seed=2)
    alone = {name: [(d.label, round(d.end_s * 1000)) for d in drsn_asr.transcribe(x, model=loud)]
             for name, x in (("a", a), ("b", b))}
    assert len(alone["a"]) == 2 and len(alone["b"]) == 1  # the clients' results differ

    async def scenario(port):
        return await asyncio.gather(_wake(port, a), _wake(port, b, chunk_frames=333), _transcribe(port, a))

    got_a, got_b, text_a = _serve(loud, scenario)
    assert got_a == alone["a"] and got_b == alone["b"] and text_a == "yes yes"

    # the real model too (shared by both connections)
    async def real(port):
        return await asyncio.gather(_wake(port, clips["four"]), _wake(port, clips["zero"], chunk_frames=333))

    four, zero = _serve(model, real, threshold=0.0)
    assert four == reference["four"] and zero == reference["zero"]


class Gated(LoudIsYes):
    """Inference that waits for the test's go-ahead: a stand-in for a slow model or a huge chunk."""

    gate = threading.Event()
    entered = threading.Event()

    def forward(self, logmel):
        self.entered.set()
        assert self.gate.wait(TIMEOUT_S), "the test never released the gate"
        return super().forward(logmel)


def _gated():
    """A model whose inference waits for Gated.gate, the gate closed."""
    Gated.gate.clear()
    Gated.entered.clear()
    return LoadedModel(Gated(ModelConfig(), FeatureConfig(), 4).eval(), ["yes", "no", "_unknown_", "_silence_"],
                       FeatureConfig(), {}, "gated")


def test_a_stalled_inference_does_not_stall_other_clients():
    gated = _gated()

    async def scenario(port):
        async with AsyncTcpClient("127.0.0.1", port) as slow:
            await slow.write_event(Detect().event())
            await _send_audio(slow, _bursts([], total_s=1.0))
            while not Gated.entered.is_set():  # the slow client's inference is now blocked in a worker
                await asyncio.sleep(0.01)
            async with AsyncTcpClient("127.0.0.1", port) as other:
                await other.write_event(Describe().event())
                info = Info.from_event(await asyncio.wait_for(other.read_event(), 5.0))
            served_while_blocked = not Gated.gate.is_set()
            Gated.gate.set()
            return info, served_while_blocked, await _results(slow)

    try:
        info, served_while_blocked, slow_result = _serve(gated, scenario)
    finally:
        Gated.gate.set()
    assert served_while_blocked and [m.name for m in info.wake[0].models] == ["yes", "no"]
    assert slow_result == []  # not-detected, once released


def test_a_client_sends_on_while_its_chunks_wait_and_gets_what_it_would_alone(loud, caplog):
    """The server does not answer a connection's chunks one at a time: while inference is held up it goes on
    reading them (up to MAX_CHUNKS_IN_FLIGHT, then TCP holds the client back), steps them together in order, and
    the detections are those of the library alone. A client that leaves with chunks still waiting costs the
    others nothing."""
    x = _bursts([0.5, 2.5], seed=1)
    alone = [(d.label, round(d.end_s * 1000)) for d in drsn_asr.transcribe(x, model=loud)]
    assert len(alone) == 2
    gated = _gated()  # the same network as `loud`, held up at its first window
    n_chunks = len(x) // 160

    async def scenario(port, server):
        steady = asyncio.create_task(_wake(port, x, chunk_frames=160))
        while not Gated.entered.is_set():
            await asyncio.sleep(0.01)
        leaving = AsyncTcpClient("127.0.0.1", port)
        await leaving.connect()
        await leaving.write_event(Detect().event())
        await leaving.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        for i in range(0, 32000, 1024):
            await leaving.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=x[i : i + 1024].tobytes()).event())
        await asyncio.sleep(0.5)  # both clients have sent what the server would read meanwhile
        await leaving.disconnect()
        await asyncio.sleep(0.1)
        Gated.gate.set()
        got = await steady
        for _ in range(100):
            if server.n_streams == 0:
                break
            await asyncio.sleep(0.01)
        return got, server.engine.n_batches, server.n_streams

    try:
        with caplog.at_level(logging.INFO, logger="drsn_asr.runtime.server"):
            got, n_batches, left = _serve(gated, scenario, with_server=True)
    finally:
        Gated.gate.set()
    assert got == alone
    assert n_batches < n_chunks / 4, (n_batches, n_chunks)  # answered one by one, it would take one pass each
    assert left == 0 and "failed" not in caplog.text


class Failing(LoudIsYes):
    """Inference that fails: a stand-in for a model error mid-stream."""

    def forward(self, logmel):
        raise RuntimeError("the model broke")


def test_a_failed_step_reaches_its_client_as_an_error_and_a_close(caplog):
    """A chunk's answer comes after the connection has read on: its failure is still the client's `error` event
    (code "internal"), with no transcript, and the connection is closed without a reset although the client is
    still sending (30 s of audio, written as fast as the socket takes it)."""
    failing = LoadedModel(Failing(ModelConfig(), FeatureConfig(), 4).eval(), ["yes", "no", "_unknown_", "_silence_"],
                          FeatureConfig(), {}, "failing")

    async def scenario(port):
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Transcribe(language="en").event())
            try:
                await _send_audio(client, _bursts([0.5], total_s=30.0))
            except ConnectionError:  # the server may close while the client still sends
                pass
            events = []
            while (event := await client.read_event()) is not None:
                events.append(event)
            return events

    with caplog.at_level(logging.ERROR, logger="drsn_asr.runtime.server"):
        events = _serve(failing, scenario)
    errors = [Error.from_event(e) for e in events if Error.is_type(e.type)]
    assert len(errors) == 1 and errors[0].code == "internal" and "the model broke" in errors[0].text, events
    assert not any(Transcript.is_type(e.type) for e in events)
    assert "inference failed" in caplog.text


def test_stereo_48khz_input_is_downmixed_and_resampled(model, loud, clips):
    # one word on the left channel, one on the right: both must be found, at 16 kHz stream times
    left = resample(_bursts([0.5], amplitude=0.6, seed=3).astype(np.float32) / 32768, RATE, 48000)
    right = resample(_bursts([2.2], amplitude=0.6, seed=4).astype(np.float32) / 32768, RATE, 48000)
    pcm = np.round(np.clip(np.stack([left, right], axis=1), -1, 1) * 32767).astype("<i2")
    got = _serve(loud, lambda port: _wake(port, pcm, rate=48000, channels=2))
    assert [name for name, _ in got] == ["yes", "yes"]
    assert abs(got[0][1] - 900) < 150 and abs(got[1][1] - 2600) < 150, got
    # and the real model gives exactly what the library gives for the same down-mixed samples
    mono = clips["four"].astype(np.float32) / 32768
    x48 = resample(mono, RATE, 48000)
    stereo = np.stack([x48, 0.5 * x48], axis=1)
    pcm = np.round(np.clip(stereo, -1, 1) * 32767).astype("<i2")  # interleaved L R L R ...
    got = _serve(model, lambda port: _wake(port, pcm, rate=48000, channels=2), threshold=0.0)
    downmixed = pcm.astype(np.float32).mean(axis=1) / 32768
    expected = drsn_asr.transcribe(downmixed, model=model, sample_rate=48000, threshold=0.0)
    assert got == [(d.label, round(d.end_s * 1000)) for d in expected]
    assert got, "threshold 0 must produce detections"


@pytest.mark.parametrize("width,dtype", [(1, "i1"), (2, "<i2"), (4, "<i4")])
def test_pcm_widths_convert_to_float32(width, dtype):
    full = 2 ** (8 * width - 1)
    ints = np.array([[full - 1, 0], [-full, full // 2]], dtype=dtype)  # 2 frames × 2 channels
    got = pcm_to_float32(ints.tobytes(), width, 2)
    assert got.dtype == np.float32
    assert np.allclose(got, ints.astype(np.float64).mean(axis=1) / full, atol=1e-6)


def test_24_bit_pcm_converts():
    values = np.array([2**23 - 1, -(2**23), 4096], np.int32)
    raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)
    assert np.allclose(pcm_to_float32(raw, 3, 1), values / 2**23, atol=1e-6)


async def _raw_exchange(port, raw: bytes):
    """Send raw bytes; return (the server's reply event, whether it then closed the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    reply = await async_read_event(reader)
    closed = await asyncio.wait_for(reader.read(), 5.0) == b""
    writer.close()
    return reply, closed


def _header(event_type, **fields) -> bytes:
    return json.dumps({"type": event_type, **fields}).encode() + b"\n"


BAD_MESSAGES = {
    "not-json": (b"this is not json\n", "bad-message"),
    "oversized-payload": (_header("audio-chunk", data={"rate": 16000, "width": 2, "channels": 1},
                                  payload_length=100_000_000) + bytes(1000), "too-large"),
    "oversized-header": (b'{"type": "describe", "x": "' + b"a" * 200_000 + b'"}\n', "too-large"),
    "chunk-before-start": (_header("audio-chunk", data={"rate": 16000, "width": 2, "channels": 1},
                                   payload_length=4) + bytes(4), "bad-order"),
    "odd-bytes": (_header("audio-start", data={"rate": 16000, "width": 2, "channels": 1})
                  + _header("audio-chunk", data={"rate": 16000, "width": 2, "channels": 1}, payload_length=3)
                  + bytes(3), "bad-audio"),
    "unknown-wake-word": (_header("detect", data={"names": ["abracadabra"]}), "unknown-name"),
    "data-not-json": (_header("describe", data_length=3) + b"abc", "bad-message"),
    "data-not-an-object": (_header("describe", data_length=3) + b"[1]", "bad-message"),
}


def test_malformed_messages_get_an_error_and_a_close_while_another_client_goes_on(model, clips, reference):
    x = clips["four"]
    half = len(x) // 2 // CHUNK_SAMPLES * CHUNK_SAMPLES

    async def scenario(port):
        async with AsyncTcpClient("127.0.0.1", port) as good:
            await good.write_event(Detect().event())
            await good.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            for i in range(0, half, CHUNK_SAMPLES):
                await good.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=x[i : i + CHUNK_SAMPLES].tobytes()).event())
            replies = {name: await _raw_exchange(port, raw) for name, (raw, _) in BAD_MESSAGES.items()}
            # the same mistake through the wyoming client: audio before audio-start
            async with AsyncTcpClient("127.0.0.1", port) as bad:
                await bad.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=bytes(64)).event())
                replies["client-chunk-before-start"] = (await bad.read_event(), await bad.read_event() is None)
            for i in range(half, len(x), CHUNK_SAMPLES):
                await good.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=x[i : i + CHUNK_SAMPLES].tobytes()).event())
            await good.write_event(AudioStop().event())
            return replies, await _results(good)

    replies, got = _serve(model, scenario, threshold=0.0)
    codes = {name: code for name, (_, code) in BAD_MESSAGES.items()} | {"client-chunk-before-start": "bad-order"}
    for name, (reply, closed) in replies.items():
        assert reply is not None and Error.is_type(reply.type), (name, reply)
        assert Error.from_event(reply).code == codes[name], (name, reply)
        assert closed, name
    assert got == reference["four"]


def test_refuses_a_uri_it_cannot_serve(model):
    async def main():
        with pytest.raises(ValueError, match="tcp://HOST:PORT"):
            await KeywordServer(model).start("http://127.0.0.1:10400")

    asyncio.run(main())


def test_cli_serves_until_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "drsn_asr.cli", "serve", "--uri", "tcp://127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # "serving default (20 commands) on tcp://127.0.0.1:PORT; ...; Ctrl-C to stop"
        match = re.search(r"on tcp://127\.0\.0\.1:(\d+);", line)
        assert match, line
        from drsn_asr.runtime.inference import available_cores

        assert f"steps of 32 streams or more on {available_cores()} threads" in line  # its cores, by default

        async def describe():
            async with AsyncTcpClient("127.0.0.1", int(match[1])) as client:
                await client.write_event(Describe().event())
                return Info.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT_S))

        assert asyncio.run(describe()).asr[0].models[0].name == "default"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_cli_refuses_a_uri_it_cannot_serve(capsys):
    from drsn_asr.cli import main

    assert main(["serve", "--uri", "http://127.0.0.1:10400"]) == 1
    assert "use tcp://HOST:PORT" in capsys.readouterr().err


def test_many_clients_share_batched_steps_and_each_gets_what_it_would_alone(loud):
    signals = [_bursts([0.3 + 0.2 * (i % 5)], total_s=2.0, seed=10 + i) for i in range(24)]
    alone = [[(d.label, round(d.end_s * 1000)) for d in drsn_asr.transcribe(x, model=loud)] for x in signals]
    assert all(alone)

    async def scenario(port, server):
        found = await asyncio.gather(*(_wake(port, x, chunk_frames=320) for x in signals))
        return found, server.engine.n_batches, server

    found, n_batches, server = _serve(loud, scenario, with_server=True)
    assert found == alone
    n_ops = sum(len(x) // 320 + 3 for x in signals)  # start, chunks, stop per client
    assert n_batches < n_ops / 3, (n_batches, n_ops)  # the clients' operations went through shared steps
    assert server.n_streams == 0


async def _start_stream(port):
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Detect().event())
    await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
    await client.write_event(Ping(text="started").event())
    return client, await client.read_event()


def test_streams_beyond_capacity_are_refused_visibly_and_a_freed_place_is_given_again(loud, caplog):
    async def scenario(port, server):
        a, reply_a = await _start_stream(port)
        b, reply_b = await _start_stream(port)
        c, reply_c = await _start_stream(port)  # one too many
        closed_c = await asyncio.wait_for(c.read_event(), 5.0) is None
        await a.write_event(AudioStop().event())
        await _results(a)
        await a.disconnect()
        d, reply_d = await _start_stream(port)  # a's place
        await b.disconnect()  # without audio-stop: its place is freed too
        await d.disconnect()
        for _ in range(100):
            if server.n_streams == 0:
                break
            await asyncio.sleep(0.01)
        return reply_a, reply_b, reply_c, closed_c, reply_d, server.n_streams

    with caplog.at_level(logging.WARNING, logger="drsn_asr.runtime.server"):
        reply_a, reply_b, reply_c, closed_c, reply_d, left = _serve(loud, scenario, with_server=True, max_streams=2)
    assert Pong.is_type(reply_a.type) and Pong.is_type(reply_b.type) and Pong.is_type(reply_d.type)
    assert Error.is_type(reply_c.type)
    error = Error.from_event(reply_c)
    assert error.code == "overloaded" and "max_streams 2" in error.text and closed_c
    assert "refusing a new stream" in caplog.text and "at capacity" in caplog.text
    assert left == 0


def test_a_stream_is_refused_while_inference_is_behind_its_input(caplog):
    gated = _gated()

    async def scenario(port):
        async with AsyncTcpClient("127.0.0.1", port) as slow:
            await slow.write_event(Detect().event())
            await _send_audio(slow, _bursts([], total_s=1.0))
            while not Gated.entered.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.7)  # inference is now over LAG_LIMIT_S behind the slow client's audio
            other, reply = await _start_stream(port)
            Gated.gate.set()
            await other.disconnect()
            return reply, await _results(slow)

    try:
        with caplog.at_level(logging.WARNING, logger="drsn_asr.runtime.server"):
            reply, slow_result = _serve(gated, scenario)
    finally:
        Gated.gate.set()
    assert Error.is_type(reply.type) and Error.from_event(reply).code == "overloaded"
    assert "behind real time" in Error.from_event(reply).text and "behind real time" in caplog.text
    assert slow_result == []


class SlowPerWindow(LoudIsYes):
    """Inference that takes SECONDS a window, however many are batched: three real-time streams of it (20 windows a
    second each) need 2.1 s a second, two 1.4, one 0.7: a host too slow for the streams it admitted."""

    SECONDS = 0.035

    def forward(self, logmel):
        time.sleep(self.SECONDS * len(logmel))
        return super().forward(logmel)


async def _paced_transcribe(port, samples):
    """A microphone's client (the bench's: 100 ms chunks in real time, reading while it sends): ("transcript",
    text), or ("error", what the server said, with its code in parentheses)."""
    try:
        _, text = await _server_client(port, samples.tobytes(), 3200, 0.1, asyncio.get_running_loop().time())
        return "transcript", text
    except ConnectionError as e:
        return "error", str(e)


def test_a_server_that_falls_behind_ends_its_newest_streams_visibly_and_serves_the_rest(monkeypatch, caplog):
    """Three real-time clients on a server that can serve one: it does not fall further and further behind. Once
    inference has stayed over SHED_LAG_S behind without catching up, the newest streams get an `overloaded` error
    and are closed, the log says so, the oldest gets the transcript it would get alone, and for SHED_CAP_HOLD_S
    the server admits no more streams than it kept."""
    monkeypatch.setattr(server_module, "SHED_LAG_S", 0.3)
    monkeypatch.setattr(server_module, "SHED_AFTER_S", 0.3)
    monkeypatch.setattr(server_module, "SHED_PATIENCE_S", 2.0)  # the three scaled alike: a 6 s test, not minutes
    slow = LoadedModel(SlowPerWindow(ModelConfig(), FeatureConfig(), 4).eval(), ["yes", "no", "_unknown_", "_silence_"],
                       FeatureConfig(), {}, "slow")
    x = _bursts([0.5, 4.5], total_s=6.0, seed=1)
    alone = " ".join(d.label for d in drsn_asr.transcribe(x, model=slow))
    assert alone == "yes yes"

    async def scenario(port, server):
        clients = []
        for _ in range(3):  # started in order: the first is the oldest stream
            clients.append(asyncio.create_task(_paced_transcribe(port, x)))
            await asyncio.sleep(0.05)
        ended = [await c for c in clients[1:]]
        late, reply = await _start_stream(port)  # while the oldest streams on, and the cap holds
        await late.disconnect()
        got = [await clients[0], *ended]
        for _ in range(100):
            if server.n_streams == 0:
                break
            await asyncio.sleep(0.01)
        return got, reply, server.engine.n_shed, server.engine.shed[0], server.n_streams

    with caplog.at_level(logging.WARNING, logger="drsn_asr.runtime.server"):
        got, reply, n_shed, cap, left = _serve(slow, scenario, with_server=True)
    assert got[0] == ("transcript", alone), got
    for result in got[1:]:
        assert result[0] == "error" and "(overloaded)" in result[1] and "behind real time" in result[1], got
    assert n_shed == 2 and cap == 1 and left == 0
    assert "ending the newest" in caplog.text
    assert Error.is_type(reply.type)
    error = Error.from_event(reply)
    assert error.code == "overloaded" and "serves at most 1" in error.text
