"""Wyoming protocol server (Home Assistant, Rhasspy): the streaming Recognizer behind a TCP or Unix socket.

    drsn-asr serve --uri tcp://127.0.0.1:10400

One model is loaded once and shared; every connection gets its own Recognizer per audio stream, and each
stream's inference runs in a worker thread so that a slow client never stalls the event loop. Framing and
event types come from the `wyoming` package; this module only adds limits and the recognizer.

Flows (event types as the protocol names them):
    describe                                       → info (wake words = the model's commands; ASR program)
    detect [names] → audio-start → audio-chunk… → audio-stop
                                                   → detection {name: command, timestamp: ms} as each word is
                                                     recognized, then not-detected if there was none
    transcribe → audio-start → audio-chunk… → audio-stop
                                                   → transcript {text: "go stop"} (labels, space-separated)
    ping                                           → pong

Why commands are the wake words: Home Assistant sends `detect` with the wake word the user picked and drops
detections whose name differs, so each command is offered as a wake word of its own (`detect` with the
model's name instead of a command means "any command").

Audio may use any rate, width (1, 2, 3 or 4 byte signed little-endian PCM, as the protocol's own converter
reads them) and channel count; it is down-mixed here and resampled by the Recognizer. Anything malformed or
too large (a header that is not a JSON object, a payload over MAX_PAYLOAD_BYTES, audio outside a stream…)
is answered with an `error` event and the connection is closed; other connections are not affected.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.wake import Detect, Detection, NotDetected

from .audio import to_float32
from .checkpoint import LoadedModel, load_model
from .config import LABEL_SILENCE, LABEL_UNKNOWN
from .stream import Recognizer, detector_config

DEFAULT_URI = "tcp://127.0.0.1:10400"
PROGRAM = "drsn-asr"
LANGUAGES = ["en"]
MAX_HEADER_BYTES = 64 * 1024  # the JSON line of one event (asyncio's default stream limit)
MAX_DATA_BYTES = 64 * 1024  # the optional JSON data block after it
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # one audio chunk: 4 MiB is 2 min of 16 kHz 16-bit mono
SAMPLE_WIDTHS = (1, 2, 3, 4)
MAX_CHANNELS = 32
RATE_RANGE_HZ = (1000, 384000)
NEVER = 2.0  # a threshold no probability reaches: keywords a `detect` did not ask for
DEFAULT_WORKERS = 4
LINGER_S = 1.0  # after an error, how long to wait for the client to stop sending before closing

log = logging.getLogger(__name__)


class ProtocolError(Exception):
    """The client broke the protocol: answered with an `error` event, then the connection is closed."""

    def __init__(self, text: str, code: str = "bad-request"):
        super().__init__(text)
        self.text, self.code = text, code


def pcm_to_float32(audio: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved signed little-endian PCM bytes → float32 mono in [-1, 1] (channels averaged)."""
    if width not in SAMPLE_WIDTHS:
        raise ProtocolError(f"unsupported sample width {width} bytes; use one of {SAMPLE_WIDTHS}", "bad-audio")
    frame_bytes = width * channels
    if len(audio) % frame_bytes:
        raise ProtocolError(
            f"audio-chunk of {len(audio)} bytes is not a whole number of {frame_bytes}-byte frames "
            f"({channels} channel(s) × {width} byte(s))", "bad-audio")
    if width == 3:  # 24-bit: widen to int32 by putting the three bytes in the top of each word
        b = np.frombuffer(audio, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
    else:
        ints = np.frombuffer(audio, {1: "i1", 2: "<i2", 4: "<i4"}[width])
    samples = to_float32(ints, what="audio-chunk")
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32) if channels > 1 else samples


def _check_format(rate: Any, width: Any, channels: Any) -> None:
    for key, value in (("rate", rate), ("width", width), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"audio {key} must be an integer, got {value!r}", "bad-audio")
    if not RATE_RANGE_HZ[0] <= rate <= RATE_RANGE_HZ[1]:
        raise ProtocolError(f"audio rate {rate} Hz is outside {RATE_RANGE_HZ[0]}..{RATE_RANGE_HZ[1]}", "bad-audio")
    if width not in SAMPLE_WIDTHS:
        raise ProtocolError(f"unsupported sample width {width} bytes; use one of {SAMPLE_WIDTHS}", "bad-audio")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(f"audio channels must be 1..{MAX_CHANNELS}, got {channels}", "bad-audio")


