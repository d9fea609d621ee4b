"""Speed of the CNN track's training steps, and the fraction of the machine's peak they reach.

    python bench/cnn_speed.py [--steps 20] [--models conv2,conv4,conv6,resnet20,resnet20_w8,vgg19] [--docs]

For each model, one member trains through lth's own loop (``lth.train.train``: masks, optimizer, data
order, augmentation for VGG/ResNet) on fashion-mnist-32 at the paper's batch size; ms per step is the
median over ``--steps`` timed steps after 3 warm-up steps. FLOPs per step are counted from the model's
conv and linear layers (multiply-adds x 2, forward + 2x for the backward: 3x the forward), so
GFLOP/s = FLOPs / time. Peaks are measured in the same run: fp32 matmul (2048^3, best of 20) and a
3x3 conv (batch 64, 128 -> 128 channels, 32x32, forward), both in GFLOP/s. ``--profile`` prints where
a Conv-2 step's time goes (torch.profiler, self CPU time by op). Writes bench/results/cnn_speed.json
and with ``--docs`` docs/cnn/speed.md.
"""

import argparse
import statistics
import time

import torch
import common
from common import ROOT, matmul_peak_gflops, record, table

MODELS = {  # name -> (registry model, model_args, batch, optimizer, augment)
    "conv2": ("conv2", {}, 60, "adam", False),
    "conv4": ("conv4", {}, 60, "adam", False),
    "conv6": ("conv6", {}, 60, "adam", False),
    "resnet20": ("resnet20", {}, 128, "sgd", True),
    "resnet20_w8": ("resnet20", {"width": 8}, 128, "sgd", True),
    "vgg19": ("vgg19", {}, 64, "sgd", True),
}


def conv_peak_gflops(reps: int = 10) -> float:
    x, w = torch.randn(64, 128, 32, 32), torch.randn(128, 128, 3, 3)
    flops = 2 * 64 * 128 * 128 * 9 * 32 * 32
    best = 0.0
    with torch.no_grad():
        torch.nn.functional.conv2d(x, w, padding=1)
        for _ in range(reps):
            t = time.perf_counter()
            torch.nn.functional.conv2d(x, w, padding=1)
            best = max(best, flops / (time.perf_counter() - t) / 1e9)
    return best


def forward_flops(net: torch.nn.Module, shape) -> int:
    """Multiply-adds x 2 of one image through the conv and linear layers."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.weight[0].numel()  # in/groups * kh * kw
            total += 2 * out[0].numel() * k
        elif isinstance(mod, torch.nn.Linear):
            total += 2 * mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return total


def time_steps(name: str, steps: int) -> dict:
    from lth import lottery, models
    from lth.ensemble import Ensemble
    from lth.presets import Config
    from lth.train import TrainSpec, train

    model, kw, batch, opt, augment = MODELS[name]
    task = lottery.load_task(Config(dataset="fashion-mnist-32", augment=augment), "cpu")
    template = models.build(model, task.shape, 10, **kw)
    ens = Ensemble(template, [lottery.init_state(template, 0, "kaiming_normal")])
    times = []
    last = [time.perf_counter()]

    class Tick:  # the loop's progress bar: one update per step
        def update(self, n):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

    spec = TrainSpec(iterations=steps + 3, batch_size=batch, lr=1e-3, optimizer=opt, momentum=0.9 if opt == "sgd" else 0.0,
                     eval_every=10**9)
    last[0] = time.perf_counter()
    train(ens, {}, task, spec, [0], progress=Tick())
    ms = 1000 * statistics.median(times[3:])
    flops = 3 * forward_flops(template, task.shape) * batch
    return {"model": name, "batch": batch, "ms_per_step": round(ms, 1), "gflop_per_step": round(flops / 1e9, 2),
            "gflops": round(flops / 1e9 / (ms / 1000), 1), "path": ens.path()}


def profile_conv2() -> str:
    from torch.profiler import ProfilerActivity, profile

    from lth import models

    net = models.build("conv2", (1, 32, 32), 10)
    x, y = torch.randn(60, 1, 32, 32), torch.randint(0, 10, (60,))
    for _ in range(3):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            torch.nn.functional.cross_entropy(net(x), y).backward()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", default="conv2,conv4,conv6,resnet20,resnet20_w8")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--docs", action="store_true")
    args = ap.parse_args()
    mm, cv = matmul_peak_gflops(), conv_peak_gflops()
    rows = []
    for name in args.models.split(","):
        r = time_steps(name, args.steps)
        r["of_matmul_peak"] = f"{r['gflops'] / mm:.0%}"
        r["of_conv_peak"] = f"{r['gflops'] / cv:.0%}"
        rows.append(r)
        print(r, flush=True)
    cols = ["model", "batch", "ms_per_step", "gflop_per_step", "gflops", "of_matmul_peak", "of_conv_peak", "path"]
    text = table(rows, cols)
    head = f"threads {torch.get_num_threads()}; peaks in this run: matmul {mm:.0f} GFLOP/s, 3x3 conv {cv:.0f} GFLOP/s"
    print(head + "\n" + text)
    prof = profile_conv2() if args.profile else ""
    if prof:
        print(prof)
    record("cnn_speed", {"matmul_peak_gflops": mm, "conv_peak_gflops": cv, "rows": rows, "profile_conv2": prof})
    if args.docs:
        out = ROOT / "docs" / "cnn" / "speed.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = f"python bench/cnn_speed.py --steps {args.steps} --models {args.models}" + (" --profile" if args.profile else "")
        out.write_text(f"# CNN training speed\n\n`{cmd} --docs`\n\n{head}\n\n```\n{text}\n```\n"
                       + (f"\nWhere a Conv-2 step's time goes (5 steps, batch 60):\n\n```\n{prof}\n```\n" if prof else ""))


if __name__ == "__main__":
    common.run_main(main)
