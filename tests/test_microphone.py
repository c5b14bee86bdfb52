"""Live capture through a real PortAudio device: a private PulseAudio daemon with a 16 kHz mono null sink
whose monitor is remapped into a source (`drsn_mic`, the default source). `paplay --device=drsn` plays into
the sink and PortAudio records it through ALSA's `pulse` plugin (Debian: libasound2-plugins).

Every client (this process, paplay, pactl) reaches the daemon through PULSE_SERVER, set before
sounddevice enumerates devices. The daemon runs as whatever user runs the tests, root included.
"""

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import drsn_asr
from drsn_asr.runtime.audio import read_audio, write_audio

FSDD = Path("/work/shared/data/fsdd/recordings")
CLIP_WORDS = (("seven", "7_theo_0.wav"), ("two", "2_lucas_0.wav"))  # held-out speakers
LEAD_S, GAP_S, TAIL_S = 0.5, 1.5, 0.3
LOUD_DB = -50.0  # a block this loud holds the played recording; the idle null sink is digital silence


class PulseDaemon:
    """A private pulseaudio: own runtime/state/config dirs, no default.pa (-n), only the modules we load."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.server = f"unix:{root}/pulse/native"
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(root),
            "PULSE_RUNTIME_PATH": str(root / "pulse"),
            "PULSE_STATE_PATH": str(root / "state"),
            "PULSE_CONFIG_PATH": str(root / "config"),
            "PULSE_COOKIE": str(root / "cookie"),
            "PULSE_SERVER": self.server,
            "HOME": str(root),  # root's real ~/.config/pulse stays untouched
        }
        self.log = root / "pulseaudio.log"
        self.proc = self.keeper = None

    def start(self) -> None:
        cmd = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--realtime=no", "--high-priority=no",
            "--log-target=stderr", "--log-level=error",
            "-L", "module-native-protocol-unix",
            "-L", "module-null-sink sink_name=drsn rate=16000 channels=1",
            "-L", "module-remap-source master=drsn.monitor source_name=drsn_mic",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.pactl("info", check=False).returncode == 0:
                self.pactl("set-default-source", "drsn_mic")
                # With no client, the null sink renders every ~2 s, so a new recording got its first audio
                # up to 2 s late. A low-latency recorder kept connected makes it render every 20 ms.
                self.keeper = subprocess.Popen(
                    ["pacat", "--record", "--device=drsn.monitor", "--latency-msec=20"],
                    env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"pulseaudio did not come up: {self.log.read_text(errors='replace')[-2000:]}")

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, timeout=5, check=check)

    def play(self, path: Path) -> subprocess.Popen:
        return subprocess.Popen(["paplay", "--device=drsn", str(path)], env=self.env)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.keeper is not None:
            self.keeper.kill()
            self.keeper.wait()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # --kill can't stop a SIGSTOPped daemon
            subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=5)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2)


def _wait_for(condition, timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("pulseaudio / paplay not installed (Debian: pulseaudio pulseaudio-utils)")
    daemons = {"main": PulseDaemon(tmp_path_factory.mktemp("pulse")), "spare": PulseDaemon(tmp_path_factory.mktemp("spare"))}
    try:
        for d in daemons.values():  # the spare one warms up while the main one is checked
            d.start()
    except RuntimeError as e:
        for d in daemons.values():
            d.kill()
        pytest.skip(f"cannot start a private pulseaudio: {e}")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH", "PULSE_COOKIE", "PULSE_SERVER"):
            mp.setenv(key, daemons["main"].env[key])
        yield daemons
    for d in daemons.values():
        d.kill()


@pytest.fixture(scope="module")
def pulse(daemons) -> PulseDaemon:
    return daemons["main"]


@pytest.fixture(scope="module")
def mic(pulse):
    """drsn_asr.runtime.microphone, imported (or PortAudio re-initialized) once the daemon is up."""
    already = "sounddevice" in sys.modules
    import sounddevice as sd

    if already:  # PortAudio lists devices when it initializes: list them again now that the server runs
        sd._terminate()
        sd._initialize()
    from drsn_asr.runtime import microphone

    names = [d.name for d in microphone.list_input_devices()]
    if "pulse" not in names:
        pytest.fail(f"PortAudio sees no 'pulse' input device (it sees {names}); ALSA's pulse plugin is missing: "
                    "apt-get install libasound2-plugins")
    n = []
    with sd.InputStream(device="pulse", samplerate=16000, channels=1, callback=lambda *a: n.append(1)):
        assert _wait_for(lambda: n, 5.0), "no audio callback within 5 s of opening the pulse device"
    return microphone


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one window per 50 ms block: extra threads only contend on a small machine
    yield drsn_asr.load_model(device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def logmel_model():
    """For the capture tests that compare the recognizer's clock with the device's after well under a second: the
    default model's first 782 ms frame is not complete by then, the log-mel model's 25 ms frames are."""
    return drsn_asr.load_model("logmel", device="cpu")


def _untrained(model) -> bool:
    return model.training.get("note") == "untrained placeholder"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """'seven' … 1.5 s … 'two' at 16 kHz; returns (path, [(label, start_s, end_s) in clip time])."""
    parts, words, t = [np.zeros(round(LEAD_S * 16000), np.float32)], [], LEAD_S
    for i, (label, name) in enumerate(CLIP_WORDS):
        x = read_audio(FSDD / name)  # 8 kHz → 16 kHz
        x = 0.5 * x / np.abs(x).max()
        words.append((label, t, t + len(x) / 16000))
        parts += [x, np.zeros(round((GAP_S if i + 1 < len(CLIP_WORDS) else TAIL_S) * 16000), np.float32)]
        t = words[-1][2] + GAP_S
    path = tmp_path_factory.mktemp("clip") / "seven_two.wav"
    write_audio(path, np.concatenate(parts))
    return path, words


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """0.4 s of a -6 dBFS 440 Hz tone."""
    t = np.arange(round(0.4 * 16000)) / 16000
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    write_audio(path, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    return path


def _first_block(listener, timeout_s: float = 2.0) -> None:
    assert _wait_for(lambda: listener.n_frames > 0, timeout_s), f"no audio within {timeout_s} s"


def _max_level_while_playing(listener, pulse, path: Path) -> float:
    player = pulse.play(path)
    levels = [listener.level_db]
    while player.poll() is None:
        levels.append(listener.level_db)
        time.sleep(0.01)
    t_end = time.monotonic() + 0.3
    while time.monotonic() < t_end:
        levels.append(listener.level_db)
        time.sleep(0.01)
    assert player.returncode == 0
    return max(levels)


@pytest.fixture(scope="module")
def played(mic, pulse, model, clip):
    """One live session with default detector settings: silence, the clip, silence; what the listener saw."""
    path, words = clip
    detections = []
    listener = mic.Listener(lambda d: detections.append((d, listener.time_s)), model=model)
    wall_start = time.monotonic()
    with listener:
        _first_block(listener)
        time.sleep(0.3)
        silence_db = listener.level_db
        t_launch = listener.time_s
        player = pulse.play(path)
        trace, t_done = [], None  # (stream time, level) as the worker advances
        while t_done is None or time.monotonic() < t_done + 0.8:  # 0.8 s more: the last word gets classified
            trace.append((listener.time_s, listener.level_db))
            if t_done is None and player.poll() is not None:
                t_done = time.monotonic()
            time.sleep(0.01)
        wall_s = time.monotonic() - wall_start
        stop_started = time.monotonic()
    stop_s = time.monotonic() - stop_started
    return dict(listener=listener, detections=detections, silence_db=silence_db, t_launch=t_launch, trace=trace,
                wall_s=wall_s, stop_s=stop_s, words=words, player_rc=player.returncode)


def test_list_input_devices_shows_the_pulse_devices(mic):
    devices = mic.list_input_devices()
    by_name = {d.name: d for d in devices}
    assert {"pulse", "default"} <= set(by_name)
    d = by_name["pulse"]
    assert isinstance(d.index, int) and d.max_input_channels >= 1 and d.default_samplerate > 0
    assert mic.find_input_device(None).name in ("default", "pulse")


def test_device_by_name_substring_or_index(mic, model, caplog):
    pulse_index = next(d.index for d in mic.list_input_devices() if d.name == "pulse")
    assert mic.find_input_device("PULS").index == pulse_index
    assert mic.find_input_device(pulse_index).name == "pulse"
    assert mic.find_input_device("Default").name == "default"  # exact name, case-insensitive
    with caplog.at_level(logging.WARNING, logger="drsn_asr.runtime.microphone"):
        picked = mic.find_input_device("u")  # in both 'pulse' and 'default': the first one, with a warning
    with_u = [d.index for d in mic.list_input_devices() if "u" in d.name.casefold()]
    assert picked.index == with_u[0]
    assert f"matches {len(with_u)} input devices" in caplog.text and f"using {picked.index}: {picked.name}" in caplog.text
    for device in ("puls", pulse_index):
        with mic.listen(None, device=device, model=model) as listener:
            assert listener.device.index == pulse_index
            assert (listener.sample_rate, listener.channels) == (16000, 1)
            _first_block(listener)


def test_unknown_device_is_a_value_error_listing_the_inputs(mic):
    for device in ("no such microphone", 999):
        with pytest.raises(ValueError) as e:
            mic.find_input_device(device)
        assert "pulse" in str(e.value) and "default" in str(e.value)
    with pytest.raises(ValueError, match="no input device name contains 'no such microphone'"):
        mic.Listener(None, device="no such microphone")


def test_audio_arrives_and_stop_is_prompt(played):
    listener, trace = played["listener"], played["trace"]
    assert played["player_rc"] == 0 and listener.error is None
    assert played["silence_db"] <= -80.0, "the idle null sink should be digital silence"
    loud = [t for t, level in trace if level > LOUD_DB]
    assert loud, f"the played clip never showed on the meter (max {max(l for _, l in trace):.1f} dB)"
    # it shows up soon after paplay starts, and lasts about as long as the clip's first to last word
    words = played["words"]
    onset_s = loud[0] - played["t_launch"]
    assert words[0][1] - 0.1 <= onset_s <= words[0][1] + 1.0, onset_s
    assert abs((loud[-1] - loud[0]) - (words[-1][2] - words[0][1])) < 0.5
    # every captured frame reached the recognizer, in real time
    assert abs(listener.time_s - played["wall_s"]) < 0.25 * played["wall_s"]
    assert listener.recognizer.time_s >= listener.time_s - 0.1
    assert listener.n_dropped_blocks == 0
    assert played["stop_s"] < 2.0
    assert not listener.running


def test_trained_model_recognizes_the_played_digits(played, model):
    if _untrained(model):
        pytest.skip("default model is untrained")
    t0 = played["t_launch"]
    got = [d for d, _ in played["detections"]]
    assert [d.label for d in got] == [label for label, _, _ in played["words"]]
    for d, (label, start_s, end_s) in zip(got, played["words"]):
        # played from t0 plus the player's start-up latency (< 0.6 s, see test_audio_arrives_...)
        assert d.start_s < t0 + end_s + 0.6 and d.end_s > t0 + start_s, (d, t0)
    gap = got[1].start_s - got[0].start_s
    assert abs(gap - (played["words"][1][1] - played["words"][0][1])) < 0.5


def test_detections_arrive_during_playback_and_a_raising_callback_does_not_stop_capture(
    mic, pulse, model, clip, caplog
):
    """threshold 0: the first keyword ranked on top is detected whatever the model. Opening the listener
    while the clip plays puts that first detection inside the playback, trained model or not."""
    seen = []

    def on_detection(d):
        seen.append((d, listener.time_s))
        raise RuntimeError("callback bug")

    player = pulse.play(clip[0])
    time.sleep(0.3)
    with caplog.at_level(logging.ERROR, logger="drsn_asr.runtime.stream"):
        listener = mic.Listener(on_detection, model=model, threshold=0.0)
        listener.start()
        try:
            assert _wait_for(lambda: seen, 4.0), "no detection while the clip played"
            playing_until_s = listener.time_s if player.poll() is None else None
            frames_at_detection = listener.n_frames
            assert _wait_for(lambda: listener.n_frames > frames_at_detection + 8000, 2.0), "capture stopped"
            assert listener.running and listener.error is None
        finally:
            listener.stop()
            player.kill()
    detection, arrived_at_s = seen[0]
    assert 0.0 <= detection.start_s <= detection.end_s <= arrived_at_s + 1e-6
    if playing_until_s is not None:
        assert detection.end_s <= playing_until_s
    assert "on_detection callback raised" in caplog.text


def test_slow_consumer_drops_blocks_counted_and_logged(mic, pulse, model, clip, caplog):
    events = []

    def slow(d):
        time.sleep(0.4)  # a callback that blocks the worker for 8 blocks

    player = pulse.play(clip[0])
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, logger="drsn_asr.runtime.microphone"):
        listener = mic.listen(slow, model=model, queue_blocks=1, on_event=lambda *e: events.append(e), threshold=0.0)
        try:
            assert _wait_for(lambda: listener.n_dropped_blocks > 0, 4.0)
            assert _wait_for(lambda: any(kind == "dropped" for kind, _ in events), 2.0)
        finally:
            t = time.monotonic()
            listener.stop()
            stop_s = time.monotonic() - t
            player.kill()
    assert "block(s) dropped so far" in caplog.text
    assert all(count <= listener.n_dropped_blocks for kind, count in events if kind == "dropped")
    assert listener.error is None and stop_s < 2.0


def test_rate_fallback_when_the_device_refuses_16k(mic, pulse, logmel_model, tone, monkeypatch):
    real_check = mic.sd.check_input_settings

    def refuse_16k(*args, samplerate=None, **kwargs):
        if samplerate == 16000:
            raise mic.sd.PortAudioError("Invalid sample rate [PaErrorCode -9997]")
        return real_check(*args, samplerate=samplerate, **kwargs)

    monkeypatch.setattr(mic.sd, "check_input_settings", refuse_16k)
    with mic.listen(None, device="pulse", model=logmel_model) as listener:  # 10 ms frames: its clock keeps up
        assert listener.sample_rate == 44100 and listener.recognizer.sample_rate == 44100
        _first_block(listener)
        assert _max_level_while_playing(listener, pulse, tone) > -12.0
        assert abs(listener.recognizer.time_s - listener.time_s) < 0.6  # resampler lag: one block + context


def test_multichannel_only_device_is_down_mixed_in_the_worker(mic, pulse, logmel_model, tone, monkeypatch):
    real_check = mic.sd.check_input_settings

    def refuse_mono(*args, channels=None, **kwargs):
        if channels == 1:
            raise mic.sd.PortAudioError("Invalid number of channels [PaErrorCode -9998]")
        return real_check(*args, channels=channels, **kwargs)

    monkeypatch.setattr(mic.sd, "check_input_settings", refuse_mono)
    with mic.listen(None, device="pulse", model=logmel_model) as listener:
        assert (listener.sample_rate, listener.channels) == (16000, 2)
        _first_block(listener)
        assert _max_level_while_playing(listener, pulse, tone) > -12.0  # mono upmixed to 2 ch, averaged back
        assert abs(listener.recognizer.time_s - listener.time_s) < 0.1


@pytest.fixture
def spare(daemons, mic, monkeypatch):
    """The second daemon (started with the first, so it is warm), as this test's audio server."""
    daemon = daemons["spare"]
    if not daemon.alive:
        daemon.kill()
        daemon.start()
    for key in ("XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH", "PULSE_COOKIE", "PULSE_SERVER"):
        monkeypatch.setenv(key, daemon.env[key])
    return daemon


