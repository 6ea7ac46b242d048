"""What the features say about the data: duplicates, leakage, label suspects, outliers; search.

    result = audit(store, "runs/audit")                 # featx audit STORE
    hits = search(store, ["query.png"], k=5)            # featx search STORE IMAGES...

    pixels      file sha256 and 64-bit DCT perceptual hashes of the images
    duplicates  exact and near-duplicate pairs (features + pixel hash), leakage into val/test
    labels      label suspects: cross-validated probe + cleanlab's confident learning
    run         audit(): the steps in order, one CSV per finding, audit.json, audit.html
    page        the HTML page with thumbnails (and search galleries)
    search      query images embedded with the store's own backbone, nearest stored samples
"""

from featx.audit.duplicates import DuplicateSettings
from featx.audit.run import CHECKS, AuditConfig, AuditResult, audit

__all__ = ["CHECKS", "AuditConfig", "AuditResult", "DuplicateSettings", "audit"]
