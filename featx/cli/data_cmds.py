"""featx scan | backbones | info: look at the data, the backbones, and a feature store."""

from __future__ import annotations

import json
import re

import typer
from rich.markup import escape
from rich.table import Table

from featx.cli import options as o
from featx.cli.core import DATA_OPTIONS, err, given, next_step, open_data, out, plural, require_data, say
from featx.errors import FeatxError


def scan(ctx: typer.Context, data: o.DataOrConfig = None, label_col: o.LabelCol = None,
         binarize: o.Binarize = None, val_frac: o.ValFrac = 0.15, test_frac: o.TestFrac = 0.25,
         split_seed: o.SplitSeed = 0, class_map: o.ClassMap = None, subset: o.Subset = None,
         decode_sample: o.DecodeSample = 10000, config: o.Config = None) -> None:
    """Classes, counts per split, image sizes and modes, and every unreadable file."""
    from featx.data import require_decodable, scan_images
    from featx.runtime.progress import progress_bar

    data = require_data(data)
    ds = open_data(data, ctx.params)
    todo = min(decode_sample or len(ds.samples), len(ds.samples))
    with progress_bar(todo, f"scan {ds.name}") as advance:
        report = scan_images(ds, advance, sample=decode_sample)
    out.print(f"[bold]{escape(ds.name)}[/]: {len(ds.samples)} images, {len(ds.classes)} classes, "
              f"layout: {ds.layout}", highlight=False)
    out.print(f"  {ds.root}", markup=False, highlight=False)  # a path alone: long ones stay whole
    out.print(class_table(ds))
    if report.decoded < len(ds.samples):
        out.print(f"decoded {report.decoded} of {len(ds.samples)} images, spread evenly "
                  "(--decode-sample 0 decodes every one)", markup=False, highlight=False, soft_wrap=False)
    out.print("sizes: " + _top(report.sizes, lambda wh: f"{wh[0]}x{wh[1]}"), soft_wrap=False)
    out.print("modes: " + _top(report.modes, str), soft_wrap=False)
    for note in ds.notes:
        out.print(f"note: {note}", markup=False)
    if ds.ignored_files:
        out.print(f"note: {ds.ignored_files} file(s) without an image extension ignored")
    for warning in report.warnings:  # e.g. a class left with no usable training image
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if report.unreadable:
        out.print(f"[bold red]{len(report.unreadable)} unreadable file(s)[/] (excluded from every run):")
        for path, reason in report.unreadable:
            out.print(f"  {path}: {reason}", markup=False, highlight=False)
    elif report.decoded < len(ds.samples):
        out.print(f"all {report.decoded} decoded images decode")
    else:
        out.print("all images decode")
    require_decodable(ds, dict(report.unreadable))  # nothing decodes: an error, after the report
    next_step(" ".join(["featx extract", *same_data_options(ctx)]), data)


def same_data_options(ctx: typer.Context) -> list[str]:
    """The data options the user gave, as `--label-col quality`: extract must see the same data."""
    import shlex

    return [f"--{name.replace('_', '-')} {shlex.quote(str(ctx.params[name]))}"
            for name in (*DATA_OPTIONS, "subset") if given(ctx, name)]


def class_table(ds) -> Table:
    """Per class, its count in each split; a `name` column only where a class has a display
    name of its own (a class map, ELPV's), and numeric keys at the digits that tell them apart."""
    counts = ds.counts()
    splits = [s for s in ("train", "val", "test", "unlabeled") if s in counts]
    keys = compact_keys(ds.classes)
    named = any(name != c for c, name in zip(ds.classes, ds.display_names))
    table = Table("class", *(["name"] if named else []), *splits, "total")
    rows = list(zip(ds.classes, keys, ds.display_names))
    rows += [("(unlabeled)", "(unlabeled)", "")] if "unlabeled" in counts else []
    for c, key, name in rows:
        row = [counts[s].get(c, 0) for s in splits]
        table.add_row(escape(key), *([escape(name if name != c else "")] if named else []), *map(str, row),
                      str(sum(row)))
    table.add_row("[bold]all", *([""] if named else []), *[str(sum(counts[s].values())) for s in splits],
                  str(len(ds.samples)))
    return table