def test_listen_takes_the_models_named_sensitivity(mic, pulse, model):
    with mic.listen(None, device="pulse", model=model, sensitivity="few_false_alarms") as listener:
        _first_block(listener)
        preset = model.sensitivity["few_false_alarms"]
        assert listener.recognizer.config.threshold == preset["threshold"]
        assert listener.recognizer.config.smoothing_ms == preset["smoothing_ms"]
    with pytest.raises(ValueError, match="not one of this model's presets"):
        mic.listen(None, device="pulse", model=model, sensitivity="twitchy")


def test_hung_audio_server_ends_capture_after_the_stall_timeout(mic, model, spare):
    listener = mic.listen(None, device="pulse", model=model, stall_timeout_s=0.5)
    try:
        _first_block(listener)
        os.kill(spare.proc.pid, signal.SIGSTOP)  # PortAudio's stream stays "active" but gets no audio
        assert listener.wait(3.0), "capture did not end while the audio server hung"
        assert isinstance(listener.error, mic.CaptureError) and "although the stream is active" in str(listener.error)
    finally:
        t = time.monotonic()
        listener.stop()  # PortAudio blocks ~30 s aborting this stream; stop() must not
        stop_s = time.monotonic() - t
        os.kill(spare.proc.pid, signal.SIGCONT)
    assert stop_s < 2.0


