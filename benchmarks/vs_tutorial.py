"""featx (extract once + train heads) against the transfer-learning tutorial recipe, side by side.

    python benchmarks/vs_tutorial.py                      # ELPV 4 classes, efficientnet_lite0
    python benchmarks/vs_tutorial.py --tutorial-epochs 2  # a quicker, partial tutorial run

The tutorial (PyTorch's "ConvNet as fixed feature extractor"): frozen pretrained backbone + new fc,
SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1), on-the-fly RandomResizedCrop(224) + flip, batch 32,
12 epochs, the best-val-accuracy epoch kept; every epoch pays a backbone forward per image.
featx: `extract` (clean view, once; ONNX Runtime on CPU) then `train-head` (the default 32-head
linear sweep).
Both use the same 60/15/25 stratified split of ELPV and are timed end to end on this machine.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T

from featx.backbones import create_backbone
from featx.data import open_dataset
from featx.extraction import ExtractConfig, extract
from featx.data.images import load_image
from featx.probes.train import train_head


class Images(torch.utils.data.Dataset):
    def __init__(self, dataset, split, transform):
        self.items = [(dataset.abspath(s), s.label) for s in dataset.samples if s.split == split]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.transform(load_image(path)), label


def tutorial(dataset, backbone_name: str, epochs: int, workers: int) -> tuple[float, float]:
    """(test accuracy of the best-val epoch, seconds)."""
    start = time.perf_counter()
    backbone = create_backbone(backbone_name, weights="default")
    pre = backbone.preprocess
    norm = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]
    train_tf = T.Compose([T.RandomResizedCrop(pre.input_size), T.RandomHorizontalFlip(), *norm])
    eval_tf = T.Compose([T.Resize(pre.resize_size), T.CenterCrop(pre.input_size), *norm])
    loaders = {split: torch.utils.data.DataLoader(
        Images(dataset, split, train_tf if split == "train" else eval_tf), batch_size=32,
        shuffle=split == "train", num_workers=workers) for split in ("train", "val", "test")}
    model = torch.nn.Sequential(backbone.model, torch.nn.Linear(backbone.spec.feature_dim,
                                                                len(dataset.classes)))
    fc = model[1]
    opt = torch.optim.SGD(fc.parameters(), lr=1e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    best_acc, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        model[0].eval()  # frozen backbone: BN statistics stay ImageNet's
        for x, y in loaders["train"]:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        sched.step()
        acc = accuracy(model, loaders["val"])
        print(f"  tutorial epoch {epoch + 1}/{epochs}: val {acc:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
        if acc > best_acc:
            best_acc, best_state = acc, copy.deepcopy(fc.state_dict())
    fc.load_state_dict(best_state)
    return accuracy(model, loaders["test"]), time.perf_counter() - start


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def featx_run(dataset, backbone_name: str) -> tuple[float, float, float]:
    """(test accuracy, extract seconds, total seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        r = extract(dataset, backbone_name, Path(tmp), ExtractConfig(), show_progress=False)
        extracted = time.perf_counter() - start
        head = train_head(r.store, "linear", out=Path(tmp) / "head", show_progress=False)
        return head.test.top1, extracted, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--tutorial-epochs", type=int, default=12, help="0 = featx only")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    dataset = open_dataset("elpv")
    print(f"ELPV {len(dataset.classes)} classes, {len(dataset.samples)} images, {args.backbone}, "
          f"{torch.get_num_threads()} CPU threads")
    acc_f, t_extract, t_f = featx_run(dataset, args.backbone)
    print(f"featx    test top-1 {acc_f:.3f}   {t_f:7.1f} s  (extract {t_extract:.1f} s, heads "
          f"{t_f - t_extract:.1f} s)", flush=True)
    if args.tutorial_epochs == 0:
        return  # featx only
    acc_t, t_t = tutorial(dataset, args.backbone, args.tutorial_epochs, args.workers)
    print(f"tutorial test top-1 {acc_t:.3f}   {t_t:7.1f} s  ({args.tutorial_epochs} epochs)")
    print(f"time ratio featx / tutorial {t_f / t_t:.3f} (1/{t_t / t_f:.1f}); "
          f"accuracy difference {acc_f - acc_t:+.3f}")


if __name__ == "__main__":
    main()