def compact_keys(keys: list[str]) -> list[str]:
    """Decimal class keys at 3 decimals, or as many more as keep every key distinct:
    0.3333333333333333 -> 0.333 (a binned score's labels); other keys as they are."""
    decimal = re.compile(r"-?\d+\.(\d+)")
    for places in range(3, 18):
        short = [f"{float(k):.{places}f}" if (m := decimal.fullmatch(k)) and len(m.group(1)) > places else k
                 for k in keys]
        if len(set(short)) == len(set(keys)):
            return short
    return list(keys)


def _top(counter, fmt, n: int = 6) -> str:
    items = counter.most_common()
    text = ", ".join(f"{fmt(k)} ({v})" for k, v in items[:n])
    return text + (f", ... {len(items) - n} more" if len(items) > n else "") if items else "-"


def backbones(pattern: o.Pattern = "*", family: o.Family = None, cuts: o.Cuts = None) -> None:
    """Names, feature dims, parameter counts, and whether weights are available offline."""
    from featx.backbones import get_spec, list_backbones

    if cuts:
        _print_cuts(cuts)
        return
    names = list_backbones(pattern, family)
    hidden = 0
    if pattern == "*" and family is None:
        # timm has over a thousand models: list them on request (--family timm, 'timm/convnext*').
        hidden = sum(n.startswith("timm/") for n in names)
        names = [n for n in names if not n.startswith("timm/")]
    if not names:
        raise FeatxError(f"no backbone matches '{pattern}'" + (f" in family {family}" if family else ""))
    specs = [get_spec(name) for name in names]
    table = Table("name", "family", "dim", "+pooled", "params", "input", "offline")
    for spec in specs:
        table.add_row(spec.name, spec.family, str(spec.feature_dim), str(spec.pooled["dim"]) if spec.pooled else "-",
                      f"{spec.num_params / 1e6:.1f}M", str(spec.preprocess.input_size),
                      "[green]yes[/]" if spec.weights_offline else "no")
    out.print(table)
    offline = sum(spec.weights_offline for spec in specs)
    say(f"{plural(len(specs), 'backbone')}, {offline} with weights on this machine (others: "
        "--weights FILE, or the torch hub / Hugging Face cache).")
    from featx.cli.extract_cmds import DEFAULT_BACKBONE

    pooled = next((spec for spec in sorted(specs, key=lambda spec: spec.name != DEFAULT_BACKBONE)
                   if spec.pooled), None)
    if pooled:  # a store's width is dim + pooled: said for extract's default where it is listed
        say(f"dim: the final features; +pooled: the average+max pooled maps extract appends (--pool auto; "
            f"--pool none drops them), e.g. {pooled.name}: {pooled.feature_dim} final + "
            f"{pooled.pooled['dim']} pooled at {pooled.pooled['block']} = "
            f"{pooled.feature_dim + pooled.pooled['dim']} with the default --pool.")
    if hidden:
        say(f"and {hidden} timm models: `featx backbones --family timm` or a pattern like 'timm/convnext*'")


def _print_cuts(name: str) -> None:
    from featx.backbones import create_backbone
    from featx.backbones.cuts import cut_table

    backbone = create_backbone(name, weights="none")  # shapes and FLOPs need no weights
    rows = cut_table(backbone.model, backbone.preprocess.input_size)
    if not rows:
        raise FeatxError(f"{name}: no known cut points for this architecture")
    table = Table("cut", "map (C, H, W)", "MB / image (fp16)", "forward FLOPs below",
                  title=f"{name} at {backbone.preprocess.input_size} px: extract --cut CUT, "
                        "finetune --from-block CUT")
    for row in rows:
        c, h, w = row["shape"]
        table.add_row(row["cut"], f"{c} x {h} x {w}", f"{c * h * w * 2 / 1e6:.3f}", f"{row['bottom_flops']:.0%}")
    out.print(table)


def info(stores: o.Stores, as_json: o.Json = False) -> None:
    """Provenance, shapes, completeness and failed samples of a feature store."""
    from featx.store import FeatureStore

    for path in stores:
        with FeatureStore(path) as st:
            if as_json:
                out.print_json(json.dumps(st.attrs, default=str))
            else:
                _print_store(st, st.attrs)