def test_killed_audio_server_ends_capture_with_an_error(mic, model, spare):
    events = []
    listener = mic.listen(None, device="pulse", model=model, on_event=lambda *e: events.append(e))
    try:
        _first_block(listener)
        spare.proc.kill()
        spare.proc.wait(2)
        assert listener.wait(2.0), "capture did not end after the audio server died"
    finally:
        t = time.monotonic()
        listener.stop()
        stop_s = time.monotonic() - t
    assert isinstance(listener.error, mic.CaptureError)
    assert "unplugged or its audio server stopped" in str(listener.error)
    assert events and events[-1][0] == "error" and "pulse" in events[-1][1]
    assert stop_s < 2.0


def test_cli_listen(mic, pulse, capsys):
    from drsn_asr.cli import main

    assert main(["listen", "--list-devices"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\*?\s*\d+\s+pulse\s+\(\d+ ch, \d+ Hz\)$", out, re.M), out
    assert main(["listen", "--device", "pulse", "--seconds", "1", "--threshold", "0"]) == 0
    captured = capsys.readouterr()
    assert all(re.fullmatch(r"\d+\.\d\d–\d+\.\d\d  \w+  \d\.\d\d", line) for line in captured.out.splitlines())
    assert re.search(r"listened \d+\.\d s: \d+ detection\(s\), 0 input overflow\(s\), 0 dropped block\(s\)", captured.err)
