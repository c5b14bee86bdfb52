"""`drsn-asr bench --quick --json` runs and reports every figure as a positive number (or says why not).

No timing thresholds here: the targets live in the benchmark's own output.
"""

import json
import platform
import subprocess
import sys
import time

import pytest


def test_quick_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "drsn_asr.cli", "bench", "--quick", "--json", str(out),
                        "--audio-s", "6", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Real-time factor" in r.stdout and "machine:" in r.stdout
    result = json.loads(out.read_text())
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["torch"]
    if sys.platform == "linux" and platform.machine() == "x86_64":  # the CPU's generation, which moves every figure
        assert result["machine"]["cpu_family_model"] and result["machine"]["cpu_avx512"] in (True, False)
    assert result["checks"]["streaming_equals_offline"] is True
    figures = result["figures"]
    for name in ("rtf_live_cpu1", "rtf_file_cpu1", "hop_latency_p50_ms", "hop_latency_p99_ms", "peak_rss_mb",
                 "rtf_naive_cpu1", "offline_cpu_audio_h_per_h", "offline_cpu1_audio_h_per_h", "train_cpu_clips_per_s",
                 "streams_cpu", "streams_cpu_by_cpu_time", "state_kb_per_stream", "forward_onnx_b1_us",
                 "rtf_torch_backend_cpu1", "rtf_live_cpu1_other_hop", "server_clients_cpu", "feed_buffering_us",
                 *(f"chunk20_{key}" for key in ("paced_rtf_cpu", "tight_rtf_cpu", "classifying_feed_us",
                                                "buffering_feed_us")),
                 *(f"hop_{part}_us" for part in ("whole", "frontend", "network", "rule", "rest")),
                 *(f"rtf_chunk{ms}_{way}_{load}" for ms in (10, 20, 32, 100) for load in ("idle", "loaded")
                   for way in ("defaults", "pinned", "torch_threads"))):
        assert name in figures, name
    served = figures["server_clients_cpu"]["search"]
    assert all(t["failed"] == 0 for n, t in served["tried"].items() if int(n) <= served["max_clients"])
    assert "defaults_over_pinned_chunk20_loaded" in result["ratios"] and "chunk20_over_chunk100_idle" in result["ratios"]
    for name, figure in figures.items():
        if figure["value"] is None:  # GPU figures on a CPU machine, PocketSphinx when not installed
            assert figure["note"].startswith(("pending", "skipped")), name
        elif name not in ("streams_cpu", "server_clients_cpu"):  # a loaded machine may sustain no stream at all
            assert figure["value"] > 0, name
    assert figures["streams_cpu"]["value"] >= 0 and figures["server_clients_cpu"]["value"] >= 0
    # streams are timed once they have made their first frame; that hop is reported apart
    assert all(t["first_frame_hop_ms"] > 0 for t in figures["streams_cpu"]["search"]["tried"].values())
    assert all(v > 0 for v in result["ratios"].values())
    # a hop's parts are timed apart, and the frontend's share is said: parts of the whole, none of them nothing
    parts = [figures[f"hop_{part}_us"]["value"] for part in ("frontend", "network", "graph", "rule", "rest")]
    assert sum(parts) == pytest.approx(figures["hop_whole_us"]["value"])
    assert figures["hop_graph_us"]["value"] > figures["hop_frontend_us"]["value"]  # live hops run as one graph
    assert figures["chunk20_classifying_feed_us"]["value"] > figures["chunk20_buffering_feed_us"]["value"]
    assert 0 < result["ratios"]["frontend_share_of_hop"] < 1
    assert result["ratios"]["rtf_without_frontend_over_target"] < result["ratios"]["rtf_over_target"]
    assert "torch_backend_over_default" in result["ratios"]
    assert result["settings"]["backend"] == "OnnxNet"  # the default model's network, folded, on ONNX Runtime
    assert result["command"].startswith("drsn-asr bench --quick")


def test_gpu_only_without_a_gpu_says_what_to_do():
    r = subprocess.run([sys.executable, "-m", "drsn_asr.cli", "bench", "--gpu-only", "--quick"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "--device cuda" in r.stderr and "Real-time factor" not in r.stdout


def test_paced_stream_feeds_in_real_time_and_times_both_ways():
    from drsn_asr.runtime.checkpoint import load_model
    from drsn_asr.tools.bench import noisy_recording, paced_stream

    audio = noisy_recording(1.5)
    t = time.perf_counter()
    result = paced_stream(load_model("default"), audio, 320)
    # the paced pass waits for each chunk's end in real time: at least the audio's length in all
    assert time.perf_counter() - t >= 1.5 - 0.02
    assert result["paced_rtf_cpu"] > 0 and result["tight_rtf_cpu"] > 0
    assert result["classifying_feed_us"] > 0 and result["buffering_feed_us"] > 0