def _print_store(st, attrs: dict) -> None:
    shapes = st.summary()
    state = "[green]complete[/]" if st.complete else "[yellow]incomplete (re-run extract to resume)[/]"
    out.print(f"[bold]{escape(str(st.path))}[/]  {state}")
    line = _line
    line("backbone", f"{attrs['backbone']}  weights {attrs['weights'].get('source')}")
    line("input", f"{attrs['input_size']} px, {attrs['num_aug_views']} augmented views"
         + (f" ({attrs['transform']['aug']['name']})" if attrs["transform"].get("aug") else ""))
    line("dataset", f"{attrs['dataset_name']} ({attrs['dataset_layout']}) {attrs['dataset_root']}")
    _print_versions(attrs)
    counts = {s: int((st.splits == s).sum()) for s in ("train", "val", "test", "unlabeled")}
    line("samples", ", ".join(f"{k} {v}" for k, v in counts.items() if v)
         + f"; classes {len(st.classes)}: {', '.join(st.class_names[:8])}" + (" ..." if len(st.classes) > 8 else ""))
    line("clean", f"{shapes.clean_shape} {attrs['dtype']}, {shapes.done_clean}/{len(st.labels)} rows done")
    if st.pool or attrs.get("tta"):
        parts = [f"{st.final_dim} final + {st.feature_dim - st.final_dim} pooled at {st.pool} (avg, max)"
                 if st.pool else f"{st.final_dim} final"]
        if attrs.get("tta"):
            parts.append(f"averaged over the image and its {attrs['tta']} views (--tta)")
        line("columns", "; ".join(parts))
    if shapes.aug_shape is not None:
        line("aug", f"{shapes.aug_shape} {attrs['dtype']}, {shapes.done_aug}/{shapes.aug_total} rows done")
    if shapes.cut:
        maps = " + ".join(f"{name} {shapes.cut_shapes[name]}" for name in ("clean", "aug")
                          if name in shapes.cut_shapes)
        line("cut maps", f"entering {shapes.cut}: {maps} float16 (featx finetune --from-block {shapes.cut})")
    line("made", f"{attrs['created']} with featx {attrs['featx_version']}, {attrs['engine']}, "
         f"{attrs['device']}, seed {attrs['seed']}")
    if attrs.get("extract_seconds"):
        line("speed", f"{attrs['images_per_second']:.1f} img/s (last run, {attrs['extract_seconds']:.1f} s)")
    if "shard_rank" in attrs:
        line("shard", f"rank {attrs['shard_rank']} of {attrs['shard_world_size']}, rows "
             f"{attrs['shard_start']}-{attrs['shard_stop']} of {attrs['full_num_samples']} ({attrs['sharding']})")
    if "merged_from" in attrs:
        line("merged", f"{attrs['merge_mode']} of {attrs['world_size']} shards: "
             + ", ".join(json.loads(attrs["merged_from"])))
    line("failed", str(len(st.failed)))
    for row, reason in sorted(st.failed.items()):
        out.print(f"    {st.paths[row]}: {reason}", markup=False, highlight=False)


def _print_versions(attrs: dict) -> None:
    """The store's version, its last update, and where its dataset lived then (issue 19)."""
    from featx.store import change_words, history

    versions = history(attrs)
    first, last = versions[0], versions[-1]
    if len(versions) > 1:
        counts = ", ".join(f"{last.get(k, 0):,} {k}" for k in ("new", "changed", "removed", "kept"))
        also = change_words(last)
        counts += f" ({', '.join(also)})" if also else ""
        _line("version", f"{last['version']}, updated {last['date']} ({counts}); first extracted "
              f"{first.get('date', '?')} with {first.get('samples', '?')} samples")
    if first.get("dataset_root") and first["dataset_root"] != attrs["dataset_root"]:
        _line("moved", f"the dataset is at {attrs['dataset_root']} now, {first['dataset_root']} then")


def _line(label: str, text: str) -> None:
    """`  label      text`: the store's facts in one aligned column."""
    out.print(f"  {label:<10} {text}", markup=False, highlight=False)
