"""Wyoming protocol server (Home Assistant, Rhasspy): the streaming Recognizer behind a TCP or Unix socket.

    drsn-asr serve --uri tcp://127.0.0.1:10400

One model is loaded once; every connection's audio stream is one row of a single `MultiStreamRecognizer`,
advanced by one inference thread (`StreamEngine`): what all connections sent since its last pass goes through
one batched step, so the windows of hundreds of streams share each forward pass, and the event loop only
parses and answers. A connection reads on while its chunks wait for their step. Each stream's decisions are
exactly those of a `Recognizer` fed its audio alone.

Overload is refused, not absorbed: a stream beyond `max_streams`, or one that starts while inference is more
than LAG_LIMIT_S behind its input, gets an `error` event (code "overloaded") and the connection is closed, and
the log says why. Streams already running go on while the server keeps up; when it does not (a host slower than
`max_streams` assumed, other work on its cores) and inference stays over SHED_LAG_S behind without catching up,
the newest streams are ended the same way, as many as the rest need to catch up within SHED_CATCH_UP_S, and for
SHED_CAP_HOLD_S no more streams are admitted than were kept. Framing and event types come from the `wyoming`
package.

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
import ipaddress
import itertools
import json
import logging
import os
import socket
import threading
import time
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

from .. import __version__
from .audio import to_float32
from .checkpoint import LoadedModel, load_model
from .config import LABEL_SILENCE, LABEL_UNKNOWN
from .inference import DEFAULT_THREADS, available_cores, check_threads
from .multistream import MultiStreamRecognizer
from .stream import Recognizer, check_chunk

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
LINGER_S = 1.0  # after an error, how long to wait for the client to stop sending before closing
LAG_LIMIT_S = 0.5  # inference this far behind its input refuses new streams
LAG_WARNING_EVERY_S = 10.0
# Inference this far behind its input at the start of its passes for SHED_AFTER_S, and not on course to be back under it
# within SHED_PATIENCE_S (at the pace the lag fell since it went over), ends the newest streams: as many as would let
# the rest catch up within SHED_CATCH_UP_S at the pace the thread served audio meanwhile, at least SHED_FRACTION of them
# and at least one, at most half (`_watch_lag`). The margin over LAG_LIMIT_S lets a burst that clears (streams starting
# or ending together, a pause of the host) cut nobody; the course keeps the backlog from before a shed, which the
# streams left drain, from cutting more, and its patience beyond SHED_CATCH_UP_S the noise of the lag's fall.
# SHED_AFTER_S outlasts the burst of hundreds of streams starting at once (their first frames cost most), from which a
# 2-core host went 1.7 s behind and caught up within 5 s. Measured: 256 clients on a 2-core host that served 176 in real
# time ran 3-4.5 s behind for as long as they streamed, with nothing in the log (docs/performance.md).
SHED_LAG_S = 1.0
SHED_AFTER_S = 5.0
SHED_CATCH_UP_S = 10.0
SHED_PATIENCE_S = 30.0
SHED_FRACTION = 0.125
SHED_CAP_HOLD_S = 60.0  # after a shed, streams are admitted only up to those left, for this long
# Windows per step of the server's streams on the CPU (the library's default, 256, bounds a GPU's activations):
# the half window of silence that ends each stream (`flush`) is then one step for hundreds of streams ending
# together instead of one per hop; 213 streams flushed in 177-192 ms instead of 272-284 (2 threads, 2-core host)
SERVER_BATCH_WINDOWS_CPU = 4096
MAX_CHUNKS_IN_FLIGHT = 64  # a connection's audio chunks in the engine, unanswered (6.4 s of 100 ms chunks)
# Concurrent real-time streams one server serves with p99 end-of-audio → transcript under 0.5 s, by frontend, a little
# under what `drsn-asr bench` measured on 2-core hosts with both cores for steps of many streams (2026-12-06, an Intel
# Xeon: 480 log-mel, where single tries of 416 read p99 0.35 and 0.47 s and of 448 0.36 and 1.02 s, with its batch norms
# as depthwise convs; 320 and 352 embedding with the streamed CNN on ONNX Runtime; 2026-12-07, `default` with chunks
# pipelined: 288, 320, 288 and 288 on a host running slower; at its 160 ms hop 288, 256 and 352 in three runs on an AMD
# EPYC without AVX-512, the lowest kept, and 512-704 on one with it; a host's speed drifts by 15-60%; on 2026-12-08 such
# a host served 176 and 208, where the lowest would refuse two thirds of what the faster host serves, so 256 stays and a
# server that falls behind sheds streams (SHED_LAG_S); docs/performance.md); `--max-streams` overrides it. The fused
# frontend does not stream its CNN: it keeps the old embedding figure (44).
DEFAULT_MAX_STREAMS = {"logmel": 384, "speech_embedding": 256, "embedding_logmel": 40}

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


class Overloaded(ProtocolError):
    """More than the server can serve in real time: answered with an `error` event, logged, and closed."""

    def __init__(self, text: str):
        super().__init__(text, "overloaded")


class StreamEngine:
    """Every connection's stream as one row of one MultiStreamRecognizer, advanced by one inference thread.

    Connections `submit` operations ("start", "audio", "stop", "drop") and await their results; the thread takes
    everything submitted since its last pass as one batch: the starts, then one `feed` of all the audio (one
    forward pass for every due window of every stream; a stream's several chunks joined in order), then the stops
    (one `flush`), then the drops. A connection submits a stream's start before its chunks, and its stop or drop
    after them, so its own order holds without waiting for each chunk's answer. `lag_s` is how long the oldest
    operation of the latest batch waited for the thread; `backlog_s()` how long the oldest unanswered one has
    waited so far: above LAG_LIMIT_S the server refuses new streams. A pass that starts more than LAG_LIMIT_S
    behind is logged; behind by more than SHED_LAG_S for SHED_AFTER_S without catching up, the thread ends the
    newest streams (`_shed`): their operations fail with Overloaded from then on, and `shed` says how many it kept.
    """

    def __init__(self, model: LoadedModel, threads: int | None, batch_threads: int | None = None,
                 **detector_options: Any):
        self.recognizer = MultiStreamRecognizer(
            model, threads=threads, batch_threads=batch_threads, **detector_options,
            max_batch_windows=SERVER_BATCH_WINDOWS_CPU if model.device.type == "cpu" else None)
        self.lag_s = 0.0
        self.n_batches = 0
        self.n_shed = 0  # streams ended because inference fell behind
        self.shed: tuple[int, float] | None = None  # (streams kept, when: monotonic s) at the last shed
        self._shed: dict[int, str] = {}  # stream → why it was ended, until its connection drops it
        self._behind: tuple[float, float] | None = None  # (when, lag) of the first pass of a run over SHED_LAG_S
        self._behind_busy_s = 0.0  # the thread's time in that run's passes, and the seconds of audio they served
        self._behind_audio_s = 0.0
        self._rates: dict[int, int] = {}  # stream → its sample rate
        self._last_lag_warning = -LAG_WARNING_EVERY_S
        self._ops: list[tuple[str, int, Any, asyncio.Future, float]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._running_since: float | None = None  # submit time of the oldest operation of the batch being run
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="drsn-asr-inference", daemon=True)
        self._thread.start()

    def backlog_s(self) -> float:
        """How far behind its input the thread is now: the age of the oldest operation not yet answered (in the
        batch being run, or still queued); 0 when idle."""
        with self._wake:
            oldest = self._running_since if self._running_since is not None else (self._ops[0][4] if self._ops else None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def new_stream_id(self) -> int:
        return next(self._ids)

    def submit(self, kind: str, stream: int, payload: Any = None) -> asyncio.Future:
        """Queue an operation; the future resolves, on the calling event loop, to its detections (or None)."""
        future = asyncio.get_running_loop().create_future()
        with self._wake:
            if self._stopping:
                raise ConnectionError("the server is stopping")
            self._ops.append((kind, stream, payload, future, time.monotonic()))
            self._wake.notify()
        return future

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._ops and not self._stopping:
                    self._wake.wait()
                batch, self._ops = self._ops, []
                if self._stopping:
                    _settle_all([(op[3], ConnectionError("the server is stopping")) for op in batch])
                    return
                self._running_since = min(op[4] for op in batch)
            now = time.monotonic()
            self.lag_s = now - self._running_since
            self.n_batches += 1
            try:
                self._watch_lag(batch, now)
                batch = self._settle_shed(batch)
                results = self._apply(batch)
            except Exception as e:  # a bug must not end the thread that every connection waits on
                log.exception("an inference step failed")
                results = [e] * len(batch)
            if self._behind is not None:
                self._behind_busy_s += time.monotonic() - now
            with self._wake:
                self._running_since = None
            _settle_all([(op[3], result) for op, result in zip(batch, results)])

    def _watch_lag(self, batch: list[tuple[str, int, Any, asyncio.Future, float]], now: float) -> None:
        """Log a pass that starts behind; end the newest streams when it has stayed far behind (class docstring)."""
        lag = self.lag_s
        if lag > LAG_LIMIT_S and now - self._last_lag_warning >= LAG_WARNING_EVERY_S:
            log.warning("inference is %.2f s behind real time with %d streams", lag, len(self.recognizer))
            self._last_lag_warning = now
        if lag <= SHED_LAG_S:
            self._behind = None
            return
        if self._behind is None:
            self._behind, self._behind_busy_s, self._behind_audio_s = (now, lag), 0.0, 0.0
        since, lag_then = self._behind
        catching_up_s_per_s = (lag_then - lag) / max(now - since, 1e-3)  # over the whole run: a pass's lag is noisy
        if now - since < SHED_AFTER_S or (catching_up_s_per_s > 0
                                          and (lag - SHED_LAG_S) / catching_up_s_per_s < SHED_PATIENCE_S):
            return  # not for long enough, or on course to catch up
        starting = {stream for kind, stream, *_ in batch if kind == "start"}
        stopping = {stream for kind, stream, *_ in batch if kind == "stop"}  # nearly done: ending them saves little
        candidates = sorted((set(self.recognizer.streams) | starting) - stopping - set(self._shed))
        if not candidates:
            return
        # Keep as many as the thread served in real time since it fell behind (seconds of their audio a second),
        # less what the backlog of `lag` s needs to be served within SHED_CATCH_UP_S beside the new audio: a
        # host's pace, not a model's, since the host's speed drifts and other programs share its cores.
        n = len(candidates)
        served = self._behind_audio_s / self._behind_busy_s if self._behind_busy_s > 0 else n
        keep = int(served * SHED_CATCH_UP_S / (lag + SHED_CATCH_UP_S))
        newest = candidates[-max(1, min(n // 2, max(n - keep, int(n * SHED_FRACTION)))):]
        why = (f"the server fell {lag:.1f} s behind real time with {n} streams and ended the newest "
               f"{len(newest)} to keep the others in real time; try again later, or run more servers")
        for stream in newest:
            self._shed[stream] = why
            self._rates.pop(stream, None)
            if stream in self.recognizer:
                self.recognizer.remove_stream(stream)
        self.n_shed += len(newest)
        kept = n - len(newest)
        self.shed = (max(1, kept), now)  # (one stream is always let in: served late, it is still served)
        self._behind = None
        log.warning("inference is %.1f s behind real time with %d streams, for %.1f s without catching up (at the "
                    "pace of %.0f real-time streams): ending the newest %d (%d ended so far); admitting at most %d "
                    "streams for %.0f s", lag, n, now - since, served, len(newest), self.n_shed, self.shed[0],
                    SHED_CAP_HOLD_S)

    def _settle_shed(self, batch: list[tuple[str, int, Any, asyncio.Future, float]]
                     ) -> list[tuple[str, int, Any, asyncio.Future, float]]:
        """Answer the operations of streams `_watch_lag` ended (Overloaded; a drop forgets the stream) at once,
        not after the pass: their clients hear it while the others' step runs. Returns the other operations."""
        if not self._shed:
            return batch
        kept, settled = [], []
        for op in batch:
            kind, stream, _, future, _ = op
            if stream not in self._shed:
                kept.append(op)
            elif kind == "drop":
                settled.append((future, None))
                del self._shed[stream]
            else:
                settled.append((future, Overloaded(self._shed[stream])))
        _settle_all(settled)
        return kept

    def _apply(self, batch: list[tuple[str, int, Any, asyncio.Future, float]]) -> list[Any]:
        rec = self.recognizer
        results: list[Any] = [None] * len(batch)
        audio: dict[int, list[np.ndarray]] = {}
        at: dict[int, list[int]] = {}
        stops: list[tuple[int, int]] = []
        drops: list[int] = []
        for i, (kind, stream, payload, _, _) in enumerate(batch):
            try:
                if kind == "start":
                    rate, thresholds = payload
                    rec.add_stream(stream, sample_rate=rate, thresholds=thresholds)
                    self._rates[stream] = rate
                elif kind == "audio":
                    if stream not in rec:  # its start failed: one stream must not fail the others' step
                        raise ValueError(f"no stream {stream}")
                    audio.setdefault(stream, []).append(check_chunk(payload, what="audio-chunk"))
                    at.setdefault(stream, []).append(i)
                elif kind == "stop":
                    if stream not in rec:
                        raise ValueError(f"no stream {stream}")
                    stops.append((i, stream))
                else:  # "drop": the connection went away mid-stream (after its chunks of this batch, if any)
                    drops.append(stream)
            except Exception as e:  # this operation fails; the batch goes on
                results[i] = e
        if audio:
            try:
                # a connection does not wait for one chunk's answer before sending the next, so a batch may hold
                # several of one stream: they go in as one, in order, and its detections answer the last
                blocks = {stream: parts[0] if len(parts) == 1 else np.concatenate(parts)
                          for stream, parts in audio.items()}
                found = rec.feed(blocks)
                if self._behind is not None:
                    self._behind_audio_s += sum(len(x) / self._rates[stream] for stream, x in blocks.items())
                for stream, indices in at.items():
                    for i in indices:
                        results[i] = []
                    results[indices[-1]] = found.get(stream, [])
            except Exception as e:  # a model failure fails every stream of the step
                log.exception("inference failed for %d streams", len(audio))
                for indices in at.values():
                    for i in indices:
                        results[i] = e
        if stops:
            try:
                found = rec.flush([stream for _, stream in stops])
                for i, stream in stops:
                    results[i] = found.get(stream, [])
            except Exception as e:
                for i, _ in stops:
                    results[i] = e
            for _, stream in stops:
                rec.remove_stream(stream)
                self._rates.pop(stream, None)
        for stream in drops:
            if stream in rec:
                rec.remove_stream(stream)
            self._rates.pop(stream, None)
        return results


def _settle_all(settled: list[tuple[asyncio.Future, Any]]) -> None:
    """Resolve futures, each to its result (an exception is raised in its awaiter), from the inference thread: one
    call into each event loop for all of them (one per future woke the loop thousands of times a second)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for future, result in settled:
        by_loop.setdefault(future.get_loop(), []).append((future, result))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_results, pairs)
        except RuntimeError:  # its loop has closed: nobody is waiting
            pass


def _set_results(pairs: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in pairs:
        if future.done():  # the connection was cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
            future.exception()  # logged where it arose; a connection that has ended never awaits the rest of its chunks
        else:
            future.set_result(result)


class KeywordServer:
    """Serves one loaded model over the Wyoming protocol.

    Args:
        model: shipped model name, checkpoint path, LoadedModel, or None for the default model (loaded once).
        device: "cpu", "cuda" or None (CUDA when available).
        max_streams: concurrent audio streams served; one more is refused with an `error` event (code
            "overloaded"). Default: DEFAULT_MAX_STREAMS for the model's frontend, measured on a 2-core host.
        threads: intra-op threads of the inference thread (default 1; None: torch's setting).
        batch_threads: ONNX Runtime's intra-op threads for steps of many streams (32 or more at once; see
            `multistream.MultiStreamRecognizer`). Default: the cores this process may run on, as a server that
            owns its host would want; a step of a few streams keeps `threads`.
        **detector_options: fields of DetectorConfig (threshold, thresholds, hop_ms, ...) for every stream.
    """

    def __init__(self, model: str | os.PathLike | LoadedModel | None = None, device: str | None = None,
                 max_streams: int | None = None, threads: int | None = DEFAULT_THREADS,
                 batch_threads: int | None = None, **detector_options: Any):
        self.model = load_model(model, device=device)
        self.detector_options = dict(detector_options)
        Recognizer(self.model, threads=threads, **self.detector_options)  # bad options fail here, not per stream
        if max_streams is None:
            max_streams = DEFAULT_MAX_STREAMS.get(self.model.features.kind, 40)
        if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 1:
            raise ValueError(f"max_streams must be a positive int, got {max_streams!r}")
        self.max_streams = max_streams
        self.threads = threads
        self.batch_threads = check_threads(batch_threads) or available_cores()
        self.keywords = [label for label in self.model.labels if label not in (LABEL_UNKNOWN, LABEL_SILENCE)]
        self.name = Path(self.model.source).stem if self.model.source.endswith(".pt") else self.model.source
        self.info = self._describe()
        self.engine: StreamEngine | None = None  # made by start(), stopped by stop()
        self.n_streams = 0  # streams admitted and not yet ended
        self.n_refused = 0
        self._last_warning = -LAG_WARNING_EVERY_S
        self._server: AsyncServer | None = None

    def _describe(self) -> Info:
        version = __version__
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

    def admit(self) -> None:
        """Count in one more stream, or raise Overloaded (logged) when it cannot be served in real time."""
        engine = self.engine
        why = None
        if self.n_streams >= self.max_streams:
            why = f"server at capacity: {self.n_streams} streams (max_streams {self.max_streams})"
        elif (engine is not None and (shed := engine.shed) is not None and self.n_streams >= shed[0]
              and (ago_s := time.monotonic() - shed[1]) < SHED_CAP_HOLD_S):
            why = (f"server at capacity: {self.n_streams} streams (it fell behind real time {ago_s:.0f} s ago and "
                   f"serves at most {shed[0]} until {SHED_CAP_HOLD_S:.0f} s after that)")
        elif engine is not None and (lag_s := engine.backlog_s()) > LAG_LIMIT_S:
            why = f"inference is {lag_s:.2f} s behind real time with {self.n_streams} streams (limit {LAG_LIMIT_S} s)"
        if why is None:
            self.n_streams += 1
            return
        self.n_refused += 1
        now = time.monotonic()
        if now - self._last_warning >= LAG_WARNING_EVERY_S or self.n_refused == 1:
            log.warning("refusing a new stream (%d refused so far): %s", self.n_refused, why)
            self._last_warning = now
        raise Overloaded(f"{why}; try again later, or run more servers (a larger --max-streams only helps on a "
                         "faster host)")

    def release(self) -> None:
        self.n_streams -= 1

    def thresholds(self, names: list[str] | None) -> dict[str, float] | None:
        """A stream's own thresholds: keywords outside `names` (when given) never fire."""
        if names is None:
            return None
        return {k: NEVER for k in self.keywords if k not in names}

    async def start(self, uri: str = DEFAULT_URI) -> None:
        """Bind and start accepting connections (tcp://HOST:PORT, port 0 = any free port; or unix://PATH)."""
        parsed = urlparse(uri)
        if parsed.scheme not in ("tcp", "unix"):
            raise ValueError(f"--uri {uri!r}: use tcp://HOST:PORT (e.g. {DEFAULT_URI}) or unix://PATH")
        if parsed.scheme == "tcp" and parsed.hostname is not None and not _is_loopback(parsed.hostname):
            log.warning("listening on %s: anyone who can reach it can stream audio to this server", parsed.hostname)
        server = AsyncServer.from_uri(uri)
        self.engine = StreamEngine(self.model, self.threads, self.batch_threads, **self.detector_options)
        try:
            await server.start(lambda reader, writer: _Handler(self, reader, writer))
        except BaseException:
            self.engine.stop()
            self.engine = None
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
        """Stop accepting, close every connection and the inference thread."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)


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
        self._stream: int | None = None  # this connection's stream in the server's engine, once audio started
        self._format: tuple[int, int, int] | None = None  # (rate, width, channels) of the stream
        self._start_ms = 0
        self._labels: list[str] = []
        # Chunks go to the engine without waiting for the one before: a connection that waited for each answer
        # could send one chunk per engine pass, which falls behind real time once passes take longer than a
        # chunk lasts. `_answer` sends their detections in order as they come; past MAX_CHUNKS_IN_FLIGHT
        # unanswered chunks the connection reads no more (TCP holds the client back).
        self._answers: asyncio.Queue[tuple[int, asyncio.Future]] = asyncio.Queue(MAX_CHUNKS_IN_FLIGHT)
        self._answering: asyncio.Task | None = None
        self._failure: BaseException | None = None  # a chunk's, raised at the connection's next audio event

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
                await self._drain_input()
            except Exception:
                pass
        finally:
            if self._answering is not None:
                self._answering.cancel()
            self._end_stream(drop=True)
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

    def _submit(self, kind: str, payload: Any = None) -> asyncio.Future:
        engine = self.server.engine
        if engine is None:
            raise ConnectionError("the server is stopping")
        return engine.submit(kind, self._stream, payload)

    async def _answer(self) -> None:
        """Send each submitted chunk's detections, in order, once its step is done (while the reader goes on)."""
        while True:
            stream, future = await self._answers.get()
            try:
                detections = await future
                if self._failure is None and stream == self._stream:  # (not a stream abandoned meanwhile)
                    await self._send(detections)
            except Exception as e:
                if self._failure is None:
                    self._failure = e
            finally:
                self._answers.task_done()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _end_stream(self, drop: bool) -> None:
        """Forget this connection's stream (with `drop`, also in the engine: no audio-stop came)."""
        if self._stream is None:
            return
        if drop and self.server.engine is not None:
            try:
                self.server.engine.submit("drop", self._stream)
            except (ConnectionError, RuntimeError):
                pass
        self._stream = None
        self.server.release()

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
        self._end_stream(drop=True)  # a new detect/transcribe mid-stream abandons that stream
        self._mode, self._names = mode, names
        self._format = None

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
        self._end_stream(drop=True)  # audio-start again without audio-stop: the earlier stream is abandoned
        self.server.admit()
        self._stream = self.server.engine.new_stream_id()
        await self._submit("start", (rate, self.server.thresholds(self._names)))

    async def _audio_chunk(self, event: Event) -> None:
        if self._stream is None:
            raise ProtocolError("audio-chunk before audio-start", "bad-order")
        self._raise_failure()
        data = event.data
        fmt = (data.get("rate"), data.get("width"), data.get("channels"))
        if fmt != self._format:
            raise ProtocolError(f"audio-chunk format (rate, width, channels) {fmt} differs from audio-start's "
                                f"{self._format}", "bad-audio")
        samples = pcm_to_float32(event.payload or b"", self._format[1], self._format[2])
        if samples.size:
            if self._answering is None:
                self._answering = asyncio.create_task(self._answer())
            await self._answers.put((self._stream, self._submit("audio", samples)))

    async def _audio_stop(self) -> None:
        if self._stream is None:
            raise ProtocolError("audio-stop before audio-start", "bad-order")
        stopped = self._submit("stop")
        try:
            await self._answers.join()  # every chunk's detections go out before the stop's
            self._raise_failure()
        except BaseException:
            stopped.cancel()  # (unread: the engine's answer to it is dropped)
            raise
        detections = await stopped
        self._end_stream(drop=False)
        await self._send(detections)
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