class _CheckedReader:
    """Hands wyoming's event reader one header line at a time, after checking it against the limits.

    The framing stays wyoming's (`async_read_event`); this only refuses, before anything is read or allocated,
    header lines that are not JSON objects and declared data or payload lengths over the limits.
    """

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.last_line = b""

    async def readline(self) -> bytes:
        try:
            line = await self.reader.readline()
        except ValueError as e:  # asyncio's LimitOverrunError, re-raised by readline as ValueError
            raise ProtocolError(f"event header longer than {MAX_HEADER_BYTES} bytes", "too-large") from e
        self.last_line = line
        if not line:
            return line
        try:
            header = json.loads(line)
        except ValueError as e:
            raise ProtocolError(f"event header is not JSON: {e}", "bad-message") from e
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise ProtocolError("event header must be a JSON object with a string 'type'", "bad-message")
        if not isinstance(header.get("data", {}), dict):
            raise ProtocolError("event 'data' must be a JSON object", "bad-message")
        for key, limit in (("data_length", MAX_DATA_BYTES), ("payload_length", MAX_PAYLOAD_BYTES)):
            n = header.get(key)
            if n is None:
                continue
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ProtocolError(f"event {key} must be a non-negative integer, got {n!r}", "bad-message")
            if n > limit:
                raise ProtocolError(f"event {key} {n} is over the limit of {limit} bytes", "too-large")
        return line

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)


