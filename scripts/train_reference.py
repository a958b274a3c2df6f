"""Train the bundled reference CIFAR ResNet-20 on the shared CIFAR-10 (JPEG q75) copy.

    python scripts/train_reference.py --data ../shared/data/cifar10-jpeg.tar.gz --epochs 20

Writes ``robusteval/assets/cifar_resnet20.safetensors`` and a JSON file beside it with the
test accuracy and the training recipe. Resumes from ``--checkpoint`` after an interruption.
"""
from __future__ import annotations

import argparse
import json
import math
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from robusteval.data.imagefolder import load_imagefolder
from robusteval.models.archs import build_arch

from robusteval.models.bundled import ASSETS


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded 32x32 crops and horizontal flips, batched."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(32))[:, :, None].expand(n, 32, 32)
    cols = (dx[:, None] + torch.arange(32))[:, None, :].expand(n, 32, 32)
    idx = (rows * 40 + cols).reshape(n, 1, -1).expand(n, 3, -1)
    out = padded.reshape(n, 3, -1).gather(2, idx).reshape(n, 3, 32, 32)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), 1000):
            correct += (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item()
    return correct / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default="/tmp/robusteval-train-ckpt.pt")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.data) as tar:
            tar.extractall(tmp, filter="data")
        root = next(Path(tmp).iterdir())
        train, test = load_imagefolder(root / "train"), load_imagefolder(root / "test")
    xtr, ytr = train.images(slice(None)), train.labels(slice(None))
    xte, yte = test.images(slice(None)), test.labels(slice(None))

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = build_arch("cifar_resnet20", 10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    start_epoch = 0
    ckpt = Path(args.checkpoint)
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start_epoch = state["epoch"]
        print(f"resumed at epoch {start_epoch}")
    for epoch in range(start_epoch, args.epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + i)
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            batch = augment(xtr[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(batch), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
        acc = evaluate(model, xte, yte) if (epoch % 5 == 4 or epoch == args.epochs - 1) else float("nan")
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss_sum / steps_per_epoch:.4f} "
              f"test acc {acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "epoch": epoch + 1}, ckpt)

    acc = evaluate(model, xte, yte)
    ASSETS.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ASSETS / "cifar_resnet20.safetensors"))
    meta = {"arch": "cifar_resnet20", "classes": list(test.classes),
            "test_accuracy": acc, "test_set": "CIFAR-10 (JPEG q75 copy), test split, 10,000 images",
            "recipe": {k: v for k, v in vars(args).items() if k != "checkpoint"} | {
                "optimizer": "SGD nesterov momentum 0.9", "schedule": "1 epoch linear warm-up, cosine",
                "augmentation": "random crop (pad 4) + horizontal flip"}}
    (ASSETS / "cifar_resnet20.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"final test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
