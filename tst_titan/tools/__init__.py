"""One module per command (`python -m tst_titan.tools.<command>`): argparse and main only.
May import anything in tst_titan; nothing imports tools."""
