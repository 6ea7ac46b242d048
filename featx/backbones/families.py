"""The backbone families, a table that imports nothing (`featx --help` shows its choices).

Built-in families register their entries when their module is imported, on the first look-up;
timm's thousand-odd models only when asked for (a 'timm/' name or family="timm"): importing
timm alone takes seconds."""

FAMILY_MODULES = {"torchvision": "featx.backbones.torchvision_zoo",
                  "packaged": "featx.backbones.efficientnet_lite",
                  "timm": "featx.backbones.timm_zoo"}
FAMILIES = (*FAMILY_MODULES, "custom")  # custom: what register_backbone files (BackboneSpec's default)
