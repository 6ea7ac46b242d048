"""The report's formats, declared once: write_report checks against them and `featx report` /
`featx compare --format` take their choices and help from them. Imports nothing, so `featx
--help` stays quick (the report itself loads matplotlib)."""

# format -> what `write_report` writes for it
FORMATS = {
    "html": "one self-contained file",
    "md": "Markdown + PNGs beside it",
}
