"""The annotation round trip: export sentences for annotators, import their labels, measure agreement.

The exchange format is a CSV a spreadsheet opens directly (UTF-8 with a byte-order mark so Excel shows å, ä,
ö): one row per sentence with its neighbours, optionally the current model's guess and uncertainty (most
uncertain first, so annotators' time goes where the model learns most), and two columns to fill in:
`strategy` (labels separated by ";" – empty means no dimension) and `commitment`. A row whose `commitment` is
empty is not yet annotated and is skipped on import.

`sheet` is the CSV format both ways; `export` writes sheets, `merge` imports filled-in ones into a labelled
file, `agreement` compares two annotators.
"""
