"""Datasets: turn a folder tree, a CSV manifest, a loose folder or an archive (WebDataset shards,
a `datasets` folder, Parquet) into an ordered sample list.

    ds = open_dataset("path/to/hymenoptera")          # train/ val/ [test/] class folders
    ds = open_dataset("cell_images", DatasetOptions(val_frac=0.2, test_frac=0.1))
    ds = open_dataset("elpv")                          # the packaged ELPV labels.csv
    ds = open_dataset("labels.csv", DatasetOptions(label_col=1, binarize=0.5))

Every layout gives the same thing: `Dataset.samples`, a list of (path, label, split) in a stable
order (sorted by path), the class names, and a fingerprint that changes when a file is added,
removed or changed (size or mtime), so a feature store is never silently reused on other data.
A sample's identity is its content (sha256): a single-folder dataset's splits follow it for life.
Decoding the images themselves is featx.data.images' job (every file an RGB image or a reason).

    dataset.py   Sample, DatasetOptions, Dataset (fingerprint, counts)
    source.py    open_dataset, read_class_map
    folders.py   split / class / loose folder layouts; list_images for prediction
    walk.py      FolderWalk: each real folder read once per dataset, symlinks followed last
    manifest.py  CSV, TSV and whitespace manifests
    identity.py  content hashes, splits as a seeded function of each sample's content
    splits.py    stratified_split, subset
    scan.py      ScanReport, scan_images; classes left with no usable training image
    packaged.py  datasets shipped on PyPI (ELPV)
    archives.py  WebDataset shards, `datasets` on disk, Parquet: unpacked once into files + manifest
                 (webdataset_source.py, hf_source.py read them)
"""

from featx.data.dataset import Dataset, Sample, subset
from featx.data.records import SPLIT_WORDS, SPLITS, DatasetOptions
from featx.data.folders import list_images
from featx.data.identity import hash_files, identity_split, with_content_hashes
from featx.data.manifest import PATH_COLUMNS
from featx.data.packaged import ELPV_NAMES, packaged_datasets
from featx.data.scan import (ScanReport, class_warnings, classes_without_training, require_decodable,
                             scan_images)
from featx.data.source import as_dataset, open_dataset, read_class_map
from featx.data.splits import stratified_split

__all__ = ["as_dataset", "class_warnings", "classes_without_training", "hash_files",
           "identity_split", "with_content_hashes", "ELPV_NAMES", "PATH_COLUMNS",
           "SPLITS", "SPLIT_WORDS", "Dataset", "DatasetOptions", "Sample", "ScanReport", "list_images",
           "open_dataset", "packaged_datasets", "read_class_map", "require_decodable", "scan_images",
           "stratified_split", "subset"]
