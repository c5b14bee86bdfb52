"""Live capture: a PortAudio input stream feeding a Recognizer on a worker thread.

    with drsn_asr.listen(print, device="USB") as mic:   # prints each Detection as it happens
        time.sleep(60)
    print(mic.n_overflows, mic.n_dropped_blocks)

The audio callback runs on PortAudio's real-time thread, so it only copies the block into a bounded queue
(a full queue drops the block and counts it: stalling the audio thread would lose audio anyway, and
silently). A worker thread down-mixes, meters and feeds the Recognizer; detections reach `on_detection`
there. Overflows and drops are counted, logged (at most every WARN_INTERVAL_S) and sent to `on_event`.

Capture ends on its own, with `error` set, when the device goes away: PortAudio finishes the stream (an
unplugged device, a killed audio server), or no audio arrives for `stall_timeout_s` (a hung one). PortAudio
itself can block for tens of seconds closing a hung stream, so closing runs on a helper thread and
`stop()` returns after at most CLOSE_TIMEOUT_S + JOIN_TIMEOUT_S whatever the device does.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

try:
    import sounddevice as sd
except OSError as e:  # sounddevice raises OSError when the PortAudio shared library is missing
    raise ImportError(
        f"live capture needs the PortAudio library ({e}); install it, e.g. apt-get install libportaudio2"
    ) from e

from .checkpoint import LoadedModel, load_model
from .stream import Detection, Recognizer

log = logging.getLogger(__name__)

LEVEL_FLOOR_DB = -100.0  # level_db of digital silence (and before the first block)
POLL_S = 0.05  # how often an idle worker checks for stop requests and a dead stream
WARN_INTERVAL_S = 5.0  # at most one overflow/drop warning per interval (the counters stay exact)
DRAIN_TIMEOUT_S = 0.5  # on stop, time allowed to recognize blocks already captured
CLOSE_TIMEOUT_S = 1.0  # PortAudio may block ~30 s closing a stream whose device hung; don't wait for it
JOIN_TIMEOUT_S = 2.0  # on stop, time allowed for the worker (and a slow on_detection) to finish
INACTIVE_GRACE_S = 0.5  # a stream PortAudio reports inactive, with no audio for this long, has ended


class InputDevice(NamedTuple):
    index: int
    name: str
    max_input_channels: int
    default_samplerate: float


class CaptureError(RuntimeError):
    """The input device could not be opened, or stopped delivering audio (unplugged, server gone, hung)."""


def list_input_devices() -> list[InputDevice]:
    """The PortAudio devices that can record, as (index, name, max_input_channels, default_samplerate)."""
    return [
        InputDevice(i, d["name"], int(d["max_input_channels"]), float(d["default_samplerate"]))
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


def _device_list(devices: list[InputDevice]) -> str:
    return "; ".join(f"{d.index}: {d.name}" for d in devices) or "none (is a microphone connected?)"


def find_input_device(device: int | str | None = None) -> InputDevice:
    """Resolve None (the default input), an index, or a case-insensitive name substring to an input device.

    An exact name wins over substrings; when a substring matches several devices the first (lowest index)
    is used and a warning names it and the others. Raises ValueError listing the input devices otherwise.
    """
    devices = list_input_devices()
    if device is None:
        try:
            index = int(sd.query_devices(kind="input")["index"])
        except (sd.PortAudioError, ValueError):
            index = -1
        for d in devices:
            if d.index == index:
                return d
        raise ValueError(f"no default input device; pick one with device=INDEX or NAME from: {_device_list(devices)}")
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool):
        for d in devices:
            if d.index == device:
                return d
        raise ValueError(f"device {device} is not an input device; input devices are {_device_list(devices)}")
    if not isinstance(device, str):
        raise ValueError(f"device must be None, an index or a name substring, got {type(device).__name__}")
    wanted = device.casefold()
    exact = [d for d in devices if d.name.casefold() == wanted]
    matches = exact or [d for d in devices if wanted in d.name.casefold()]
    if not matches:
        raise ValueError(f"no input device name contains {device!r}; input devices are {_device_list(devices)}")
    if len(matches) > 1:
        log.warning("device %r matches %d input devices (%s); using %d: %s",
                    device, len(matches), _device_list(matches), matches[0].index, matches[0].name)
    return matches[0]


def _stream_settings(d: InputDevice, sample_rate: int | None, model_rate: int) -> tuple[int, int]:
    """(rate, channels) PortAudio accepts: the model's rate if possible, else the device's; mono if possible."""
    rates = [sample_rate] if sample_rate is not None else [model_rate, round(d.default_samplerate)]
    channels = [1, 2, d.max_input_channels]
    errors = []
    for rate in dict.fromkeys(rates):
        for n in dict.fromkeys(c for c in channels if c <= d.max_input_channels):
            try:
                sd.check_input_settings(device=d.index, samplerate=rate, channels=n, dtype="float32")
                return rate, n
            except (sd.PortAudioError, ValueError) as e:
                errors.append(f"{rate} Hz × {n} ch: {e}")
    raise ValueError(f"input device {d.index} ({d.name}) refuses every setting tried: {'; '.join(errors)}")


class Listener:
    """Capture from an input device into a Recognizer until stopped or the device fails.

    Counters (read them from any thread): n_frames (captured frames recognized), n_overflows (blocks
    PortAudio flagged as input overflow), n_dropped_blocks (blocks dropped because recognition fell behind),
    level_db (RMS of the latest block, dBFS), scores (the recognizer's latest smoothed scores), error
    (the exception that ended capture, or None). Events: on_event("overflow" | "dropped", total count),
    on_event("error", message). A Listener runs once: start(), then stop() (or use it as a context manager).
    """

    def __init__(
        self,
        on_detection: Callable[[Detection], Any] | None = None,
        device: int | str | None = None,
        model: str | LoadedModel | None = None,
        sample_rate: int | None = None,
        block_ms: float = 50.0,
        queue_blocks: int = 100,
        on_event: Callable[[str, Any], Any] | None = None,
        stall_timeout_s: float = 5.0,
        **detector_options: Any,
    ):
        if not block_ms > 0 or not queue_blocks >= 1 or not stall_timeout_s > 0:
            raise ValueError(f"need block_ms > 0, queue_blocks >= 1 and stall_timeout_s > 0, got "
                             f"{block_ms}, {queue_blocks}, {stall_timeout_s}")
        self.device = find_input_device(device)
        loaded = load_model(model)
        self.sample_rate, self.channels = _stream_settings(self.device, sample_rate, loaded.features.sample_rate)
        # a rate other than the model's is resampled by the Recognizer, on the worker thread
        self.recognizer = Recognizer(
            loaded, on_detection=on_detection, sample_rate=self.sample_rate, **detector_options
        )
        self.block_frames = max(1, round(block_ms * self.sample_rate / 1000))
        self.on_event = on_event
        self.stall_timeout_s = stall_timeout_s
        self.n_frames = self.n_overflows = self.n_dropped_blocks = 0
        self.level_db = LEVEL_FLOOR_DB
        self.error: BaseException | None = None
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_blocks)
        self._stop_requested = threading.Event()
        self._stream_finished = threading.Event()
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._stream: sd.InputStream | None = None
        self._worker: threading.Thread | None = None
        self._last_block_at = time.monotonic()
        self._reported = {"overflow": 0, "dropped": 0}
        self._last_report = -math.inf

    @property
    def scores(self) -> dict[str, float]:
        return self.recognizer.scores

    @property
    def time_s(self) -> float:
        """Seconds of audio captured and recognized so far (the stream clock of the detections)."""
        return self.n_frames / self.sample_rate

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._ended.is_set()

    def start(self) -> Listener:
        """Open the stream and start recognizing; a no-op if already started."""
        if self._worker is not None:
            return self
        try:
            stream = sd.InputStream(
                device=self.device.index, samplerate=self.sample_rate, channels=self.channels, dtype="float32",
                blocksize=self.block_frames, callback=self._callback, finished_callback=self._stream_finished.set,
            )
        except sd.PortAudioError as e:
            raise CaptureError(f"cannot open input device {self.device.index} ({self.device.name}): {e}") from e
        try:
            stream.start()
        except BaseException as e:
            stream.close(ignore_errors=True)
            if isinstance(e, sd.PortAudioError):
                raise CaptureError(f"cannot start input device {self.device.index} ({self.device.name}): {e}") from e
            raise
        log.info("listening on %d: %s at %d Hz × %d ch",
                 self.device.index, self.device.name, self.sample_rate, self.channels)
        self._stream = stream
        self._last_block_at = time.monotonic()
        self._worker = threading.Thread(target=self._run, name="drsn-asr-listener", daemon=True)
        self._worker.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until capture ends (stopped or failed) or `timeout_s` passes; True if it has ended."""
        return self._ended.wait(timeout_s)

    def stop(self) -> None:
        """Stop capture, recognize what was already captured, flush the recognizer. Returns promptly."""
        self._stop_requested.set()
        self._close_stream()
        if self._worker is None:  # never started
            self._ended.set()
        elif self._worker and self._worker is not threading.current_thread():
            self._worker.join(JOIN_TIMEOUT_S)
            if self._worker.is_alive():
                log.warning("the recognition worker is still busy (a slow on_detection?) after %.0f s; "
                            "leaving it to finish in the background", JOIN_TIMEOUT_S)

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # --- PortAudio's thread: copy, enqueue without waiting, count; no logging, no waiting on the worker
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: sd.CallbackFlags) -> None:
        if status.input_overflow:
            self.n_overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.n_dropped_blocks += 1

    # --- the worker thread
    def _run(self) -> None:
        try:
            while not self._stop_requested.is_set():
                try:
                    block = self._queue.get(timeout=POLL_S)
                except queue.Empty:
                    self._check_stream()
                else:
                    self._process(block)
                self._report()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    self._process(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.recognizer.flush()
        except Exception as e:
            self._fail(e)
        finally:
            self._report(final=True)
            self._ended.set()

    def _process(self, block: np.ndarray) -> None:
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
        self._last_block_at = time.monotonic()
        rms = float(np.sqrt(np.mean(np.square(mono)))) if len(mono) else 0.0
        self.level_db = max(LEVEL_FLOOR_DB, 20 * math.log10(rms)) if rms > 0 else LEVEL_FLOOR_DB
        self.n_frames += len(mono)  # first: detections from this block lie within time_s
        self.recognizer.feed(np.ascontiguousarray(mono))

    def _check_stream(self) -> None:
        # read `finished` before the stop flag: stop() sets the flag before aborting the stream, so a stream
        # found finished while the flag is still clear was ended by the device, not by us
        finished = self._stream_finished.is_set()
        if self._stop_requested.is_set():
            return
        name = f"input device {self.device.index} ({self.device.name})"
        if finished:
            raise CaptureError(f"{name} stopped delivering audio: PortAudio ended the stream "
                               "(device unplugged or its audio server stopped)")
        silent_s = time.monotonic() - self._last_block_at
        if silent_s < INACTIVE_GRACE_S:
            return
        with self._lock:
            active = self._stream is not None and self._stream.active
        if not active:
            raise CaptureError(f"{name} delivered no audio for {silent_s:.1f} s and PortAudio reports the "
                               "stream inactive (device unplugged or its audio server stopped)")
        if silent_s > self.stall_timeout_s:
            raise CaptureError(f"{name} delivered no audio for {silent_s:.1f} s although the stream is "
                               "active; the device or its audio server hung")

    def _fail(self, e: Exception) -> None:
        self.error = e
        log.error("capture ended: %s", e)
        self._event("error", str(e))
        self._close_stream()

    def _report(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_report < WARN_INTERVAL_S:
            return
        counts = {"overflow": self.n_overflows, "dropped": self.n_dropped_blocks}
        for kind, count in counts.items():
            if count > self._reported[kind]:
                if kind == "overflow":
                    log.warning("%d input overflow(s) so far: the device delivered audio faster than it was "
                                "read, and some was lost (is the machine overloaded?)", count)
                else:
                    log.warning("%d block(s) dropped so far: recognition is slower than real time and the "
                                "queue of %d blocks is full (use a faster device or a larger queue_blocks)",
                                count, self._queue.maxsize)
                self._reported[kind] = count
                self._last_report = now
                self._event(kind, count)

    def _event(self, kind: str, value: Any) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, value)
        except Exception:
            log.exception("on_event callback raised for %r; capture goes on", kind)

    def _close_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is None:
            return

        def close() -> None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:
                log.exception("closing the input stream failed")

        closer = threading.Thread(target=close, name="drsn-asr-close-stream", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.warning("PortAudio has not closed the stream from %s after %.0f s (device hung?); "
                        "leaving it to close in the background", self.device.name, CLOSE_TIMEOUT_S)


def listen(
    on_detection: Callable[[Detection], Any] | None,
    device: int | str | None = None,
    model: str | LoadedModel | None = None,
    sample_rate: int | None = None,
    block_ms: float = 50.0,
    queue_blocks: int = 100,
    on_event: Callable[[str, Any], Any] | None = None,
    sensitivity: str | None = None,
    **detector_options: Any,
) -> Listener:
    """Start recognizing commands from a microphone; returns the running Listener (also a context manager).

    device: None (the default input), an index, or a case-insensitive substring of the device name (see
    `list_input_devices()`). model: as for Recognizer; pass a LoadedModel to choose its torch device.
    The stream opens at the model's rate and in mono when the device allows, otherwise at the device's
    default rate (resampled) and channel count (down-mixed); `sample_rate` forces a capture rate.
    sensitivity: the model's named operating point, as for Recognizer ("few_false_alarms", "balanced" (the
    model's default) or "find_everything"; their measured figures are in the model card).
    **detector_options go to the Recognizer (threshold, thresholds, hop_ms, ...), plus `stall_timeout_s`:
    how long an active stream may deliver no audio before capture ends with an error (default 5 s).
    """
    if sensitivity is not None:
        detector_options["sensitivity"] = sensitivity
    listener = Listener(on_detection, device, model, sample_rate, block_ms, queue_blocks, on_event, **detector_options)
    return listener.start()