class KeywordServer:
    """Serves one loaded model over the Wyoming protocol.

    Args:
        model: shipped model name, checkpoint path, LoadedModel, or None for the default model (loaded once).
        device: "cpu", "cuda" or None (CUDA when available).
        max_workers: threads running inference for all connections (each connection uses one at a time).
        **detector_options: fields of DetectorConfig (threshold, thresholds, hop_ms, ...) for every stream.
    """

    def __init__(self, model: str | os.PathLike | LoadedModel | None = None, device: str | None = None,
                 max_workers: int = DEFAULT_WORKERS, **detector_options: Any):
        self.model = load_model(model, device=device)
        self.detector_options = dict(detector_options)
        Recognizer(self.model, **self.detector_options)  # bad options fail here, not per connection
        self.keywords = [label for label in self.model.labels if label not in (LABEL_UNKNOWN, LABEL_SILENCE)]
        self.name = Path(self.model.source).stem if self.model.source.endswith(".pt") else self.model.source
        self.info = self._describe()
        self.max_workers = max_workers
        self.executor: ThreadPoolExecutor | None = None  # made by start(), shut down by stop()
        self._server: AsyncServer | None = None

    def _describe(self) -> Info:
        try:
            version = importlib.metadata.version("drsn-asr")
        except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "unknown"
        attribution = Attribution(name=PROGRAM, url="")
        note = self.model.training.get("note")
        about = (f"{self.name}: {self.model.net.config.block} network, {len(self.keywords)} commands"
                 + (f" ({note})" if note else ""))
        wake = WakeProgram(
            name=PROGRAM, attribution=attribution, installed=True, version=version,
            description=f"Command recognizer; each command is a wake word. Model {about}",
            models=[WakeModel(name=k, phrase=k, languages=LANGUAGES, attribution=attribution, installed=True,
                              description=k, version=version)
                    for k in self.keywords],
        )
        asr = AsrProgram(
            name=PROGRAM, attribution=attribution, installed=True, version=version,
            description="Command recognizer: the transcript is the recognized commands, space-separated",
            models=[AsrModel(name=self.name, languages=LANGUAGES, attribution=attribution, installed=True,
                             description=about, version=version)],
        )
        return Info(wake=[wake], asr=[asr])

    def recognizer(self, sample_rate: int, names: list[str] | None) -> Recognizer:
        """A fresh Recognizer for one stream; keywords outside `names` (when given) never fire."""
        options = dict(self.detector_options)
        if names is not None:
            base = detector_config(self.model, **self.detector_options).thresholds
            options["thresholds"] = {**base, **{k: NEVER for k in self.keywords if k not in names}}
        return Recognizer(self.model, sample_rate=sample_rate, **options)

    async def start(self, uri: str = DEFAULT_URI) -> None:
        """Bind and start accepting connections (tcp://HOST:PORT, port 0 = any free port; or unix://PATH)."""
        parsed = urlparse(uri)
        if parsed.scheme not in ("tcp", "unix"):
            raise ValueError(f"--uri {uri!r}: use tcp://HOST:PORT (e.g. {DEFAULT_URI}) or unix://PATH")
        if parsed.scheme == "tcp" and parsed.hostname is not None and not _is_loopback(parsed.hostname):
            log.warning("listening on %s: anyone who can reach it can stream audio to this server", parsed.hostname)
        server = AsyncServer.from_uri(uri)
        self.executor = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="drsn-asr-infer")
        try:
            await server.start(lambda reader, writer: _Handler(self, reader, writer))
        except BaseException:
            self.executor.shutdown(wait=False)
            raise
        self._server = server

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) actually bound, for TCP (after start); None otherwise."""
        listener = getattr(self._server, "_server", None)  # wyoming's AsyncTcpServer keeps asyncio's server here
        sockets = getattr(listener, "sockets", None)
        if not sockets or sockets[0].family not in (socket.AF_INET, socket.AF_INET6):
            return None
        host, port = sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        """Stop accepting, close every connection and the worker threads."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(AsyncEventHandler):
    """One connection: its own stream state, the server's model and workers."""

    def __init__(self, server: KeywordServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.server = server
        self._checked = _CheckedReader(reader)
        self._mode: str | None = None  # "wake" or "asr" once detect/transcribe has been received
        self._names: list[str] | None = None
        self._recognizer: Recognizer | None = None
        self._format: tuple[int, int, int] | None = None  # (rate, width, channels) of the stream
        self._start_ms = 0
        self._labels: list[str] = []

    async def run(self) -> None:
        """Read events (wyoming's framing, checked limits) until EOF, an error, or handle_event says stop."""
        try:
            while True:
                try:
                    event = await self._read()
                    if event is None or not await self.handle_event(event):
                        break
                except ProtocolError as e:
                    log.info("closing a connection: %s", e.text)
                    await self.write_event(Error(text=e.text, code=e.code).event())
                    await self._drain_input()
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # a bug or a model failure ends this connection only
            log.exception("connection failed")
            try:
                await self.write_event(Error(text=f"internal error: {e}", code="internal").event())
            except Exception:
                pass
        finally:
            self.writer.close()

    async def _read(self) -> Event | None:
        """The next event, or None at end of input; ProtocolError for anything malformed."""
        try:
            event = await async_read_event(self._checked)
        except (TypeError, AttributeError) as e:  # wyoming merging a data block that is not an object
            raise ProtocolError("event data block is not a JSON object", "bad-message") from e
        if event is None and self._checked.last_line:  # wyoming's answer to a data block that is not JSON
            raise ProtocolError("event data block is not JSON", "bad-message")
        return event

    async def _drain_input(self) -> None:
        """Half-close, then discard what the client still sends for a moment: closing a socket with unread
        input makes the kernel reset the connection, which can destroy the error event before it is read."""
        if self.writer.can_write_eof():
            self.writer.write_eof()

        async def discard() -> None:
            while await self.reader.read(1 << 16):
                pass

        try:
            await asyncio.wait_for(discard(), LINGER_S)
        except (asyncio.TimeoutError, ConnectionError):
            pass

    async def _in_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.server.executor, fn, *args)

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.server.info.event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Detect.is_type(event.type):
            self._begin("wake", self._check_names(event.data.get("names")))
        elif Transcribe.is_type(event.type):
            self._begin("asr", None)
        elif AudioStart.is_type(event.type):
            await self._audio_start(event)
        elif AudioChunk.is_type(event.type):
            await self._audio_chunk(event)
        elif AudioStop.is_type(event.type):
            await self._audio_stop()
        else:
            log.debug("ignoring event %r", event.type)
        return True

    def _begin(self, mode: str | None, names: list[str] | None) -> None:
        self._mode, self._names = mode, names
        self._recognizer, self._format = None, None

    def _check_names(self, names: Any) -> list[str] | None:
        if names is None:
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError(f"detect 'names' must be a list of strings, got {names!r}", "bad-message")
        if self.server.name in names:
            return None  # the model's name: any command
        unknown = sorted(set(names) - set(self.server.keywords))
        if unknown:
            raise ProtocolError(f"unknown wake word(s) {unknown}; available: {', '.join(self.server.keywords)} "
                                f"(or {self.server.name!r} for any)", "unknown-name")
        return names

    async def _audio_start(self, event: Event) -> None:
        data = event.data
        rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
        _check_format(rate, width, channels)
        if self._mode is None:
            self._begin("wake", None)  # audio without detect: listen for every command
        self._format = (rate, width, channels)
        timestamp = data.get("timestamp")
        self._start_ms = timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else 0
        self._labels = []
        self._recognizer = await self._in_worker(self.server.recognizer, rate, self._names)

    async def _audio_chunk(self, event: Event) -> None:
        if self._recognizer is None:
            raise ProtocolError("audio-chunk before audio-start", "bad-order")
        data = event.data
        fmt = (data.get("rate"), data.get("width"), data.get("channels"))
        if fmt != self._format:
            raise ProtocolError(f"audio-chunk format (rate, width, channels) {fmt} differs from audio-start's "
                                f"{self._format}", "bad-audio")
        samples = pcm_to_float32(event.payload or b"", self._format[1], self._format[2])
        await self._send(await self._in_worker(self._recognizer.feed, samples))

    async def _audio_stop(self) -> None:
        if self._recognizer is None:
            raise ProtocolError("audio-stop before audio-start", "bad-order")
        await self._send(await self._in_worker(self._recognizer.flush))
        if self._mode == "asr":
            await self.write_event(Transcript(text=" ".join(self._labels), language=LANGUAGES[0]).event())
        elif not self._labels:
            await self.write_event(NotDetected().event())
        self._begin(None, None)

    async def _send(self, detections: list) -> None:
        for d in detections:
            self._labels.append(d.label)
            if self._mode == "wake":
                timestamp = self._start_ms + round(d.end_s * 1000)
                await self.write_event(Detection(name=d.label, timestamp=timestamp).event())
