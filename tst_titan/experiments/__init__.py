"""Work that trains runs: runner (the one place that starts `python -m torchtitan.train`), bench, sweep,
gpucheck, the notebooks' run pair (pairs), and the config dry run (dryrun). May import every layer below it (analysis included), never tools."""
